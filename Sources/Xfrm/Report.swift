import Netlink

/// A namespace's IPsec state as text in the shape of `ip -s xfrm state`, `ip xfrm policy` and
/// `ip -d link show type vti|vti6|xfrm`, keys hidden (for `xfrmlab show`).
public enum XfrmReport {
    public static func render(route: NetlinkSocket, xfrm: NetlinkSocket, namespace: String? = nil, indent: String = "  ") throws -> String {
        let devices = try route.tunnelLinks(namespace: namespace)
        let names = Dictionary(try route.links(namespace: namespace).map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
        let states = try xfrm.xfrmStates(namespace: namespace)
        let policies = try xfrm.xfrmPolicies(namespace: namespace)
        var out = ""
        if !devices.isEmpty {
            out += "\(indent)tunnel devices:\n"
            for d in devices {
                var line = d.description
                if let lower = d.lowerIndex, let name = names[lower] { line = line.replacingOccurrences(of: "dev #\(lower)", with: "dev \(name)") }
                out += "\(indent)  \(line)\n"
            }
        }
        if !states.isEmpty {
            out += "\(indent)xfrm states:\n"
            for s in states {
                for line in s.lines { out += "\(indent)  " + line.replacingOccurrences(of: "\t", with: "    ") + "\n" }
            }
        }
        if !policies.isEmpty {
            out += "\(indent)xfrm policies:\n"
            for p in policies.sorted(by: { ($0.direction.rawValue, $0.index) < ($1.direction.rawValue, $1.index) }) {
                for line in p.lines { out += "\(indent)  " + line.replacingOccurrences(of: "\t", with: "    ") + "\n" }
            }
        }
        return out
    }
}
