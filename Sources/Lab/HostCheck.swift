import Foundation
import Glibc
import Namespaces
import Netlink

/// A host snapshot as lines of text: saved to a file before a whole test run (`xfrmlab
/// host-snapshot save`) and compared after it (`xfrmlab host-snapshot compare`), so that any
/// change to the host's own namespace during `make test` fails the run.
///
/// One line per object (link, address, route, rule, xfrm state or policy, sysctl, nft rule),
/// each standing on its own (interfaces by name, nft rules with their table and chain), so
/// that the comparison is a difference of two sets of lines that a person can read.
extension HostSnapshot {
    /// Link flags the kernel changes by itself with the carrier (`IFF_RUNNING`, `IFF_LOWER_UP`,
    /// `IFF_DORMANT`): a cable, not a configuration. Every other flag counts.
    static let carrierFlags: UInt32 = 0x40 | 0x10000 | 0x20000
    /// IPv6 address states the kernel moves through by itself (duplicate address detection,
    /// preferred lifetime running out): `IFA_F_OPTIMISTIC`, `IFA_F_TENTATIVE`, `IFA_F_DEPRECATED`.
    static let transientAddressFlags: UInt32 = 0x04 | 0x40 | 0x20

    public var lines: [String] {
        let n = network
        var out: [String] = []
        for l in n.links.sorted(by: { $0.name < $1.name }) {
            var s = "link \(l.name)"
            if let kind = l.kind { s += " kind \(kind)" }
            s += " flags 0x" + String(l.flags & ~HostSnapshot.carrierFlags, radix: 16)
            if let mtu = l.mtu { s += " mtu \(mtu)" }
            if let m = l.master { s += " master \(n.linkName(m))" }
            if !l.hardwareAddress.isEmpty { s += " address " + l.hardwareAddress.map { String(format: "%02x", $0) }.joined(separator: ":") }
            out.append(s)
        }
        for a in n.addresses {
            var s = "address \(n.linkName(a.index)) \(a)"
            let flags = a.flags & ~HostSnapshot.transientAddressFlags
            if flags != 0 { s += " flags 0x" + String(flags, radix: 16) }
            if let label = a.label { s += " label \(label)" }
            out.append(s)
        }
        for r in n.routes {
            out.append("route " + (r.family == UInt8(AF_INET6) ? "-6 " : "") + r.rendered { n.linkName($0) }
                       + " proto \(r.protocolID) scope \(r.scope)")
        }
        for r in n.rules { out.append("rule family \(r.family) \(r)") }
        for m in n.xfrmStates {
            out.append("xfrm state " + ((try? XfrmState(m).arguments()) ?? "unparsed \(m.payload.count) bytes"))
        }
        for m in n.xfrmPolicies {
            out.append("xfrm policy " + ((try? XfrmPolicy(m).description) ?? "unparsed \(m.payload.count) bytes"))
        }
        for (key, value) in sysctls { out.append("sysctl \(key) = \(value)") }
        out += HostSnapshot.rulesetLines(nftRuleset)
        for t in legacyIptablesTables { out.append("iptables-legacy table \(t)") }
        return out.sorted()
    }

    /// `nft list ruleset` as one line per rule, each prefixed with its table and chain (or set
    /// or map), and without what moves on its own: rule counters and set elements' remaining
    /// timeouts (`counter packets 12 bytes 840`, `expires 1m2s`).
    public static func rulesetLines(_ ruleset: String?) -> [String] {
        guard let ruleset else { return ["nft unavailable"] }
        var out: [String] = []
        var context: [String] = []
        for raw in ruleset.split(separator: "\n") {
            var line = raw.trimmingCharacters(in: .whitespaces)
            line = line.replacingOccurrences(of: #"counter packets \d+ bytes \d+"#, with: "counter", options: .regularExpression)
            line = line.replacingOccurrences(of: #" expires [0-9hmsd]+"#, with: "", options: .regularExpression)
            if line.isEmpty { continue }
            if line == "}" {
                _ = context.popLast()
                continue
            }
            if line.hasSuffix("{") {
                context.append(String(line.dropLast()).trimmingCharacters(in: .whitespaces))
                out.append("nft " + context.joined(separator: " / "))
                continue
            }
            out.append("nft " + (context + [line]).joined(separator: " / "))
        }
        return out
    }

    /// The file `save` writes: a comment, then the lines.
    public func file(created: Date = Date()) -> String {
        var text = "# xfrmlab host snapshot, \(ISO8601DateFormatter().string(from: created)), kernel \(Namespaces.kernelRelease())\n"
        text += "# one line per link, address, route, rule, xfrm state/policy, watched sysctl, nft rule\n"
        for l in lines { text += l + "\n" }
        return text
    }

    /// The lines of a saved file (comments dropped).
    public static func lines(ofFile path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw SystemCallError("read", errno: errno, context: "host snapshot \(path)")
        }
        return text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }
    }

    /// What differs between two snapshots' lines: `- line` gone since `saved`, `+ line` new,
    /// in the order of the lines (so a changed object shows as a - and a + next to each other).
    public static func compare(saved: [String], current: [String]) -> [String] {
        var remaining = Dictionary(current.map { ($0, 1) }, uniquingKeysWith: +)
        var removed: [String] = []
        for line in saved {
            if let n = remaining[line], n > 0 { remaining[line] = n - 1 } else { removed.append(line) }
        }
        var added: [String] = []
        for line in current where (remaining[line] ?? 0) > 0 {
            added.append(line)
            remaining[line]! -= 1
        }
        return (removed.map { ("- " + $0, $0) } + added.map { ("+ " + $0, $0) })
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }.map(\.0)
    }
}
