import CNetlink
import Glibc

/// A route as the kernel reports it (`RTM_NEWROUTE`, from a dump or a `RTM_GETROUTE` query).
public struct RouteInfo: Sendable, Hashable, CustomStringConvertible {
    public var family: UInt8
    public var destination: [UInt8]
    public var destinationLength: UInt8
    public var source: [UInt8]
    public var table: UInt32
    public var type: UInt8
    public var protocolID: UInt8
    public var scope: UInt8
    public var gateway: [UInt8]?
    public var outputInterface: Int32?
    public var preferredSource: [UInt8]?
    public var metric: UInt32?
    public var mark: UInt32?

    public init(_ message: Message) throws {
        let h = try message.header(rtmsg.self)
        let attrs = try message.attributes(after: MemoryLayout<rtmsg>.size)
        family = h.rtm_family
        destinationLength = h.rtm_dst_len
        destination = attrs[Int(RTA_DST.rawValue)]?.payload ?? Array(repeating: 0, count: h.rtm_family == UInt8(AF_INET6) ? 16 : 4)
        source = attrs[Int(RTA_SRC.rawValue)]?.payload ?? []
        table = attrs[Int(RTA_TABLE.rawValue)]?.u32 ?? UInt32(h.rtm_table)
        type = h.rtm_type
        protocolID = h.rtm_protocol
        scope = h.rtm_scope
        gateway = attrs[Int(RTA_GATEWAY.rawValue)]?.payload
        outputInterface = attrs[Int(RTA_OIF.rawValue)]?.i32
        preferredSource = attrs[Int(RTA_PREFSRC.rawValue)]?.payload
        metric = attrs[Int(RTA_PRIORITY.rawValue)]?.u32
        mark = attrs[Int(RTA_MARK.rawValue)]?.u32
    }

    public var typeName: String { RouteRequest.typeNames[type] ?? "type \(type)" }

    public var description: String { rendered { "if\($0)" } }

    /// `ip route`-style text, naming interfaces through `linkName`.
    public func rendered(linkName: (Int32) -> String?) -> String {
        var s = type == nl8(RTN_UNICAST) ? "" : typeName + " "
        s += destinationLength == 0 ? "default" : "\(formatAddress(destination))/\(destinationLength)"
        if let gateway { s += " via \(formatAddress(gateway))" }
        if let outputInterface { s += " dev \(linkName(outputInterface) ?? "if\(outputInterface)")" }
        if let preferredSource { s += " src \(formatAddress(preferredSource))" }
        if table != RouteRequest.mainTable { s += " table \(tableName(table))" }
        if let metric, metric != 0 { s += " metric \(metric)" }
        return s
    }
}

/// Route requests (`RTM_*ROUTE`).
public enum RouteRequest {
    public static let mainTable: UInt32 = 254
    public static let typeNames: [UInt8: String] = [
        nl8(RTN_UNICAST): "unicast", nl8(RTN_LOCAL): "local", nl8(RTN_BROADCAST): "broadcast",
        nl8(RTN_ANYCAST): "anycast", nl8(RTN_MULTICAST): "multicast", nl8(RTN_BLACKHOLE): "blackhole",
        nl8(RTN_UNREACHABLE): "unreachable", nl8(RTN_PROHIBIT): "prohibit", nl8(RTN_THROW): "throw",
    ]
    public static func type(named name: String) -> UInt8? { typeNames.first { $0.value == name }?.key }

    /// Adds a route. `destination` is network-order bytes (4 or 16); `type` an `RTN_*` value.
    ///
    /// Equivalent to `ip route add [TYPE] DST/LEN [via GW] [dev DEV] [src SRC] [table T] [metric M]`.
    public static func add(namespace: String?, destination: [UInt8], prefixLength: Int,
                           gateway: [UInt8]? = nil, outputInterface: Int32? = nil, interfaceName: String? = nil,
                           preferredSource: [UInt8]? = nil, table: UInt32 = mainTable,
                           type: UInt8 = 1 /* RTN_UNICAST */, metric: UInt32? = nil,
                           summary: String? = nil, origin: String? = nil) -> Request {
        var h = rtmsg()
        h.rtm_family = addressFamily(of: destination)
        h.rtm_dst_len = UInt8(prefixLength)
        h.rtm_table = table < 256 ? UInt8(table) : nl8(RT_TABLE_UNSPEC.rawValue)
        h.rtm_protocol = nl8(RTPROT_BOOT)
        h.rtm_type = type
        // `ip route add X dev D` without a gateway makes a link-scope route, like iproute2.
        let linkScope = type == nl8(RTN_UNICAST) && gateway == nil && outputInterface != nil
        h.rtm_scope = linkScope ? nl8(RT_SCOPE_LINK.rawValue) : nl8(RT_SCOPE_UNIVERSE.rawValue)
        var attrs: [Attribute] = []
        if prefixLength > 0 { attrs.append(Attribute(nl16(RTA_DST.rawValue), bytes: destination)) }
        if let gateway { attrs.append(Attribute(nl16(RTA_GATEWAY.rawValue), bytes: gateway)) }
        if let outputInterface { attrs.append(.i32(nl16(RTA_OIF.rawValue), outputInterface)) }
        if let preferredSource { attrs.append(Attribute(nl16(RTA_PREFSRC.rawValue), bytes: preferredSource)) }
        if let metric { attrs.append(.u32(nl16(RTA_PRIORITY.rawValue), metric)) }
        attrs.append(.u32(nl16(RTA_TABLE.rawValue), table))
        var s = summary ?? {
            var t = ipPrefix(namespace) + (destination.count == 16 ? "-6 " : "") + "route add "
            if type != nl8(RTN_UNICAST) { t += (typeNames[type] ?? "\(type)") + " " }
            t += prefixLength == 0 ? "default" : "\(formatAddress(destination))/\(prefixLength)"
            if let gateway { t += " via \(formatAddress(gateway))" }
            if let interfaceName { t += " dev \(interfaceName)" }
            if let preferredSource { t += " src \(formatAddress(preferredSource))" }
            if table != mainTable { t += " table \(tableName(table))" }
            if let metric { t += " metric \(metric)" }
            return t
        }()
        if summary != nil { s = ipPrefix(namespace) + s }
        return Request(type: nl16(RTM_NEWROUTE), flags: .add, header: h, attributes: attrs, summary: s, origin: origin)
    }

    /// Equivalent to `ip route show table all` for one family (or both with `AF_UNSPEC`).
    public static func dump(namespace: String?, family: UInt8 = UInt8(AF_UNSPEC)) -> Request {
        var h = rtmsg()
        h.rtm_family = family
        return Request(type: nl16(RTM_GETROUTE), flags: .dump, header: h, summary: ipPrefix(namespace) + "route show table all")
    }

    /// Asks the kernel where a packet would go.
    ///
    /// Equivalent to `ip route get DST [from SRC] [mark MARK] [iif IIF] [oif OIF]`.
    public static func get(namespace: String?, destination: [UInt8], source: [UInt8]? = nil, mark: UInt32? = nil,
                           inputInterface: Int32? = nil, outputInterface: Int32? = nil) -> Request {
        var h = rtmsg()
        h.rtm_family = addressFamily(of: destination)
        h.rtm_dst_len = UInt8(destination.count * 8)
        // IPv4 names the table only when asked; IPv6 always does, and its strict checking
        // refuses the flag ("Invalid flags for get route request").
        if destination.count == 4 { h.rtm_flags = UInt32(RTM_F_LOOKUP_TABLE) }
        var attrs: [Attribute] = [Attribute(nl16(RTA_DST.rawValue), bytes: destination)]
        var s = ipPrefix(namespace) + "route get \(formatAddress(destination))"
        if let source {
            h.rtm_src_len = UInt8(source.count * 8)
            attrs.append(Attribute(nl16(RTA_SRC.rawValue), bytes: source))
            s += " from \(formatAddress(source))"
        }
        if let mark {
            attrs.append(.u32(nl16(RTA_MARK.rawValue), mark))
            s += " mark 0x\(String(mark, radix: 16))"
        }
        if let inputInterface {
            attrs.append(.i32(nl16(RTA_IIF.rawValue), inputInterface))
            s += " iif \(inputInterface)"
        }
        if let outputInterface {
            attrs.append(.i32(nl16(RTA_OIF.rawValue), outputInterface))
            s += " oif \(outputInterface)"
        }
        return Request(type: nl16(RTM_GETROUTE), flags: [.request], header: h, attributes: attrs, summary: s)
    }
}

extension NetlinkSocket {
    /// Every route in every table. Equivalent to `ip route show table all` and `ip -6 route show table all`.
    public func routes(namespace: String? = nil) throws -> [RouteInfo] {
        try dump(RouteRequest.dump(namespace: namespace)).filter { $0.type == nl16(RTM_NEWROUTE) }.map(RouteInfo.init)
    }

    /// Where a packet to `destination` would go. Equivalent to `ip route get DST [mark M] …`.
    public func routeGet(namespace: String? = nil, destination: [UInt8], source: [UInt8]? = nil, mark: UInt32? = nil,
                         inputInterface: Int32? = nil, outputInterface: Int32? = nil) throws -> RouteInfo {
        let req = RouteRequest.get(namespace: namespace, destination: destination, source: source, mark: mark,
                                   inputInterface: inputInterface, outputInterface: outputInterface)
        guard let reply = try request(req).first(where: { $0.type == nl16(RTM_NEWROUTE) }) else {
            throw MalformedMessage("\(req.summary): no RTM_NEWROUTE in the reply")
        }
        return try RouteInfo(reply)
    }
}
