import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// Scenario 5: two clients with the same address (10.0.1.10 in 10.0.1.0/24), each behind NAT,
/// reached by the server as two hosts — the responder's answer is its namespace's name. ESP in
/// UDP with SAs built on each NAT's mapping. Needs a kernel with ESP (a VM). A lab per test:
/// they run side by side.
@Suite("Scenario overlapping-subnets: the server reaches two 10.0.1.10 behind two NATs as two hosts",
       .tags(.privileged, .vm), .needsNamespaces, .requires(.esp), .requires(.udpEncapsulation))
struct OverlappingSubnetsTests {
    static func topology() throws -> Topology { try Topology.load(path: topologyFile("overlapping-clients")) }

    /// The server's SA with `spi`, read back.
    static func serverState(_ lab: Lab, spi: UInt32) throws -> XfrmState? {
        let xfrm = try lab.namespace("server").xfrmSocket()
        defer { xfrm.close() }
        return try xfrm.xfrmStates().first { $0.spi == spi }
    }

    /// Reaches each peer by `selector(peer)`: the right host answers, the trace is the expected
    /// one, only that peer's outbound SA moves; an unselected socket reaches neither.
    static func reachBoth(_ lab: Lab, _ installed: OverlappingSubnets.Installed, basePort: UInt16,
                          _ selector: (OverlappingSubnets.Peer) -> OverlappingSubnets.Selector) throws {
        #expect(installed.peers.count == 2)
        // Each NAT has its own public address; the server's SAs point there.
        #expect(Set(installed.peers.map { formatAddress($0.seenAs.address) }) == ["198.51.100.11", "198.51.100.12"], "\(installed.peers)")
        var port = basePort
        for peer in installed.peers {
            port += 1
            let other = try #require(installed.peers.first { $0.host != peer.host })
            let before = try serverState(lab, spi: other.serverOutboundSPI)?.counters.packets ?? 0
            let chosen = selector(peer)
            let o = try OverlappingSubnets.reach(lab, peer, port: port, by: chosen)
            let name = try lab.namespace(peer.host).name
            #expect(o.trip.answered && o.trip.reply == name, "\(o.how): \(o.trip)")
            let mark: UInt32? = if case .mark(let m) = chosen { m } else { nil }
            let verdict = OverlappingSubnets.expectation(installed, to: peer.host, port: port, mark: mark).evaluate(o.trace)
            #expect(verdict.passed, "\(verdict.report)")
            #expect((try serverState(lab, spi: peer.serverOutboundSPI)?.counters.packets ?? 0) >= 1, "\(peer)")
            #expect(try serverState(lab, spi: other.serverOutboundSPI)?.counters.packets ?? 0 == before, "the other peer's SA moved: \(other)")
        }
        port += 1
        let plain = try OverlappingSubnets.reach(lab, installed.peers[0], port: port, by: .nothing)
        #expect(!plain.trip.delivered, "\(plain.trip)")
        #expect(!plain.trace.hops.contains { $0.host.hasPrefix("client") && $0.packet.destinationPort == port }, "\(plain.trace)")
    }

    @Test("by socket mark: per-peer marked policies and SAs (0x1 → client1, 0x2 → client2)", .requires(.policyMark))
    func byMark() async throws {
        try await Self.topology().withLab { lab in
            let installed = try OverlappingSubnets.install(lab, selection: .marks)
            defer { installed.close() }
            try Self.reachBoth(lab, installed, basePort: 7510) { .mark($0.mark) }
            // Bits outside the policies' mask (0xff) do not matter.
            let o = try OverlappingSubnets.reach(lab, installed.peers[1], port: 7519, by: .mark(0x4202))
            #expect(o.trip.reply == (try lab.namespace("client2").name), "\(o.trip)")
        }
    }

    @Test("by xfrm interface: one per peer (if_id 1, 2), chosen by the mark's table or by binding the socket to it",
          .requires(.xfrmInterface), .requires(.policyInterfaceID))
    func byInterface() async throws {
        try await Self.topology().withLab { lab in
            let installed = try OverlappingSubnets.install(lab, selection: .xfrmInterfaces)
            defer { installed.close() }
            try Self.reachBoth(lab, installed, basePort: 7610) { .mark($0.mark) }
            try Self.reachBoth(lab, installed, basePort: 7620) { _ in .device }
            // Route queries agree: mark 0x2 → table 102 → xfrm-client2.
            let server = try lab.namespace("server")
            let route = try server.route.routeGet(namespace: server.name, destination: OverlappingSubnets.client, mark: 0x2)
            let device = try #require(try server.route.link(named: "xfrm-client2", namespace: server.name))
            #expect(route.table == 102 && route.outputInterface == device.index, "\(route)")
        }
    }

    @Test("broken: without the rule `fwmark 0x2/0xff lookup 102`, mark 0x2 finds no way to client2, and the trace shows where it went",
          .requires(.xfrmInterface), .requires(.policyInterfaceID))
    func missingRule() async throws {
        var t = try Self.topology()
        let server = try #require(t.hosts.firstIndex { $0.name == "server" })
        t.hosts[server].rules.removeAll { $0.priority == 102 }
        try await t.withLab { lab in
            let installed = try OverlappingSubnets.install(lab, selection: .xfrmInterfaces)
            defer { installed.close() }
            let peer = try #require(installed.peer("client2"))
            let o = try OverlappingSubnets.reach(lab, peer, port: 7630, by: .mark(0x2))
            #expect(!o.trip.answered, "\(o.trip)")
            let verdict = OverlappingSubnets.expectation(installed, to: "client2", port: 7630, mark: 0x2).evaluate(o.trace)
            #expect(!verdict.passed)
            #expect(verdict.report.contains("missing: server postrouting: udp to 10.0.1.10 port 7630 out xfrm-client2"), "\(verdict.report)")
            // The actual trace: it left in clear through eth0 by the default route.
            #expect(verdict.report.contains("actual trace:"))
            #expect(verdict.report.contains("server postrouting: udp 10.99.0.1:") && verdict.report.contains("→ 10.0.1.10:7630 mark 0x2 out eth0"),
                    "\(verdict.report)")
        }
    }

    @Test("xfrmlab run overlapping-subnets: every check passes", .requires(.xfrmInterface), .requires(.policyInterfaceID), .requires(.policyMark))
    func scenario() throws {
        let report = try OverlappingSubnets.definition.run(topologyPath: topologyFile("overlapping-clients"))
        print(report)
        #expect(report.passed, "\(report)")
    }
}

/// The part of scenario 5 that needs no ESP (runs on this host's kernel too): what the server's
/// SAs are built on. Each client's NAT keepalive from its encapsulation socket on 10.0.1.10:4500
/// leaves through its own NAT, which maps it to its own public address.
@Suite("Scenario overlapping-subnets, without ESP: the NAT mappings", .tags(.privileged), .needsNamespaces)
struct OverlappingSubnetsMappingTests {
    @Test("client1's and client2's keepalives from the same 10.0.1.10:4500 are seen as two public addresses")
    func mappings() async throws {
        try await OverlappingSubnetsTests.topology().withLab { lab in
            var seen: [String: String] = [:]
            for (host, nat) in [("client1", "nat1"), ("client2", "nat2")] {
                let fd = try TunnelInstaller.openEncapsulationSocket(in: lab.namespace(host), address: OverlappingSubnets.client, port: 4500)
                defer { close(fd) }
                let m = try OverlappingSubnets.natMapping(lab, nat: nat, socket: fd)
                seen[host] = "\(formatAddress(m.address)):\(m.port)"
            }
            #expect(seen["client1"]?.hasPrefix("198.51.100.11:") == true && seen["client2"]?.hasPrefix("198.51.100.12:") == true, "\(seen)")
        }
    }
}
