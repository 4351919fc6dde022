import Foundation
import Netlink
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// What each tunnel style asks of the kernel, read from the plan without a kernel.
@Suite("Tunnel plans: the SAs, policies, devices and routes of each style")
struct XfrmPlanTests {
    static func tunnel(_ style: Tunnel.Style) throws -> Tunnel {
        try #require(try Topology.load(path: topologyFile("west-east-\(style.rawValue)")).tunnels.first)
    }

    @Test("every style: two SAs per end whose SPIs and keys pair up across the ends, fresh for every run",
          arguments: Tunnel.Style.allCases)
    func statesPairUp(_ style: Tunnel.Style) throws {
        let t = try Self.tunnel(style)
        let secrets = TunnelSecrets.generate(for: t)
        let west = TunnelPlan.states(t, on: "west", secrets: secrets), east = TunnelPlan.states(t, on: "east", secrets: secrets)
        try #require(west.count == 2 && east.count == 2)
        // west's outbound SA is east's inbound one: same SPI, addresses and key.
        #expect(west[0].spi == east[1].spi && west[0].algorithms == east[1].algorithms)
        #expect(west[1].spi == east[0].spi && west[1].algorithms == east[0].algorithms)
        #expect(west[0].spi != west[1].spi)
        #expect(formatAddress(west[0].source) == "192.1.2.45" && formatAddress(west[0].destination) == "192.1.2.23")
        #expect(west.allSatisfy { $0.mode == .tunnel && $0.reqid == 1 && $0.selector == .any && $0.flags & XfrmState.afUnspec != 0 },
                "one SA pair carries both inner families")
        #expect(west[0].algorithms.map(\.name) == ["rfc4106(gcm(aes))"])
        #expect(west[0].algorithms.first?.key?.bits == 160)
        let again = TunnelSecrets.generate(for: t)
        #expect(again.leftToRight.spi != secrets.leftToRight.spi || again.rightToLeft.spi != secrets.rightToLeft.spi)
        #expect(again.leftToRight.algorithms != secrets.leftToRight.algorithms, "keys are generated per run")
    }

    @Test("policy style: only outbound policies and SAs carry the mark; in and fwd accept the tunnel's ESP unmarked")
    func policyMarks() throws {
        let t = try Self.tunnel(.policy)
        let states = TunnelPlan.states(t, on: "west", secrets: .generate(for: t))
        #expect(states[0].mark == XfrmMark(0x1, mask: 0xff) && states[1].mark == nil)
        let policies = TunnelPlan.policies(t, on: "west")
        #expect(policies.count == 6, "in, out and fwd for IPv4 and IPv6")
        #expect(policies.filter { $0.direction == .out }.allSatisfy { $0.mark == XfrmMark(0x1, mask: 0xff) })
        #expect(policies.filter { $0.direction != .out }.allSatisfy { $0.mark == nil })
        #expect(policies.map { "\($0.selector) dir \($0.direction)" }.prefix(3) == [
            "src 192.0.1.0/24 dst 192.0.2.0/24 dir out", "src 192.0.2.0/24 dst 192.0.1.0/24 dir in",
            "src 192.0.2.0/24 dst 192.0.1.0/24 dir fwd",
        ])
        #expect(TunnelPlan.device(t, on: "west", namespace: "w", lower: nil) == nil)
        #expect(TunnelPlan.routes(t, on: "west", namespace: "w", deviceIndex: 9).isEmpty)
    }

    @Test("vti style: the key is the mark of every policy and SA, and the other side's subnets route into the device")
    func vtiPlan() throws {
        let t = try Self.tunnel(.vti)
        #expect(TunnelPlan.states(t, on: "east", secrets: .generate(for: t)).allSatisfy { $0.mark == XfrmMark(0x10) && $0.interfaceID == nil })
        #expect(TunnelPlan.policies(t, on: "east").allSatisfy { $0.mark == XfrmMark(0x10) })
        let device = try #require(TunnelPlan.device(t, on: "east", namespace: "e", lower: nil))
        #expect(device.summary == "ip -n e link add vti-west-east type vti local 192.1.2.23 remote 192.1.2.45 ikey 16 okey 16 && ip link set vti-west-east up")
        #expect(TunnelPlan.routes(t, on: "east", namespace: "e", deviceIndex: 9).map(\.summary) == [
            "ip -n e route add 192.0.1.0/24 dev vti-west-east", "ip -n e -6 route add 2001:db8:0:1::/64 dev vti-west-east",
        ])
    }

    @Test("xfrmi style: the if_id is on the device, every policy and SA; no marks")
    func xfrmiPlan() throws {
        let t = try Self.tunnel(.xfrmi)
        #expect(TunnelPlan.states(t, on: "west", secrets: .generate(for: t)).allSatisfy { $0.interfaceID == 7 && $0.mark == nil })
        #expect(TunnelPlan.policies(t, on: "west").allSatisfy { $0.interfaceID == 7 && $0.mark == nil })
        let device = try #require(TunnelPlan.device(t, on: "west", namespace: "w", lower: (3, "eth1")))
        #expect(device.summary == "ip -n w link add xfrm-west-east type xfrm dev eth1 if_id 0x7 && ip link set xfrm-west-east up")
    }

    @Test("cbc-hmac and UDP encapsulation reach the SAs")
    func cbcInUDP() throws {
        var t = try Self.tunnel(.policy)
        t.algorithm = .cbcHMAC
        t.encapsulation = .udp
        let s = TunnelPlan.states(t, on: "west", secrets: .generate(for: t))[0]
        #expect(s.algorithms.map(\.name) == ["cbc(aes)", "hmac(sha256)"])
        #expect(s.algorithms.compactMap(\.key?.bits) == [128, 256])
        #expect(s.encapsulation == XfrmEncapsulation(sourcePort: 4500, destinationPort: 4500))
        #expect(!"\(s)".contains(s.algorithms[0].key!.revealedHex.dropFirst(2)))
    }
}
