import Foundation
import Yams

extension Topology {
    /// Reads and validates a topology file (see Topologies/README.md).
    ///
    /// - Throws: `TopologyError` listing every problem found, each with its line and field.
    public static func load(path: String) throws -> Topology {
        try parse(yaml: readTopologyFile(path), file: path)
    }

    /// Parses and validates topology YAML; `file` names it in problems and becomes `source`.
    ///
    /// - Throws: `TopologyError` listing every problem found, each with its line and field.
    public static func parse(yaml: String, file: String) throws -> Topology {
        let diagnostics = Diagnostics(file: file)
        var topology: Topology?
        if let root = diagnostics.compose(yaml) {
            topology = TopologyReader(diagnostics).topology(Reader(root: root, diagnostics: diagnostics))
        }
        let problems = diagnostics.sortedProblems()
        guard problems.isEmpty, var topology else {
            throw TopologyError(problems: problems.isEmpty
                ? [.init(file: file, line: 0, column: 0, field: "", message: "cannot read the topology")] : problems)
        }
        topology.source = file
        return topology
    }
}

/// The file's text, or a `TopologyError` with one problem at line 0 (the errno text) or at
/// the first byte that is not UTF-8.
func readTopologyFile(_ path: String) throws -> String {
    func failure(_ line: Int, _ column: Int, _ message: String) -> TopologyError {
        TopologyError(problems: [.init(file: path, line: line, column: column, field: "", message: message)])
    }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw failure(0, 0, String(cString: strerror(errno))) }
    defer { close(fd) }
    let limit = 16 << 20
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw failure(0, 0, String(cString: strerror(errno)))
        }
        if n == 0 { break }
        bytes.append(contentsOf: buffer[0..<n])
        if bytes.count > limit { throw failure(0, 0, "the file is larger than \(limit >> 20) MiB") }
    }
    if let text = String(validating: bytes, as: UTF8.self) { return text }
    var parser = Unicode.UTF8.ForwardParser()
    var iterator = bytes.makeIterator()
    var line = 1, column = 1
    while case .valid(let encoded) = parser.parseScalar(from: &iterator) {
        if UTF8.decode(encoded) == "\n" {
            line += 1
            column = 1
        } else {
            column += 1
        }
    }
    throw failure(line, column, "the file is not valid UTF-8")
}

/// Builds the model from the document, checking each value where it is read and the
/// references between values (members naming hosts, routes naming interfaces) once both
/// sides are known.
final class TopologyReader {
    let diagnostics: Diagnostics
    /// The names under `hosts`, or nil when `hosts` could not be read (then members are not checked).
    var hostNames: [String]?
    /// Each host's interfaces, from the networks' members, in declaration order.
    var interfaces: [String: [(name: String, field: String, line: Int)]] = [:]
    /// False when some member's host or interface could not be read: then `dev`, `iif`, `oif`
    /// and `out` are not checked, since the interface they name may be that one.
    var interfacesComplete = true
    var networkNames: [String: Int] = [:]

    init(_ diagnostics: Diagnostics) {
        self.diagnostics = diagnostics
    }

    func topology(_ root: Reader) -> Topology? {
        guard case .mapping = root.node else {
            root.problem(root.isNull
                ? "the file is empty; expected a mapping with name, hosts and networks"
                : "expected a mapping with name, hosts and networks, found \(root.kind)")
            return nil
        }
        guard let f = root.mapping(["name", "hosts", "networks", "tunnels"]) else { return nil }
        let name = f.required("name")?.name(Check.topologyName)
        let hostEntries = f["hosts"].map { $0.entries(noun: "host") } ?? []
        hostNames = hostEntries?.map(\.key)

        var networks: [Network] = []
        if let list = f["networks"].map({ $0.sequence() }) ?? [] {
            networks = list.compactMap(network)
        } else {
            interfacesComplete = false
        }

        var hosts: [Host] = []
        for entry in hostEntries ?? [] {
            if let message = Check.hostName(entry.key) {
                diagnostics.report(entry.keyLocation, field: entry.value.field, message)
            }
            if let host = host(entry.key, at: entry.keyLocation, entry.value) { hosts.append(host) }
        }
        let tunnels = f["tunnels"].map { self.tunnels($0, networks: networks) } ?? []
        guard let name else { return nil }
        return Topology(name: name, hosts: hosts, networks: networks, tunnels: tunnels)
    }

    // MARK: Networks

    func network(_ r: Reader) -> Network? {
        guard let f = r.mapping(["name", "subnets", "bridge", "mtu", "kind", "members"]) else {
            interfacesComplete = false
            return nil
        }
        var name: String?
        if let nameReader = f.required("name"), let n = nameReader.name(Check.networkName) {
            if let first = networkNames[n] {
                nameReader.problem("duplicate network name \(quoted(n)) (first at line \(first))")
            } else {
                networkNames[n] = nameReader.location.line
            }
            name = n
        }
        let label = name.map { "network \(quoted($0))" } ?? "this network"

        var subnets: [CIDR] = []
        var subnetsComplete = false
        if let subnetsReader = f.required("subnets"), let items = subnetsReader.list() {
            subnets = items.compactMap { $0.cidr(networkOnly: true) }
            subnetsComplete = subnets.count == items.count
            if items.isEmpty { subnetsReader.problem("a network needs at least one subnet") }
        }
        let mtu = f["mtu"]?.number(68...65535).map { Int($0) }
        var kind = Network.Kind.veth
        if let kindReader = f["kind"], let k = kindReader.scalar() {
            if let v = Network.Kind(rawValue: k) {
                kind = v
            } else {
                kindReader.problem("kind \(quoted(k)) is not one of \(Network.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }

        var context = MemberContext(label: label, subnets: subnets, subnetsComplete: subnetsComplete)
        var members: [Attachment] = []
        var membersComplete = false
        if let membersReader = f.required("members"), let items = membersReader.sequence() {
            members = items.compactMap { member($0, &context) }
            membersComplete = members.count == items.count
            if items.isEmpty { membersReader.problem("a network needs at least one member") }
        }
        if !membersComplete { interfacesComplete = false }  // a member's interface may be missing

        var bridge: String?
        if let bridgeReader = f["bridge"], let b = bridgeReader.scalar() {
            if context.hosts[b] == nil, membersComplete {
                bridgeReader.problem("bridge \(quoted(b)) is not a member of \(label) "
                    + "(members: \(listing(context.hosts.keys.sorted())))")
            }
            if kind == .macvlan {
                bridgeReader.problem("a macvlan network has no bridge host: its members' macvlans sit on a bridge in a switch namespace of its own (a macvlan cannot reach its lower device)")
            }
            bridge = b
        }
        guard let name else { return nil }
        return Network(name: name, subnets: subnets, members: members, bridge: bridge, mtu: mtu, kind: kind,
                       location: r.location)
    }

    /// What the members of one network share while they are read.
    struct MemberContext {
        let label: String
        let subnets: [CIDR]
        let subnetsComplete: Bool
        /// Member host → the line it joined on.
        var hosts: [String: Int] = [:]
        /// Address → the line that used it.
        var addresses: [IPAddress: Int] = [:]
    }

    func member(_ r: Reader, _ context: inout MemberContext) -> Attachment? {
        guard let f = r.mapping(["host", "interface", "addresses"]) else { return nil }
        var host: String?
        if let hostReader = f.required("host"), let h = hostReader.scalar() {
            if let names = hostNames, !names.contains(h) {
                hostReader.problem("no host \(quoted(h)) is defined under hosts"
                    + (names.isEmpty ? "" : " (hosts: \(listing(names)))"))
            } else if let line = context.hosts[h] {
                hostReader.problem("host \(quoted(h)) is already a member of \(context.label) (line \(line)); "
                    + "a host has one interface per network")
            }
            if context.hosts[h] == nil { context.hosts[h] = hostReader.location.line }
            host = h
        }
        var interface: String?
        if let interfaceReader = f.required("interface"), let i = interfaceReader.name(Check.interfaceName) {
            if i == "lo" {
                interfaceReader.problem("\"lo\" is the loopback interface every host already has; choose another name")
            } else if let host {
                if let previous = interfaces[host]?.first(where: { $0.name == i }) {
                    interfaceReader.problem("host \(quoted(host)) already has an interface \(quoted(i)) "
                        + "(\(previous.field), line \(previous.line))")
                } else {
                    interfaces[host, default: []].append((i, interfaceReader.field, interfaceReader.location.line))
                }
            }
            interface = i
        }
        let addresses = f["addresses"]?.list()?.compactMap { address($0, &context) } ?? []
        guard let host, let interface else { return nil }
        return Attachment(host: host, interface: interface, addresses: addresses, location: r.location)
    }

    /// A member's address: bare, taking the prefix length of the subnet it falls in, or with
    /// that same length.
    func address(_ r: Reader, _ context: inout MemberContext) -> CIDR? {
        guard let text = r.scalar() else { return nil }
        let address: IPAddress
        var length: Int?
        if text.contains("/") {
            guard let cidr = CIDR(text) else {
                r.problem(Check.cidrProblem(text))
                return nil
            }
            address = cidr.address
            length = cidr.prefixLength
        } else {
            guard let a = IPAddress(text) else {
                r.problem("\(quoted(text)) is not an IP address")
                return nil
            }
            address = a
        }
        let containing = context.subnets.filter { $0.contains(address) }
        guard let longest = containing.max(by: { $0.prefixLength < $1.prefixLength }) else {
            if context.subnetsComplete {
                r.problem("\(address) is not in any subnet of \(context.label) "
                    + "(\(context.subnets.map(\.description).joined(separator: ", ")))")
            }
            return nil
        }
        let subnet = length.flatMap { l in containing.first { $0.prefixLength == l } } ?? longest
        if let length, length != subnet.prefixLength {
            r.problem("\(quoted(text)) has prefix length /\(length) but its subnet \(subnet) has /\(subnet.prefixLength); "
                + "give the bare address")
            return nil
        }
        if address.family == .ipv4, subnet.prefixLength < 31 {
            if address == subnet.network.address {
                r.problem("\(address) is the network address of \(subnet), not a host address")
                return nil
            }
            if address == subnet.lastAddress {
                r.problem("\(address) is the broadcast address of \(subnet), not a host address")
                return nil
            }
        }
        if let line = context.addresses[address] {
            r.problem("\(address) is used twice on \(context.label) (first at line \(line))")
            return nil
        }
        context.addresses[address] = r.location.line
        return CIDR(address: address, prefixLength: subnet.prefixLength)
    }

    // MARK: Hosts

    // Below, a value that is missing or wrong is read as nil or its default: it has been
    // reported, so the model built is thrown away and only needs to keep the checks going.

    func host(_ name: String, at location: SourceLocation, _ r: Reader) -> Host? {
        guard let f = r.mapping(["forwarding", "sysctls", "routes", "rules", "masquerade", "nftables", "user-namespace"]) else { return nil }
        // `user-namespace: true` (owned by nobody) or a uid: the host's network namespace is
        // owned by an unprivileged user's own user namespace.
        var userNamespace: UInt32?
        if let u = f["user-namespace"], let text = u.scalar() {
            switch text {
            case "true": userNamespace = 65534
            case "false": userNamespace = nil
            default:
                if let uid = UInt32(text), uid > 0, uid < 4_294_967_295 { userNamespace = uid } else {
                    u.problem("\"\(text)\" is neither true, false nor a uid other than 0 (the unprivileged user who owns the host)")
                }
            }
        }
        var sysctls: [Sysctl] = []
        for entry in f["sysctls"]?.entries(noun: "sysctl") ?? [] {
            if let message = Check.sysctlKey(entry.key) {
                diagnostics.report(entry.keyLocation, field: entry.value.field, message)
            } else if let value = entry.value.scalar() {
                if let message = Check.sysctlValue(value) {
                    entry.value.problem(message)
                }
                sysctls.append(Sysctl(key: entry.key, value: value, location: entry.keyLocation))
            }
        }
        return Host(name: name,
                    forwarding: f["forwarding"]?.bool() ?? false,
                    sysctls: sysctls,
                    routes: f["routes"]?.sequence()?.compactMap { route($0, host: name) } ?? [],
                    rules: f["rules"]?.sequence()?.compactMap { rule($0, host: name) } ?? [],
                    masquerade: f["masquerade"]?.sequence()?.compactMap { masquerade($0, host: name) } ?? [],
                    nftables: f["nftables"]?.scalar(),
                    userNamespace: userNamespace,
                    location: location)
    }

    /// Checks that `name` is an interface of `host` (one of its network members, or `lo`).
    func interface(_ r: Reader, host: String, loopback: Bool) -> String? {
        guard let name = r.name(Check.interfaceName) else { return nil }
        if loopback, name == "lo" { return name }
        let names = (interfaces[host] ?? []).map(\.name)
        if interfacesComplete, !names.contains(name) {
            let known = names.isEmpty
                ? (loopback ? "it is on no network, so it has only lo" : "it is on no network")
                : "its interfaces: " + listing(names) + (loopback ? " and lo" : "")
            r.problem("host \(quoted(host)) has no interface \(quoted(name)) (\(known))")
        }
        return name
    }

    func route(_ r: Reader, host: String) -> Route? {
        guard let f = r.mapping(["to", "via", "dev", "src", "table", "type", "metric"]) else { return nil }
        let type = f["type"]?.value("a route type (unicast, blackhole, unreachable, prohibit)") { RouteType(rawValue: $0) }
        let via = f["via"]?.address()
        let src = f["src"]?.address()
        let to = f.required("to")?.cidr(defaultFamily: via?.family ?? src?.family ?? .ipv4, networkOnly: true)
        if let to {
            for (key, address) in [("via", via), ("src", src)] {
                if let address, address.family != to.family {
                    f[key]?.problem("\(key) \(address) is \(Check.familyName(address.family)) "
                        + "but to \(to) is \(Check.familyName(to.family))")
                }
            }
        }
        if let type, type != .unicast, let viaReader = f["via"] {
            viaReader.problem("a \(type.rawValue) route has no gateway; remove via")
        }
        if type ?? .unicast == .unicast, f["via"] == nil, f["dev"] == nil {
            r.problem("a unicast route needs via or dev (or a type: blackhole, unreachable or prohibit)")
        }
        let dev = f["dev"].flatMap { interface($0, host: host, loopback: true) }
        let table = f["table"]?.table()
        let metric = f["metric"]?.number(0...Int64(UInt32.max))
        guard let to else { return nil }
        return Route(to: to, via: via, dev: dev, src: src, table: table ?? .main, type: type ?? .unicast,
                     metric: metric.map { UInt32($0) }, location: r.location)
    }

    func rule(_ r: Reader, host: String) -> Rule? {
        guard let f = r.mapping(["priority", "not", "from", "to", "fwmark", "iif", "oif", "lookup", "table", "family"]) else {
            return nil
        }
        let family = f["family"]?.value("a family (ipv4 or ipv6)") { IPAddress.Family(rawValue: $0) }
        let from = f["from"]?.cidr(defaultFamily: family ?? .ipv4)
        let to = f["to"]?.cidr(defaultFamily: family ?? .ipv4)
        if let family {
            for (key, cidr) in [("from", from), ("to", to)] {
                if let cidr, cidr.family != family {
                    f[key]?.problem("\(key) \(cidr) is \(Check.familyName(cidr.family)) but family is \(family.rawValue)")
                }
            }
        } else if let from, let to, from.family != to.family {
            f["to"]?.problem("to \(to) is \(Check.familyName(to.family)) but from \(from) is \(Check.familyName(from.family)); "
                + "a rule matches one family")
        }
        let tableReader: Reader?
        if let lookup = f["lookup"] {
            f["table"]?.problem("give either lookup or table (the same thing), not both")
            tableReader = lookup
        } else {
            tableReader = f["table"] ?? f.required("lookup")
        }
        let table = tableReader?.table()
        let priority = f["priority"]?.number(0...Int64(UInt32.max))
        let invert = f["not"]?.bool()
        let fwmark = f["fwmark"]?.value("a mark (N or N/MASK, each decimal or 0x-hex, at most 0xffffffff)") { Mark($0) }
        let iif = f["iif"].flatMap { interface($0, host: host, loopback: true) }
        let oif = f["oif"].flatMap { interface($0, host: host, loopback: true) }
        guard let table else { return nil }
        return Rule(family: family ?? from?.family ?? to?.family ?? .ipv4, priority: priority.map { UInt32($0) },
                    invert: invert ?? false, from: from, to: to, fwmark: fwmark, iif: iif, oif: oif,
                    table: table, location: r.location)
    }

    func masquerade(_ r: Reader, host: String) -> Masquerade? {
        guard let f = r.mapping(["out", "from"]) else { return nil }
        let out = f.required("out").flatMap { interface($0, host: host, loopback: false) }
        let from = f["from"]?.cidr()
        guard let out else { return nil }
        return Masquerade(out: out, from: from, location: r.location)
    }
}

extension Reader {
    /// A name checked by `check` (one of `Check`'s name rules).
    func name(_ check: (String) -> String?) -> String? {
        guard let text = scalar() else { return nil }
        if let message = check(text) {
            problem(message)
            return nil
        }
        return text
    }

    func address() -> IPAddress? {
        value("an IP address") { IPAddress($0) }
    }

    /// A CIDR, a bare address (a host prefix) or `default`; with `networkOnly`, one without
    /// host bits set, as the kernel wants for routes.
    func cidr(defaultFamily: IPAddress.Family = .ipv4, networkOnly: Bool = false) -> CIDR? {
        guard let text = scalar() else { return nil }
        guard let cidr = CIDR(text, defaultFamily: defaultFamily) else {
            problem(Check.cidrProblem(text))
            return nil
        }
        if networkOnly, !cidr.isNetworkAddress {
            problem("\(quoted(text)) has host bits set; the network is \(cidr.network)")
            return nil
        }
        return cidr
    }

    /// `main`, `local`, `default` or a number 1...2^32-1.
    func table() -> RouteTable? {
        guard let text = scalar() else { return nil }
        switch text {
        case "main": return .main
        case "local": return .local
        case "default": return .default
        default: break
        }
        let range = Int64(1)...Int64(UInt32.max)
        switch parseInteger(text) {
        case .invalid:
            problem("\(quoted(text)) is not a routing table (main, local, default or a number \(range.lowerBound)...\(range.upperBound))")
        case .value(let n):
            if let n, range.contains(n) { return RouteTable(UInt32(n)) }
            problem("\(quoted(text)) is out of range: a table number must be \(range.lowerBound)...\(range.upperBound)")
        }
        return nil
    }
}

/// Names for a message: all of them, or the first few and how many more.
func listing(_ names: [String], limit: Int = 10) -> String {
    names.count <= limit ? names.joined(separator: ", ")
        : names.prefix(limit).joined(separator: ", ") + " and \(names.count - limit) more"
}
