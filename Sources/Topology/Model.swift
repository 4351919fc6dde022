/// Where a value came from in a topology file, so errors can point at it.
public struct SourceLocation: Hashable, Sendable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }
    public var description: String { "\(file):\(line):\(column)" }
}

/// A declarative network: hosts (one network namespace each) and the networks that join them.
///
/// Loaded from YAML by `Topology.load(path:)`; see Topologies/README.md for the file format.
public struct Topology: Hashable, Sendable, Codable {
    public var name: String
    public var hosts: [Host]
    public var networks: [Network]
    /// IPsec tunnels between hosts, installed once the networks are up (see `Tunnel`).
    public var tunnels: [Tunnel]
    /// The file it was loaded from, when it was.
    public var source: String?

    public init(name: String, hosts: [Host] = [], networks: [Network] = [], tunnels: [Tunnel] = [], source: String? = nil) {
        self.name = name
        self.hosts = hosts
        self.networks = networks
        self.tunnels = tunnels
        self.source = source
    }

    public func host(named name: String) -> Host? { hosts.first { $0.name == name } }

    /// Every interface a host gets from the networks it is attached to, in declaration order.
    public func attachments(of host: String) -> [(network: Network, attachment: Attachment)] {
        networks.flatMap { n in n.members.filter { $0.host == host }.map { (n, $0) } }
    }
}

/// One network namespace.
public struct Host: Hashable, Sendable, Codable {
    public var name: String
    /// Sets `net.ipv4.ip_forward` and `net.ipv6.conf.all.forwarding`.
    public var forwarding: Bool
    /// Extra sysctls under /proc/sys, written inside the host's namespace (`net.ipv4.conf.all.rp_filter: 0`).
    public var sysctls: [Sysctl]
    public var routes: [Route]
    public var rules: [Rule]
    /// Source NAT out of an interface (`nft … masquerade`).
    public var masquerade: [Masquerade]
    /// An nftables ruleset loaded with `nft -f` inside the namespace (NAT, marks, logging).
    public var nftables: String?
    /// The uid (and gid) of the unprivileged user whose own user namespace owns the host's
    /// network namespace (`user-namespace: true` is nobody, 65534); nil: the harness owns it.
    public var userNamespace: UInt32?
    public var location: SourceLocation?

    public init(name: String, forwarding: Bool = false, sysctls: [Sysctl] = [], routes: [Route] = [],
                rules: [Rule] = [], masquerade: [Masquerade] = [], nftables: String? = nil,
                userNamespace: UInt32? = nil, location: SourceLocation? = nil) {
        self.userNamespace = userNamespace
        self.name = name
        self.forwarding = forwarding
        self.sysctls = sysctls
        self.routes = routes
        self.rules = rules
        self.masquerade = masquerade
        self.nftables = nftables
        self.location = location
    }
}

public struct Sysctl: Hashable, Sendable, Codable {
    /// Dotted name below /proc/sys, e.g. `net.ipv4.conf.all.rp_filter`.
    public var key: String
    public var value: String
    public var location: SourceLocation?
    public init(key: String, value: String, location: SourceLocation? = nil) {
        self.key = key
        self.value = value
        self.location = location
    }
}

/// A layer-2 segment. Two members are joined by a veth pair; more than two by a bridge that
/// lives in the namespace of `bridge` (a member host), or, when that is absent, in a switch
/// namespace of its own. With `kind: macvlan` every member gets a macvlan device (bridge
/// mode) on a bridge in a switch namespace instead of a veth pair. A single member gets a bridge with no ports (a stub interface that
/// holds the host's private subnet).
public struct Network: Hashable, Sendable, Codable {
    public var name: String
    public var subnets: [CIDR]
    public var members: [Attachment]
    /// The member host whose interface on this network is the bridge itself.
    public var bridge: String?
    public var mtu: Int?
    /// How members attach: veth pairs (to each other or to a bridge port), or macvlan devices
    /// (bridge mode) on the network's bridge.
    public var kind: Kind
    public var location: SourceLocation?

    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        case veth, macvlan
    }

    public init(name: String, subnets: [CIDR], members: [Attachment], bridge: String? = nil,
                mtu: Int? = nil, kind: Kind = .veth, location: SourceLocation? = nil) {
        self.name = name
        self.subnets = subnets
        self.members = members
        self.bridge = bridge
        self.mtu = mtu
        self.kind = kind
        self.location = location
    }
}

/// A host's interface on a network.
public struct Attachment: Hashable, Sendable, Codable {
    public var host: String
    public var interface: String
    /// Addresses with the prefix length of the network's subnet they fall in.
    public var addresses: [CIDR]
    public var location: SourceLocation?

    public init(host: String, interface: String, addresses: [CIDR] = [], location: SourceLocation? = nil) {
        self.host = host
        self.interface = interface
        self.addresses = addresses
        self.location = location
    }
}

public enum RouteType: String, Hashable, Sendable, Codable, CaseIterable {
    case unicast, blackhole, unreachable, prohibit
}

/// A routing table: `main`, `local`, `default` or a number.
public struct RouteTable: Hashable, Sendable, Codable, CustomStringConvertible {
    public var id: UInt32
    public init(_ id: UInt32) { self.id = id }
    public static let main = RouteTable(254)
    public static let local = RouteTable(255)
    public static let `default` = RouteTable(253)

    public init?(_ text: String) {
        switch text {
        case "main": self = .main
        case "local": self = .local
        case "default": self = .default
        default:
            guard let n = UInt32(text), n > 0 else { return nil }
            self.init(n)
        }
    }
    public var description: String {
        switch id {
        case 254: return "main"
        case 255: return "local"
        case 253: return "default"
        default: return String(id)
        }
    }
}

/// `ip route add TO [via VIA] [dev DEV] [src SRC] [table T] [metric M]`, or a blackhole,
/// unreachable or prohibit route.
public struct Route: Hashable, Sendable, Codable, CustomStringConvertible {
    public var to: CIDR
    public var via: IPAddress?
    public var dev: String?
    public var src: IPAddress?
    public var table: RouteTable
    public var type: RouteType
    public var metric: UInt32?
    public var location: SourceLocation?

    public init(to: CIDR, via: IPAddress? = nil, dev: String? = nil, src: IPAddress? = nil,
                table: RouteTable = .main, type: RouteType = .unicast, metric: UInt32? = nil,
                location: SourceLocation? = nil) {
        self.to = to
        self.via = via
        self.dev = dev
        self.src = src
        self.table = table
        self.type = type
        self.metric = metric
        self.location = location
    }

    public var description: String {
        var s = type == .unicast ? "" : "\(type.rawValue) "
        s += to.prefixLength == 0 ? "default" : to.description
        if let via { s += " via \(via)" }
        if let dev { s += " dev \(dev)" }
        if let src { s += " src \(src)" }
        if table != .main { s += " table \(table)" }
        if let metric { s += " metric \(metric)" }
        return s
    }
}

/// `ip rule add [not] [from F] [to T] [fwmark M/MASK] [iif I] [oif O] [priority P] lookup TABLE`.
public struct Rule: Hashable, Sendable, Codable, CustomStringConvertible {
    public var family: IPAddress.Family
    public var priority: UInt32?
    public var invert: Bool
    public var from: CIDR?
    public var to: CIDR?
    public var fwmark: Mark?
    public var iif: String?
    public var oif: String?
    public var table: RouteTable
    public var location: SourceLocation?

    public init(family: IPAddress.Family = .ipv4, priority: UInt32? = nil, invert: Bool = false,
                from: CIDR? = nil, to: CIDR? = nil, fwmark: Mark? = nil, iif: String? = nil,
                oif: String? = nil, table: RouteTable, location: SourceLocation? = nil) {
        self.family = family
        self.priority = priority
        self.invert = invert
        self.from = from
        self.to = to
        self.fwmark = fwmark
        self.iif = iif
        self.oif = oif
        self.table = table
        self.location = location
    }

    public var description: String {
        var s = family == .ipv6 ? "-6 rule" : "rule"
        if let priority { s += " priority \(priority)" }
        if invert { s += " not" }
        if let from { s += " from \(from)" }
        if let to { s += " to \(to)" }
        if let fwmark { s += " fwmark \(fwmark)" }
        if let iif { s += " iif \(iif)" }
        if let oif { s += " oif \(oif)" }
        return s + " lookup \(table)"
    }
}

/// Source NAT of traffic leaving `out` (optionally only from `from`).
public struct Masquerade: Hashable, Sendable, Codable {
    public var out: String
    public var from: CIDR?
    public var location: SourceLocation?
    public init(out: String, from: CIDR? = nil, location: SourceLocation? = nil) {
        self.out = out
        self.from = from
        self.location = location
    }
}
