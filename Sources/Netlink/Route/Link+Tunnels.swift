import CNetlink
import Glibc

/// IPsec tunnel devices: VTI (IPv4 outer), VTI6 (IPv6 outer) and xfrm interfaces.
extension LinkRequest {
    /// A VTI device: traffic routed into it is marked with `outputKey` and so matches XFRM
    /// policies and states with that mark; ESP from `remote` to `local` comes out of it after
    /// decryption with states marked `inputKey`. The kind is `vti` for IPv4 endpoints and
    /// `vti6` for IPv6 ones.
    ///
    /// Equivalent to `ip link add NAME type vti local L remote R ikey K okey K [dev LINK] [fwmark F]`.
    public static func vti(namespace: String?, name: String, local: [UInt8], remote: [UInt8], inputKey: UInt32? = nil,
                           outputKey: UInt32? = nil, link: Int32? = nil, linkName: String? = nil, fwmark: UInt32? = nil,
                           up: Bool = true, origin: String? = nil) -> Request {
        let kind = remote.count == 16 ? "vti6" : "vti"
        var data: [Attribute] = [
            Attribute(nl16(IFLA_VTI_LOCAL), bytes: local),
            Attribute(nl16(IFLA_VTI_REMOTE), bytes: remote),
        ]
        // Keys are __be32 on the wire; the mark they stand for is the host-order value.
        if let inputKey { data.append(.u32(nl16(IFLA_VTI_IKEY), inputKey.bigEndian)) }
        if let outputKey { data.append(.u32(nl16(IFLA_VTI_OKEY), outputKey.bigEndian)) }
        if let link { data.append(.u32(nl16(IFLA_VTI_LINK), UInt32(bitPattern: link))) }
        if let fwmark { data.append(.u32(nl16(IFLA_VTI_FWMARK), fwmark)) }
        let attrs: [Attribute] = [
            .string(nl16(IFLA_IFNAME), name),
            .nest(nl16(IFLA_LINKINFO), [.string(nl16(IFLA_INFO_KIND), kind), .nest(nl16(IFLA_INFO_DATA), data)]),
        ]
        var s = ipPrefix(namespace) + "link add \(name) type \(kind) local \(formatAddress(local)) remote \(formatAddress(remote))"
        if let inputKey { s += " ikey \(inputKey)" }
        if let outputKey { s += " okey \(outputKey)" }
        if let link { s += " dev \(linkName ?? "#\(link)")" }
        if let fwmark { s += " fwmark \(hex(fwmark))" }
        if up { s += " && ip link set \(name) up" }
        return Request(type: nl16(RTM_NEWLINK), flags: .add, header: header(up: up), attributes: attrs, summary: s, origin: origin)
    }

    /// An xfrm interface: traffic routed into it uses policies and states with `XFRMA_IF_ID`
    /// `interfaceID`; decrypted traffic of such states comes out of it. With `external`
    /// (collect-metadata mode, Linux 6.2+) one device serves every if_id, chosen per packet.
    ///
    /// Equivalent to `ip link add NAME type xfrm [dev LINK] if_id I [external]`.
    public static func xfrmInterface(namespace: String?, name: String, interfaceID: UInt32?, link: Int32? = nil,
                                     linkName: String? = nil, external: Bool = false, up: Bool = true,
                                     origin: String? = nil) -> Request {
        var data: [Attribute] = []
        if let link { data.append(.u32(nl16(IFLA_XFRM_LINK), UInt32(bitPattern: link))) }
        if let interfaceID { data.append(.u32(nl16(IFLA_XFRM_IF_ID), interfaceID)) }
        if external { data.append(.flag(nl16(IFLA_XFRM_COLLECT_METADATA))) }
        var info: [Attribute] = [.string(nl16(IFLA_INFO_KIND), "xfrm")]
        if !data.isEmpty { info.append(.nest(nl16(IFLA_INFO_DATA), data)) }
        let attrs: [Attribute] = [.string(nl16(IFLA_IFNAME), name), .nest(nl16(IFLA_LINKINFO), info)]
        var s = ipPrefix(namespace) + "link add \(name) type xfrm"
        if let link { s += " dev \(linkName ?? "#\(link)")" }
        if let interfaceID { s += " if_id \(hex(interfaceID))" }
        if external { s += " external" }
        if up { s += " && ip link set \(name) up" }
        return Request(type: nl16(RTM_NEWLINK), flags: .add, header: header(up: up), attributes: attrs, summary: s, origin: origin)
    }

    /// Changes an existing xfrm interface's if_id (and lower device): `RTM_NEWLINK` without
    /// `NLM_F_CREATE` on its index, which the kernel hands to the kind's changelink.
    ///
    /// Equivalent to `ip link set dev NAME type xfrm [dev LINK] if_id I`.
    public static func changeXfrmInterface(namespace: String?, index: Int32, name: String, interfaceID: UInt32,
                                           link: Int32? = nil, linkName: String? = nil, origin: String? = nil) -> Request {
        change(namespace: namespace, index: index, name: name, .xfrm(interfaceID: interfaceID, link: link, linkName: linkName), origin: origin)
    }
}

/// A tunnel device read back from the kernel, with its kind-specific settings
/// (`IFLA_INFO_DATA` of kind `vti`, `vti6` or `xfrm`).
public struct TunnelLinkInfo: Sendable, Hashable, CustomStringConvertible {
    public var link: LinkInfo
    public var kind: String
    // VTI
    public var local: [UInt8]?
    public var remote: [UInt8]?
    public var inputKey: UInt32?
    public var outputKey: UInt32?
    public var fwmark: UInt32?
    /// The lower device (`IFLA_VTI_LINK` or `IFLA_XFRM_LINK`).
    public var lowerIndex: Int32?
    // xfrm
    public var interfaceID: UInt32?
    /// `IFLA_XFRM_COLLECT_METADATA` was reported: the device is in external mode.
    public var external: Bool

    /// The kinds this type reads.
    public static let kinds: Set<String> = ["vti", "vti6", "xfrm"]

    /// Nil for a message that is not a tunnel of one of `kinds`.
    public init?(_ message: Message) throws {
        let link = try LinkInfo(message)
        guard let kind = link.kind, TunnelLinkInfo.kinds.contains(kind) else { return nil }
        self.link = link
        self.kind = kind
        external = false
        let attrs = try message.attributes(after: MemoryLayout<ifinfomsg>.size)
        guard let info = try attrs[IFLA_LINKINFO]?.children(), let data = try info[IFLA_INFO_DATA]?.children() else { return }
        if kind == "xfrm" {
            interfaceID = data[IFLA_XFRM_IF_ID]?.u32
            lowerIndex = data[IFLA_XFRM_LINK]?.u32.map { Int32(bitPattern: $0) }
            external = data[IFLA_XFRM_COLLECT_METADATA] != nil
        } else {
            local = data[IFLA_VTI_LOCAL]?.payload
            remote = data[IFLA_VTI_REMOTE]?.payload
            inputKey = data[IFLA_VTI_IKEY]?.u32.map { UInt32(bigEndian: $0) }
            outputKey = data[IFLA_VTI_OKEY]?.u32.map { UInt32(bigEndian: $0) }
            fwmark = data[IFLA_VTI_FWMARK]?.u32
            lowerIndex = data[IFLA_VTI_LINK]?.u32.map { Int32(bitPattern: $0) }.flatMap { $0 == 0 ? nil : $0 }
        }
    }

    /// `NAME: kind vti local L remote R ikey K okey K` or `NAME: kind xfrm if_id 0x7 dev #2 [external]`.
    public var description: String {
        var s = "\(link.name): \(kind)"
        if kind == "xfrm" {
            if let interfaceID { s += " if_id \(hex(interfaceID))" }
            if external { s += " external" }
        } else {
            if let local { s += " local \(formatAddress(local))" }
            if let remote { s += " remote \(formatAddress(remote))" }
            if let inputKey { s += " ikey \(inputKey)" }
            if let outputKey { s += " okey \(outputKey)" }
            if let fwmark, fwmark != 0 { s += " fwmark \(hex(fwmark))" }
        }
        if let lowerIndex, lowerIndex != 0 { s += " dev #\(lowerIndex)" }
        s += link.isUp ? " UP" : " DOWN"
        return s
    }
}

extension NetlinkSocket {
    /// The VTI, VTI6 and xfrm devices in the socket's namespace, with their settings.
    /// Equivalent to `ip -d link show type vti; … type vti6; … type xfrm`.
    public func tunnelLinks(namespace: String? = nil) throws -> [TunnelLinkInfo] {
        try dump(LinkRequest.dump(namespace: namespace)).filter { $0.type == nl16(RTM_NEWLINK) }.compactMap { try TunnelLinkInfo($0) }
    }
}

/// The kind-specific settings of an existing device to change in place (`RTM_NEWLINK` without
/// `NLM_F_CREATE` on its index, which the kernel hands to the kind's changelink). Only what is
/// given is sent; the kernel keeps the rest, or (VTI) takes what is missing as zero, as it does
/// for `ip link set … type vti`.
public enum LinkChange: Sendable {
    /// An xfrm interface: its if_id and lower device.
    case xfrm(interfaceID: UInt32?, link: Int32? = nil, linkName: String? = nil)
    /// A VTI (IPv4 outer) device.
    case vti(VtiSettings)
    /// A VTI6 (IPv6 outer) device.
    case vti6(VtiSettings)
    /// A bridge's options.
    case bridge(BridgeSettings)
    /// Any other kind: its `IFLA_INFO_DATA` attributes as they are, and the words for them.
    case other(kind: String, data: [Attribute], words: String)

    public struct VtiSettings: Sendable {
        public var local: [UInt8]?
        public var remote: [UInt8]?
        public var inputKey: UInt32?
        public var outputKey: UInt32?
        public var link: Int32?
        public var fwmark: UInt32?
        public init(local: [UInt8]? = nil, remote: [UInt8]? = nil, inputKey: UInt32? = nil, outputKey: UInt32? = nil,
                    link: Int32? = nil, fwmark: UInt32? = nil) {
            (self.local, self.remote, self.inputKey, self.outputKey, self.link, self.fwmark) = (local, remote, inputKey, outputKey, link, fwmark)
        }
    }

    public struct BridgeSettings: Sendable {
        /// Centiseconds (clock_t), as `ip link` takes them.
        public var forwardDelay: UInt32?
        public var ageingTime: UInt32?
        public var stpState: UInt32?
        public var vlanFiltering: Bool?
        public init(forwardDelay: UInt32? = nil, ageingTime: UInt32? = nil, stpState: UInt32? = nil, vlanFiltering: Bool? = nil) {
            (self.forwardDelay, self.ageingTime, self.stpState, self.vlanFiltering) = (forwardDelay, ageingTime, stpState, vlanFiltering)
        }
    }

    var kind: String {
        switch self {
        case .xfrm: return "xfrm"
        case .vti: return "vti"
        case .vti6: return "vti6"
        case .bridge: return "bridge"
        case .other(let kind, _, _): return kind
        }
    }

    /// `IFLA_INFO_DATA`'s attributes and the `ip link set` words for them.
    var encoded: (data: [Attribute], words: String) {
        switch self {
        case .xfrm(let interfaceID, let link, let linkName):
            var data: [Attribute] = [], words = ""
            if let link { data.append(.u32(nl16(IFLA_XFRM_LINK), UInt32(bitPattern: link))); words += " dev \(linkName ?? "#\(link)")" }
            if let interfaceID { data.append(.u32(nl16(IFLA_XFRM_IF_ID), interfaceID)); words += " if_id \(hex(interfaceID))" }
            return (data, words)
        case .vti(let v), .vti6(let v):
            var data: [Attribute] = [], words = ""
            if let local = v.local { data.append(Attribute(nl16(IFLA_VTI_LOCAL), bytes: local)); words += " local \(formatAddress(local))" }
            if let remote = v.remote { data.append(Attribute(nl16(IFLA_VTI_REMOTE), bytes: remote)); words += " remote \(formatAddress(remote))" }
            // Keys are __be32 on the wire, as at creation.
            if let k = v.inputKey { data.append(.u32(nl16(IFLA_VTI_IKEY), k.bigEndian)); words += " ikey \(k)" }
            if let k = v.outputKey { data.append(.u32(nl16(IFLA_VTI_OKEY), k.bigEndian)); words += " okey \(k)" }
            if let link = v.link { data.append(.u32(nl16(IFLA_VTI_LINK), UInt32(bitPattern: link))); words += " dev #\(link)" }
            if let f = v.fwmark { data.append(.u32(nl16(IFLA_VTI_FWMARK), f)); words += " fwmark \(hex(f))" }
            return (data, words)
        case .bridge(let b):
            var data: [Attribute] = [], words = ""
            if let v = b.forwardDelay { data.append(.u32(nl16(IFLA_BR_FORWARD_DELAY), v)); words += " forward_delay \(v)" }
            if let v = b.ageingTime { data.append(.u32(nl16(IFLA_BR_AGEING_TIME), v)); words += " ageing_time \(v)" }
            if let v = b.stpState { data.append(.u32(nl16(IFLA_BR_STP_STATE), v)); words += " stp_state \(v)" }
            if let v = b.vlanFiltering { data.append(.u8(nl16(IFLA_BR_VLAN_FILTERING), v ? 1 : 0)); words += " vlan_filtering \(v ? 1 : 0)" }
            return (data, words)
        case .other(_, let data, let words):
            return (data, words.isEmpty ? "" : " " + words)
        }
    }
}

extension LinkRequest {
    /// Changes an existing device's kind-specific settings, typed per kind like the requests
    /// that create them; the kernel's answer (and extended ack) comes back as for any request.
    ///
    /// Equivalent to `ip link set dev NAME type KIND …`.
    public static func change(namespace: String?, index: Int32, name: String, _ change: LinkChange, origin: String? = nil) -> Request {
        let (data, words) = change.encoded
        var info: [Attribute] = [.string(nl16(IFLA_INFO_KIND), change.kind)]
        if !data.isEmpty { info.append(.nest(nl16(IFLA_INFO_DATA), data)) }
        let s = ipPrefix(namespace) + "link set dev \(name) type \(change.kind)" + words
        return Request(type: nl16(RTM_NEWLINK), flags: .modify, header: header(index: index), attributes: [.nest(nl16(IFLA_LINKINFO), info)],
                       summary: s, origin: origin)
    }
}

extension NetlinkSocket {
    /// A device's kind-specific attributes as the kernel reports them (`IFLA_INFO_DATA` of
    /// `ip -d link show NAME`), by attribute type; nil when the device reports none.
    public func kindAttributes(of name: String, namespace: String? = nil) throws -> (kind: String?, data: [UInt16: [UInt8]])? {
        guard let message = try request(LinkRequest.get(namespace: namespace, name: name)).first(where: { $0.type == nl16(RTM_NEWLINK) }) else { return nil }
        let attrs = try message.attributes(after: MemoryLayout<ifinfomsg>.size)
        guard let info = try attrs[IFLA_LINKINFO]?.children() else { return nil }
        let kind = info[IFLA_INFO_KIND]?.string
        var data: [UInt16: [UInt8]] = [:]
        for entry in try info[IFLA_INFO_DATA]?.children() ?? Attributes(entries: []) { data[entry.type] = entry.payload }
        return (kind, data)
    }
}
