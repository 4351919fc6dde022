import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Testing
import XfrmLabTesting
import Xfrm

/// Changing an existing device's kind-specific settings (changelink) is a typed request like
/// creating one: what was asked reads back, and a refusal comes with the kernel's errno and the
/// request in `ip link set` words.
@Suite("Changing a device's kind-specific settings in place (changelink)", .tags(.privileged), .needsNamespaces)
struct LinkChangeTests {
    static func u32(_ bytes: [UInt8]?) -> UInt32? { bytes.flatMap { Bytes.load(UInt32.self, from: $0) } }

    @Test("a bridge's options change in place and read back, both ways; a device that is gone is ENODEV, in the request's words")
    func bridge() throws {
        let ns = try Namespace.create(name: "xllc\(getpid())b")
        defer { ns.delete() }
        try ns.route.request(LinkRequest.bridge(namespace: ns.name, name: "br0"))
        let br = try #require(try ns.route.link(named: "br0", namespace: ns.name))
        // (vlan_filtering would need CONFIG_BRIDGE_VLAN_FILTERING: EOPNOTSUPP without it.)
        let on = LinkRequest.change(namespace: ns.name, index: br.index, name: "br0", .bridge(.init(forwardDelay: 1500, ageingTime: 3000)))
        #expect(on.summary == "ip -n \(ns.name) link set dev br0 type bridge forward_delay 1500 ageing_time 3000")
        try ns.route.request(on)
        let read = try #require(try ns.route.kindAttributes(of: "br0", namespace: ns.name))
        #expect(read.kind == "bridge")
        #expect(Self.u32(read.data[UInt16(IFLA_BR_AGEING_TIME)]) == 3000)
        #expect(Self.u32(read.data[UInt16(IFLA_BR_FORWARD_DELAY)]) == 1500)
        try ns.route.request(LinkRequest.change(namespace: ns.name, index: br.index, name: "br0", .bridge(.init(forwardDelay: 0))))
        let back = try #require(try ns.route.kindAttributes(of: "br0", namespace: ns.name))
        #expect(Self.u32(back.data[UInt16(IFLA_BR_FORWARD_DELAY)]) == 0)
        #expect(Self.u32(back.data[UInt16(IFLA_BR_AGEING_TIME)]) == 3000, "what was not asked stays")

        let gone = try #require(throws: NetlinkError.self) {
            try ns.route.request(LinkRequest.change(namespace: ns.name, index: 9999, name: "nope", .bridge(.init(stpState: 0))))
        }
        #expect(gone.errno == ENODEV)
        #expect(gone.request == "ip -n \(ns.name) link set dev nope type bridge stp_state 0")
    }

    @Test("VTI and VTI6 endpoints and keys change in place and read back; a change onto another device's endpoints is EEXIST",
          .requires(.vti), .requires(.vti6))
    func vti() throws {
        let ns = try Namespace.create(name: "xllc\(getpid())v")
        defer { ns.delete() }
        let a: [UInt8] = [192, 0, 2, 1], b: [UInt8] = [192, 0, 2, 2], c: [UInt8] = [192, 0, 2, 3]
        let a6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [1]
        let b6: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [2]
        try ns.route.batch([
            LinkRequest.vti(namespace: ns.name, name: "vti1", local: a, remote: b, inputKey: 1, outputKey: 1),
            LinkRequest.vti(namespace: ns.name, name: "vti2", local: a, remote: c, inputKey: 2, outputKey: 2),
            LinkRequest.vti(namespace: ns.name, name: "vti61", local: a6, remote: b6, inputKey: 3, outputKey: 3),
        ])
        func tunnel(_ name: String) throws -> TunnelLinkInfo {
            try #require(try ns.route.tunnelLinks(namespace: ns.name).first { $0.link.name == name })
        }
        let vti1 = try tunnel("vti1"), vti61 = try tunnel("vti61")
        // VTI takes what a change leaves out as zero (as `ip link set … type vti` does): all given.
        let change = LinkRequest.change(namespace: ns.name, index: vti1.link.index, name: "vti1",
                                        .vti(.init(local: a, remote: b, inputKey: 0x10, outputKey: 0x11)))
        #expect(change.summary == "ip -n \(ns.name) link set dev vti1 type vti local 192.0.2.1 remote 192.0.2.2 ikey 16 okey 17")
        try ns.route.request(change)
        let changed = try tunnel("vti1")
        #expect(changed.inputKey == 0x10 && changed.outputKey == 0x11 && changed.remote == b, "\(changed)")
        try ns.route.request(LinkRequest.change(namespace: ns.name, index: vti61.link.index, name: "vti61",
                                                .vti6(.init(local: a6, remote: b6, inputKey: 0x20, outputKey: 0x21))))
        let changed6 = try tunnel("vti61")
        #expect(changed6.kind == "vti6" && changed6.inputKey == 0x20 && changed6.outputKey == 0x21 && changed6.local == a6, "\(changed6)")

        // vti1 onto vti2's endpoints and keys: the kernel refuses a second device for them.
        let clash = try #require(throws: NetlinkError.self) {
            try ns.route.request(LinkRequest.change(namespace: ns.name, index: vti1.link.index, name: "vti1",
                                                    .vti(.init(local: a, remote: c, inputKey: 2, outputKey: 2))))
        }
        #expect(clash.errno == EEXIST, "\(clash)")
        #expect(clash.request.hasPrefix("ip -n \(ns.name) link set dev vti1 type vti local 192.0.2.1 remote 192.0.2.3"))
        #expect(try tunnel("vti1").remote == b, "a refused change leaves the device as it was")
    }
}
