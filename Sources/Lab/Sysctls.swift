import Topology

// Kept apart from Foundation, whose `Host` would shadow the topology's.
extension Builder {
    /// A host's sysctls: forwarding and the file's own, split into those that can be written
    /// before any device exists and those naming a device (`net.ipv4.conf.eth1.rp_filter`).
    static func sysctls(of host: Host) -> (early: [(key: String, value: String)], late: [(key: String, value: String)]) {
        var early: [(key: String, value: String)] = []
        var late: [(key: String, value: String)] = []
        if host.forwarding {
            early += [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")]
        }
        for s in host.sysctls {
            let parts = s.key.split(separator: ".")
            let perDevice = parts.count >= 5 && ["conf", "neigh"].contains(parts[2]) && !["all", "default"].contains(parts[3])
            if perDevice { late.append((s.key, s.value)) } else { early.append((s.key, s.value)) }
        }
        return (early, late)
    }
}
