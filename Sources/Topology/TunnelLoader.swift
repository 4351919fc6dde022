import Glibc
/// Reading the `tunnels:` section (see `Tunnel` and Topologies/README.md).
extension TopologyReader {
    /// What the tunnels of one file share while they are read.
    struct TunnelContext {
        let networks: [Network]
        /// Tunnel name → the line it was defined on.
        var names: [String: Int] = [:]
        /// Host → tunnel devices already planned there, with their field and line.
        var devices: [String: [(name: String, field: String, line: Int)]] = [:]
        /// Host → the IKE tunnel whose daemon runs there, and its line.
        var daemons: [String: (tunnel: String, line: Int)] = [:]
    }

    func tunnels(_ r: Reader, networks: [Network]) -> [Tunnel] {
        guard let items = r.sequence() else { return [] }
        var context = TunnelContext(networks: networks)
        return items.enumerated().compactMap { tunnel($1, position: $0, &context) }
    }

    func tunnel(_ r: Reader, position: Int, _ context: inout TunnelContext) -> Tunnel? {
        guard let f = r.mapping(["name", "style", "left", "right", "mark", "if_id", "algorithm", "encap", "auth"]) else { return nil }
        var name: String?
        if let nameReader = f.required("name"), let n = nameReader.name(Check.networkName) {
            if let first = context.names[n] {
                nameReader.problem("duplicate tunnel name \(quoted(n)) (first at line \(first))")
            } else {
                context.names[n] = nameReader.location.line
            }
            name = n
        }
        let style = f.required("style")?.value("a tunnel style (policy, vti or xfrmi)") { Tunnel.Style(rawValue: $0) }
        let left = f.required("left").flatMap { endpoint($0, context) }
        let right = f.required("right").flatMap { endpoint($0, context) }
        let algorithm = f["algorithm"]?.value("an algorithm (aead or cbc-hmac)") { Tunnel.Algorithm(rawValue: $0) }
        let encap = f["encap"]?.value("an encapsulation (udp)") { Tunnel.Encapsulation(rawValue: $0) }
        let authentication = f["auth"]?.value("an authentication (psk or certificates)") { Tunnel.Authentication(rawValue: $0) }
        var mark = f["mark"]?.value("a mark (N or N/MASK, each decimal or 0x-hex, at most 0xffffffff)") { Mark($0) }
        var interfaceID = f["if_id"]?.number(1...Int64(UInt32.max)).map { UInt32($0) }

        switch style {
        case .policy?:
            if f["if_id"] != nil {
                f["if_id"]?.problem("if_id is for xfrmi tunnels; a policy tunnel is chosen by its subnets (and mark)")
            }
        case .vti?:
            if f["if_id"] != nil {
                f["if_id"]?.problem("if_id is for xfrmi tunnels; a vti tunnel is chosen by its key (mark)")
            }
            if let m = mark, m.mask != .max {
                f["mark"]?.problem("a VTI key is a whole 32-bit value: give mark without a mask")
            } else if let m = mark, m.value == 0 {
                f["mark"]?.problem("a VTI key must not be 0: key 0 would catch unmarked traffic")
            }
            if mark == nil { mark = Mark(UInt32(position + 1)) }
        case .xfrmi?:
            if f["mark"] != nil {
                f["mark"]?.problem("mark is for policy and vti tunnels; an xfrmi tunnel is chosen by its if_id")
            }
            if interfaceID == nil { interfaceID = UInt32(position + 1) }
        case nil:
            break
        }

        if let left, let right {
            if left.host == right.host {
                f["right"].flatMap { Fields.value($0, "host") }?.problem("both ends of the tunnel are on host \(quoted(left.host))")
            }
            if left.address.family != right.address.family {
                f["right"].flatMap { Fields.value($0, "address") }?.problem(
                    "right address \(right.address) is \(Check.familyName(right.address.family)) but left address \(left.address) is \(Check.familyName(left.address.family))")
            }
            for (side, end, other) in [("left", left, right), ("right", right, left)] {
                for family in [IPAddress.Family.ipv4, .ipv6] where end.subnets.contains(where: { $0.family == family })
                    && !other.subnets.contains(where: { $0.family == family }) {
                    f[side].flatMap { Fields.value($0, "subnets") }?.problem(
                        "\(side) has \(Check.familyName(family)) subnets but \(side == "left" ? "right" : "left") has none: each inner family needs subnets on both ends")
                }
            }
        }
        // IKE: a daemon on both ends or on neither; what the daemons negotiate is not in the file.
        if let left, let right {
            // By the key, so a misspelt daemon is reported once, as such.
            let hasIKE = { (side: String) in f[side].flatMap { Fields.value($0, "ike") } != nil }
            if hasIKE("left") != hasIKE("right") {
                let (side, end, other) = hasIKE("right") ? ("left", left, right) : ("right", right, left)
                (f[side].flatMap { Fields.value($0, "host") } ?? f[side])?.problem(
                    "\(side) end (host \(quoted(end.host))) has no ike daemon but the other end has ike: \(other.ike?.rawValue ?? "?"): an IKE tunnel needs a daemon on each end")
            }
            if left.ike != nil && right.ike != nil {
                // One daemon per namespace: two would both want UDP ports 500 and 4500.
                for side in ["left", "right"] {
                    let end = side == "left" ? left : right
                    if let other = context.daemons[end.host] {
                        f[side].flatMap { Fields.value($0, "ike") }?.problem(
                            "host \(quoted(end.host)) already runs the IKE daemon of tunnel \(quoted(other.tunnel)) (line \(other.line)): one IKE tunnel per host")
                    } else if let name {
                        context.daemons[end.host] = (name, r.location.line)
                    }
                }
                if left.ike == .libreswan || right.ike == .libreswan,
                   let side = left.subnets.count > 1 ? "left" : (right.subnets.count > 1 ? "right" : nil) {
                    f[side].flatMap { Fields.value($0, "subnets") }?.problem(
                        "with libreswan on the tunnel, one subnet per end (its leftsubnet=/rightsubnet=): give a tunnel per subnet")
                }
                for side in ["left", "right"] {
                    let end = side == "left" ? left : right
                    if end.subnets.contains(where: { $0.family != end.address.family }) {
                        f[side].flatMap { Fields.value($0, "subnets") }?.problem(
                            "an IKE tunnel's subnets are of its outer family (\(Check.familyName(end.address.family))): a libreswan connection is of one family; give a second tunnel for the other")
                        break
                    }
                }
                f["algorithm"]?.problem("the IKE daemons negotiate the algorithms: algorithm is for static tunnels")
                f["encap"]?.problem("the IKE daemons negotiate UDP encapsulation (NAT traversal): encap is for static tunnels")
                for side in ["left", "right"] where style == .xfrmi {
                    f[side].flatMap { Fields.value($0, "device") }?.problem(
                        "an IKE xfrmi tunnel's device is ipsec<if_id> (libreswan names it so): leave device out")
                }
            } else if f["auth"] != nil {
                f["auth"]?.problem("auth is for IKE tunnels: give ike: strongswan or libreswan on both ends")
            }
        }
        for (side, end) in [("left", left), ("right", right)] {
            guard let end, let endReader = f[side] else { continue }
            let deviceReader = Fields.value(endReader, "device")
            guard let style, style != .policy else {
                deviceReader?.problem("device is for vti and xfrmi tunnels; a policy tunnel has no device")
                continue
            }
            let device = end.device ?? Tunnel.defaultDevice(style: style, name: name ?? "", ike: left?.ike != nil && right?.ike != nil,
                                                            interfaceID: interfaceID) ?? ""
            let at = deviceReader ?? endReader
            if name == nil && end.device == nil { continue }
            if let message = Check.interfaceName(device) {
                at.problem(end.device == nil
                    ? "the default device name \(quoted(device)) is too long or invalid: give device (\(message))" : message)
            } else if let previous = interfaces[end.host]?.first(where: { $0.name == device }) {
                at.problem("host \(quoted(end.host)) already has an interface \(quoted(device)) (\(previous.field), line \(previous.line))")
            } else if let previous = context.devices[end.host]?.first(where: { $0.name == device }) {
                at.problem("host \(quoted(end.host)) already has a tunnel device \(quoted(device)) (\(previous.field), line \(previous.line))")
            } else {
                context.devices[end.host, default: []].append((device, at.field, at.location.line))
            }
        }
        guard let name, let style, let left, let right else { return nil }
        return Tunnel(name: name, style: style, left: left, right: right, mark: mark, interfaceID: interfaceID,
                      algorithm: algorithm ?? .aead, encapsulation: encap, reqid: UInt32(position + 1),
                      authentication: authentication ?? .psk, location: r.location)
    }

    func endpoint(_ r: Reader, _ context: TunnelContext) -> Tunnel.Endpoint? {
        guard let f = r.mapping(["host", "address", "subnets", "device", "ike", "ike-from"]) else { return nil }
        var host: String?
        if let hostReader = f.required("host"), let h = hostReader.scalar() {
            if let names = hostNames, !names.contains(h) {
                hostReader.problem("no host \(quoted(h)) is defined under hosts" + (names.isEmpty ? "" : " (hosts: \(listing(names)))"))
            }
            host = h
        }
        let address = f.required("address")?.address()
        if let address, let host, let addressReader = f["address"], interfacesComplete, hostNames?.contains(host) == true {
            let own = context.networks.flatMap(\.members).filter { $0.host == host }.flatMap(\.addresses).map(\.address)
            if !own.contains(address) {
                addressReader.problem("\(address) is not an address of host \(quoted(host))"
                    + (own.isEmpty ? " (it has none)" : " (its addresses: \(listing(own.map(\.description))))"))
            }
        }
        var subnets: [CIDR] = []
        if let subnetsReader = f.required("subnets"), let items = subnetsReader.list() {
            subnets = items.compactMap { $0.cidr(networkOnly: true) }
            if items.isEmpty { subnetsReader.problem("a tunnel end needs at least one subnet") }
        }
        let device = f["device"]?.name(Check.interfaceName)
        let ike = f["ike"]?.value("an IKE daemon (strongswan or libreswan)") { Tunnel.IKEDaemon(rawValue: $0) }
        var ikeFrom: String?
        if let fromReader = f["ike-from"], let path = fromReader.scalar() {
            if ike == nil {
                fromReader.problem("ike-from says where the IKE daemon comes from: give ike: strongswan or libreswan too")
            } else if !path.hasPrefix("/") {
                fromReader.problem("\(quoted(path)) is not an absolute path (a daemon root such as /var/lib/xfrmlab/daemons/trixie-strongswan, or an install prefix)")
            } else {
                var st = stat()
                if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
                    ikeFrom = path
                } else {
                    fromReader.problem("\(quoted(path)): no such directory")
                }
            }
        }
        guard let host, let address, !subnets.isEmpty else { return nil }
        return Tunnel.Endpoint(host: host, address: address, subnets: subnets, device: device, ike: ike, ikeFrom: ikeFrom,
                               location: r.location)
    }
}

extension Fields {
    /// The reader of `key` inside a mapping `r`, without reporting anything (for pointing a
    /// cross-field problem at the value it is about).
    static func value(_ r: Reader, _ key: String) -> Reader? {
        guard case .mapping(let mapping) = r.node else { return nil }
        for (k, v) in mapping {
            guard case .scalar(let s) = k, r.diagnostics.originalKey(s.string) == key else { continue }
            return Reader(diagnostics: r.diagnostics, node: v, field: Reader.path(r.field, key: key),
                          location: r.diagnostics.location(v.mark))
        }
        return nil
    }
}
