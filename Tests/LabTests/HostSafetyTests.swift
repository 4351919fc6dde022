import Foundation
import Glibc
import Lab
import Netlink
import Namespaces
import Testing
import XfrmLabTesting
import Topology

/// The host's own namespace is only ever read. These tests run serialized so that no other
/// test's work shows up between the two snapshots (the harness itself never touches the host,
/// but a parallel test's nft or namespace churn must not be mistaken for a change).
@Suite("The host namespace is never changed", .tags(.privileged), .needsNamespaces, .serialized)
struct HostSafetyTests {
    @Test("a full up/down of each default topology leaves the host's links, addresses, routes, rules, xfrm, sysctls and nft ruleset as they were",
          arguments: ["north-east-west", "client1-client2-server"])
    func hostUntouched(topology name: String) async throws {
        let before = try HostSnapshot.capture()
        let topology = try Topology.load(path: topologyFile(name))
        try await topology.withLab { lab in
            #expect(try lab.verify() == [])
            let during = try HostSnapshot.capture()
            #expect(before.differences(to: during) == [], "the host changed while the lab was up")
        }
        let after = try HostSnapshot.capture()
        #expect(before.differences(to: after) == [])
    }

    @Test("a sysctl outside net. is refused before any namespace exists")
    func hostSysctlRefused() throws {
        let ns = try Namespace.create(name: "xlhs\(getpid())")
        defer { ns.delete() }
        #expect(throws: SystemCallError.self) { try ns.setSysctls([("kernel.panic", "1")]) }
        #expect(throws: SystemCallError.self) { try Namespace.create(names: ["xlhs\(getpid())b"], sysctls: [("vm.swappiness", "1")]) }
        #expect(namespacesLeft(prefix: "xlhs\(getpid())b").isEmpty)
    }
}

@Suite("The host namespace refuses changes", .tags(.privileged), .needsNamespaces)
struct HostRefusalTests {
    @Test("a netlink socket of the host's namespace reads but refuses every change before sending it")
    func hostSocketsOnlyRead() throws {
        let route = try NetlinkSocket(protocol: NetlinkSocket.route)
        defer { route.close() }
        #expect(route.inHostNamespace)
        #expect(try !route.links().isEmpty)
        let refused = try #require(throws: HostNamespaceRefused.self) {
            try route.request(LinkRequest.bridge(namespace: nil, name: "xlnever0"))
        }
        #expect(refused.description.contains("link add xlnever0"))
        #expect(try route.link(named: "xlnever0") == nil)
        #expect(throws: HostNamespaceRefused.self) {
            try route.batch([RuleRequest.add(namespace: nil, family: 2, priority: 7, table: 77, summary: "rule add lookup 77")])
        }
        // A socket opened inside a lab namespace is not restricted.
        let ns = try Namespace.create(name: "xlhr\(getpid())")
        defer { ns.delete() }
        #expect(!ns.route.inHostNamespace)
        try ns.route.request(LinkRequest.bridge(namespace: ns.name, name: "br0"))
    }
}
