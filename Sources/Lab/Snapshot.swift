import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink

/// A namespace's network state read back from the kernel: what `ip link/address/route/rule show`
/// would print, in a form tests can compare.
public struct NamespaceSnapshot: Sendable, Equatable {
    public var links: [LinkInfo]
    public var addresses: [AddressInfo]
    public var routes: [RouteInfo]
    public var rules: [RuleInfo]
    /// Raw XFRM states and policies (dumps of `XFRM_MSG_GETSA` / `XFRM_MSG_GETPOLICY`).
    public var xfrmStates: [Message]
    public var xfrmPolicies: [Message]

    /// Reads everything over the given rtnetlink socket (and an XFRM socket when given).
    public static func capture(route: NetlinkSocket, xfrm: NetlinkSocket? = nil, namespace: String? = nil) throws -> NamespaceSnapshot {
        var s = NamespaceSnapshot(links: try route.links(namespace: namespace),
                                  addresses: try route.addresses(namespace: namespace),
                                  routes: try route.routes(namespace: namespace),
                                  rules: try route.rules(namespace: namespace), xfrmStates: [], xfrmPolicies: [])
        if let xfrm {
            // No fixed header, as iproute2 sends them: the kernel parses a dump request's
            // attributes right after the netlink header (zeros there: "bytes leftover" in dmesg).
            s.xfrmStates = try xfrm.dump(XfrmStateRequest.dump(namespace: namespace))
            s.xfrmPolicies = try xfrm.dump(XfrmPolicyRequest.dump(namespace: namespace))
        }
        return s
    }

    /// Without the packet counters, which move on their own.
    public var withoutCounters: NamespaceSnapshot {
        var s = self
        s.links = s.links.map { var l = $0; l.statistics = nil; return l }
        return s
    }

    func linkName(_ index: Int32?) -> String {
        guard let index else { return "?" }
        return links.first { $0.index == index }?.name ?? "if\(index)"
    }

    /// Text in the shape of iproute2's output.
    public func render(indent: String = "  ") -> String {
        var out = ""
        out += "\(indent)links:\n"
        for l in links.sorted(by: { $0.index < $1.index }) {
            var line = "\(indent)  \(l.index): \(l.name)"
            if let kind = l.kind { line += " (\(kind))" }
            line += l.isUp ? " UP" : " DOWN"
            if let m = l.master { line += " master \(linkName(m))" }
            if let mtu = l.mtu { line += " mtu \(mtu)" }
            if let s = l.statistics { line += " rx \(s.rxPackets) tx \(s.txPackets)" }
            out += line + "\n"
        }
        let shown = addresses.filter { !($0.address.count == 16 && $0.address[0] == 0xfe && $0.address[1] & 0xc0 == 0x80) }
        if !shown.isEmpty {
            out += "\(indent)addresses:\n"
            for a in shown.sorted(by: { ($0.index, $0.family) < ($1.index, $1.family) }) {
                out += "\(indent)  \(linkName(a.index)) \(a)\n"
            }
        }
        let userRoutes = routes.filter { $0.table != 255 && !($0.family == UInt8(AF_INET6) && $0.destination.first == 0xfe) }
        if !userRoutes.isEmpty {
            out += "\(indent)routes:\n"
            for r in userRoutes {
                let d = r.rendered { linkName($0) }
                out += "\(indent)  \(r.family == UInt8(AF_INET6) ? "-6 " : "")\(d)\n"
            }
        }
        out += "\(indent)rules:\n"
        // Multicast routing rules (RTNL_FAMILY_IPMR/IP6MR) are not what `ip rule` shows.
        for r in rules.filter({ $0.family == UInt8(AF_INET) || $0.family == UInt8(AF_INET6) })
            .sorted(by: { ($0.family, $0.priority) < ($1.family, $1.priority) }) {
            out += "\(indent)  \(r.family == UInt8(AF_INET6) ? "-6 " : "")\(r)\n"
        }
        if !xfrmStates.isEmpty || !xfrmPolicies.isEmpty {
            out += "\(indent)xfrm: \(xfrmStates.count) state(s), \(xfrmPolicies.count) polic(ies)\n"
        }
        return out
    }
}

/// Everything in the host's own namespace the harness must never change.
public struct HostSnapshot: Sendable, Equatable {
    public var network: NamespaceSnapshot
    public var sysctls: [String: String]
    public var nftRuleset: String?
    /// Names of legacy (x_tables) iptables tables in use, from /proc/net/ip{,6}_tables_names.
    public var legacyIptablesTables: [String] = []

    /// Sysctls a topology could plausibly touch if it escaped its namespaces.
    public static let watchedSysctls = [
        "net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter",
        "net.ipv4.conf.default.rp_filter", "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.accept_dad",
    ]

    /// Reads the calling process's namespace, or `namespace` standing in for it (tests).
    /// Read-only: dumps, /proc/sys reads, `nft list ruleset`, /proc/net/ip*_tables_names.
    public static func capture(in namespace: Namespace? = nil) throws -> HostSnapshot {
        let route = try namespace?.netlinkSocket(protocol: NetlinkSocket.route) ?? NetlinkSocket(protocol: NetlinkSocket.route)
        defer { route.close() }
        let xfrm = try namespace?.netlinkSocket(protocol: NetlinkSocket.xfrm) ?? NetlinkSocket(protocol: NetlinkSocket.xfrm)
        defer { xfrm.close() }
        // /proc/sys/net and /proc/net show the namespace of the thread that opens them.
        func read(_ path: String) -> String? {
            let body = { (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) }
            if let namespace { return (try? namespace.run(body)) ?? nil }
            return body()
        }
        var sysctls: [String: String] = [:]
        for key in watchedSysctls {
            sysctls[key] = read("/proc/sys/" + key.replacingOccurrences(of: ".", with: "/"))
        }
        var nft: String?
        if Executable.find("nft") != nil {
            let command = ["nft", "list", "ruleset"]
            nft = try? (namespace?.execute(command) ?? Namespaces.Process.execute(command)).standardOutput
        }
        // Legacy iptables tables exist only once something used them; their names say so without
        // running iptables-legacy (which would read every rule through getsockopt).
        let legacy = ["ip_tables_names", "ip6_tables_names"].map { read("/proc/net/" + $0) ?? "" }
            .flatMap { $0.split(separator: "\n").map(String.init) }
        return HostSnapshot(network: try NamespaceSnapshot.capture(route: route, xfrm: xfrm, namespace: namespace?.name).withoutCounters,
                            sysctls: sysctls, nftRuleset: nft, legacyIptablesTables: legacy.sorted())
    }

    /// What differs, in words (empty when nothing does).
    public func differences(to other: HostSnapshot) -> [String] {
        var d: [String] = []
        let a = network, b = other.network
        if a.links.map(\.name) != b.links.map(\.name) { d.append("links: \(a.links.map(\.name)) → \(b.links.map(\.name))") }
        else if a.links != b.links { d.append("link attributes changed") }
        if a.addresses != b.addresses { d.append("addresses: \(a.addresses) → \(b.addresses)") }
        if a.routes != b.routes { d.append("routes: \(a.routes.count) → \(b.routes.count) (\(Set(b.routes).symmetricDifference(a.routes)))") }
        if a.rules != b.rules { d.append("rules: \(a.rules) → \(b.rules)") }
        if a.xfrmStates != b.xfrmStates { d.append("xfrm states: \(a.xfrmStates.count) → \(b.xfrmStates.count)") }
        if a.xfrmPolicies != b.xfrmPolicies { d.append("xfrm policies: \(a.xfrmPolicies.count) → \(b.xfrmPolicies.count)") }
        if sysctls != other.sysctls { d.append("sysctls: \(sysctls) → \(other.sysctls)") }
        if nftRuleset != other.nftRuleset { d.append("nft ruleset changed") }
        if legacyIptablesTables != other.legacyIptablesTables { d.append("legacy iptables tables: \(legacyIptablesTables) → \(other.legacyIptablesTables)") }
        return d
    }
}

extension Lab {
    /// Reads a host's state back from the kernel.
    public func snapshot(_ host: String) throws -> NamespaceSnapshot {
        let ns = try namespace(host)
        return try NamespaceSnapshot.capture(route: ns.route, namespace: ns.name)
    }

    /// Where a packet from `host` to `destination` would go (`ip route get … mark M`).
    public func routeGet(on host: String, to destination: IPAddressLike, from source: IPAddressLike? = nil,
                         mark: UInt32? = nil, inputInterface: String? = nil) throws -> RouteInfo {
        let ns = try namespace(host)
        return try ns.route.routeGet(namespace: ns.name, destination: destination.addressBytes, source: source?.addressBytes,
                                     mark: mark, inputInterface: try inputInterface.map { try index(of: $0, on: host) })
    }
}

/// Anything that is an address (the topology's `IPAddress`, or raw bytes).
public protocol IPAddressLike {
    var addressBytes: [UInt8] { get }
}
