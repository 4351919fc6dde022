import Topology

extension Topology {
    /// A star of `hosts` hosts `h1…hN` on one bridge `br0` in `hub` (10.200.0.0/16; hub .0.1,
    /// hI at 10.200.0.0 + I + 1). The same plan as `Benchmarks/peers.py --star N`, so the
    /// benchmark compares identical work.
    public static func star(hosts: Int) -> Topology {
        let subnet = CIDR(address: .v4([10, 200, 0, 0]), prefixLength: 16)
        var members = [Attachment(host: "hub", interface: "br0", addresses: [CIDR(address: .v4([10, 200, 0, 1]), prefixLength: 16)])]
        var list = [Host(name: "hub")]
        for i in 1...max(1, hosts) {
            let n = i + 1
            list.append(Host(name: "h\(i)"))
            members.append(Attachment(host: "h\(i)", interface: "eth0",
                                      addresses: [CIDR(address: .v4([10, 200, UInt8(n >> 8), UInt8(n & 0xff)]), prefixLength: 16)]))
        }
        return Topology(name: "star-\(hosts)", hosts: list,
                        networks: [Network(name: "star", subnets: [subnet], members: members, bridge: "hub")])
    }
}
