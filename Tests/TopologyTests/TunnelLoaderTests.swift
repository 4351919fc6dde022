import Foundation
import Testing
import Topology

@Suite("Tunnels in topology files")
struct TunnelLoaderTests {
    @Test("the west-east files each hold one tunnel of their style between the private subnets",
          arguments: [Tunnel.Style.policy, .vti, .xfrmi])
    func examples(_ style: Tunnel.Style) throws {
        let path = Fixtures.example("west-east-\(style.rawValue).yaml")
        let t = try Topology.load(path: path)
        #expect(t.hosts.map(\.name) == ["west", "east", "nic"])
        try #require(t.tunnels.count == 1)
        let tunnel = t.tunnels[0]
        #expect(tunnel.name == "west-east")
        #expect(tunnel.style == style)
        #expect(tunnel.left.host == "west" && tunnel.right.host == "east")
        #expect(tunnel.left.address == IPAddress("192.1.2.45") && tunnel.right.address == IPAddress("192.1.2.23"))
        #expect(tunnel.left.subnets == [CIDR("192.0.1.0/24")!, CIDR("2001:db8:0:1::/64")!])
        #expect(tunnel.right.subnets == [CIDR("192.0.2.0/24")!, CIDR("2001:db8:0:2::/64")!])
        #expect(tunnel.families == [.ipv4, .ipv6])
        #expect(tunnel.algorithm == .aead && tunnel.encapsulation == nil && tunnel.reqid == 1)
        #expect(tunnel.location?.file == path && tunnel.location?.line ?? 0 > 30)
        switch style {
        case .policy:
            #expect(tunnel.mark == Mark(0x1, mask: 0xff))
            #expect(tunnel.interfaceID == nil && tunnel.deviceName(of: tunnel.left) == nil)
        case .vti:
            #expect(tunnel.mark == Mark(0x10))
            #expect(tunnel.deviceName(of: tunnel.left) == "vti-west-east")
        case .xfrmi:
            #expect(tunnel.interfaceID == 7 && tunnel.mark == nil)
            #expect(tunnel.deviceName(of: tunnel.right) == "xfrm-west-east")
        }
    }

    /// Two hosts on one wire, ending with `tunnels:` for a test to fill in.
    static let twoHosts = """
        name: d
        hosts: { a: {}, b: {} }
        networks:
          - name: wire
            subnets: [10.0.0.0/24]
            members:
              - { host: a, interface: eth0, addresses: [10.0.0.1] }
              - { host: b, interface: eth0, addresses: [10.0.0.2] }
        tunnels:

        """

    @Test("defaults: a vti key and an xfrmi if_id from the tunnel's position, algorithm aead, a single subnet string")
    func defaults() throws {
        let yaml = Self.twoHosts + """
              - { name: one, style: vti, left: { host: a, address: 10.0.0.1, subnets: 10.1.0.0/16 }, right: { host: b, address: 10.0.0.2, subnets: 10.2.0.0/16 } }
              - { name: two, style: xfrmi, algorithm: cbc-hmac, encap: udp, left: { host: a, address: 10.0.0.1, subnets: 10.3.0.0/16, device: ipsec9 }, right: { host: b, address: 10.0.0.2, subnets: 10.4.0.0/16 } }
            """
        let t = try Topology.parse(yaml: yaml, file: "d.yaml")
        #expect(t.tunnels.map(\.reqid) == [1, 2])
        #expect(t.tunnels[0].mark == Mark(1))
        #expect(t.tunnels[1].interfaceID == 2)
        #expect(t.tunnels[1].algorithm == .cbcHMAC && t.tunnels[1].encapsulation == .udp)
        #expect(t.tunnels[1].deviceName(of: t.tunnels[1].left) == "ipsec9")
        #expect(t.tunnels[1].deviceName(of: t.tunnels[1].right) == "xfrm-two")
        #expect(t.tunnels[0].families == [.ipv4])
    }

    @Test("ike: a daemon per end makes an IKE tunnel: left initiates, PSK unless auth says certificates, device ipsec<if_id>")
    func ike() throws {
        let t = try Topology.load(path: Fixtures.example("west-east-ike.yaml"))
        let tunnel = try #require(t.tunnels.first)
        #expect(tunnel.usesIKE)
        #expect(tunnel.left.ike == .strongswan && tunnel.right.ike == .libreswan)
        #expect(tunnel.authentication == .certificates && tunnel.interfaceID == 7)
        let yaml = Self.twoHosts + """
              - { name: one, style: vti, mark: 5, left: { host: a, address: 10.0.0.1, subnets: 10.1.0.0/16, ike: libreswan }, right: { host: b, address: 10.0.0.2, subnets: 10.2.0.0/16, ike: libreswan } }
            """
        let d = try Topology.parse(yaml: yaml, file: "d.yaml")
        #expect(d.tunnels[0].usesIKE && d.tunnels[0].authentication == .psk && d.tunnels[0].mark == Mark(5))
        #expect(d.tunnels[0].deviceName(of: d.tunnels[0].left) == "vti1")
    }

    /// `ike-from:` keeps the end's daemon's path (a directory that exists), for the Daemons
    /// module to start that end from it; the other end, without one, comes from this machine.
    @Test("ike-from keeps the path the end's daemon comes from; an end without one is this machine's")
    func ikeFromIsKeptPerEnd() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ike-from-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let yaml = """
            name: ike
            hosts: { west: {}, east: {} }
            networks:
              - name: public
                subnets: [192.1.2.0/24]
                members:
                  - { host: west, interface: eth1, addresses: [192.1.2.45] }
                  - { host: east, interface: eth1, addresses: [192.1.2.23] }
            tunnels:
              - name: t
                style: policy
                left:  { host: west, address: 192.1.2.45, subnets: [192.0.1.0/24], ike: strongswan, ike-from: \(dir) }
                right: { host: east, address: 192.1.2.23, subnets: [192.0.2.0/24], ike: libreswan }

            """
        let t = try Topology.parse(yaml: yaml, file: "ike.yaml")
        #expect(t.tunnels.first?.left.ikeFrom == dir)
        #expect(t.tunnels.first?.right.ikeFrom == nil)
        #expect(t.tunnels.first?.usesIKE == true)
    }
}
