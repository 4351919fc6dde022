import Namespaces
import Topology

/// NAT and mark rules go through nftables' own tool inside the namespace: the ruleset
/// language is the interface users know, and `nft -f` loads it atomically.
enum Firewall {
    static let table = "xfrmlab"

    /// The nftables text for a host: its masquerade entries and its own `nftables:` text.
    static func ruleset(for host: Host) -> String {
        var text = ""
        if !host.masquerade.isEmpty {
            text += "table inet \(table)_nat {\n  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
            for m in host.masquerade {
                var rule = "    oifname \"\(m.out)\""
                if let from = m.from { rule += " \(from.family == .ipv4 ? "ip" : "ip6") saddr \(from.network)" }
                text += rule + " masquerade\n"
            }
            text += "  }\n}\n"
        }
        if let extra = host.nftables { text += extra + "\n" }
        return text
    }

    /// Equivalent to `ip netns exec NS nft -f -` with `ruleset` on stdin.
    static func load(_ ruleset: String, into ns: Namespace, origin: String?) throws {
        let r = try ns.execute(["nft", "-f", "-"], input: ruleset)
        guard r.succeeded else {
            throw LabError("\(origin.map { "\($0): " } ?? "")nft -f - in \(ns.name) failed (exit \(r.status)): \(r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))\n--- ruleset ---\n\(ruleset)")
        }
    }
}
