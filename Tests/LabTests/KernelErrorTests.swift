import CNetlink
import Glibc
import Namespaces
import Netlink
import Testing
import XfrmLabTesting

@Suite("The kernel's own words reach the user", .tags(.privileged), .needsNamespaces)
struct KernelErrorTests {
    @Test("an unknown link kind fails with EOPNOTSUPP and \"Unknown device type\"")
    func unknownDeviceType() throws {
        let ns = try Namespace.create(name: "xlke\(getpid())a")
        defer { ns.delete() }
        let request = Request(type: UInt16(RTM_NEWLINK), flags: .add, header: ifinfomsg(),
                              attributes: [.string(UInt16(IFLA_IFNAME), "x0"),
                                           .nest(UInt16(IFLA_LINKINFO), [.string(UInt16(IFLA_INFO_KIND), "xfrmlab-no-such-kind")])],
                              summary: "ip -n \(ns.name) link add x0 type xfrmlab-no-such-kind")
        let error = try #require(throws: NetlinkError.self) { try ns.route.request(request) }
        #expect(error.errno == EOPNOTSUPP)
        #expect(error.kernelMessage == "Unknown device type")
        #expect(error.description.contains("Error: Unknown device type"))
        #expect(error.description.hasPrefix("ip -n \(ns.name) link add x0"))
    }

    @Test("a second device of the same name fails with EEXIST, and the socket stays usable")
    func duplicateName() throws {
        let ns = try Namespace.create(name: "xlke\(getpid())b")
        defer { ns.delete() }
        try ns.route.request(LinkRequest.bridge(namespace: ns.name, name: "br0"))
        let error = try #require(throws: NetlinkError.self) {
            try ns.route.batch([LinkRequest.bridge(namespace: ns.name, name: "br1"), LinkRequest.bridge(namespace: ns.name, name: "br0")])
        }
        #expect(error.errno == EEXIST)
        #expect(error.request.contains("link add br0"))
        // The batch's first request went through; the refusal did not desynchronise the socket.
        let names = try ns.route.links().map(\.name)
        #expect(names.contains("br1"))
        #expect(try ns.route.link(named: "nope") == nil)
    }
}
