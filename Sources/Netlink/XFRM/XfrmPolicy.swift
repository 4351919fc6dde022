import CNetlink
import Glibc

/// One transform a policy asks for (`struct xfrm_user_tmpl`): which SA to use or to acquire.
public struct XfrmTemplate: Sendable, Hashable, CustomStringConvertible {
    /// Outer addresses (tunnel mode); empty or zero for transport mode.
    public var source: [UInt8]
    public var destination: [UInt8]
    public var proto: XfrmProtocol
    public var rawProtocol: UInt8
    public var mode: XfrmMode
    public var reqid: UInt32
    /// 0: any SPI.
    public var spi: UInt32
    /// `level use` rather than `level required`: the transform may be missing on input.
    public var optional: Bool

    public init(source: [UInt8], destination: [UInt8], proto: XfrmProtocol = .esp, mode: XfrmMode = .tunnel,
                reqid: UInt32 = 0, spi: UInt32 = 0, optional: Bool = false) {
        self.source = source
        self.destination = destination
        self.proto = proto
        self.rawProtocol = proto.rawValue
        self.mode = mode
        self.reqid = reqid
        self.spi = spi
        self.optional = optional
    }

    /// `tmpl src S dst D proto esp [spi X] reqid R mode tunnel [level use]`.
    public var description: String {
        var s = "tmpl"
        if !source.isEmpty && !source.allSatisfy({ $0 == 0 }) { s += " src \(formatAddress(source))" }
        if !destination.isEmpty && !destination.allSatisfy({ $0 == 0 }) { s += " dst \(formatAddress(destination))" }
        s += " proto \(XfrmProtocol.name(rawProtocol))"
        if spi != 0 { s += " spi \(hex(spi))" }
        s += " reqid \(reqid) mode \(mode)"
        if optional { s += " level use" }
        return s
    }
}

/// An IPsec policy (SPD entry): what to add with `XfrmPolicyRequest.add`, and what a dump or an
/// `ACQUIRE` reads back.
public struct XfrmPolicy: Sendable, Hashable, CustomStringConvertible {
    public enum Action: UInt8, Sendable, Hashable {
        case allow = 0
        case block = 1
    }

    public var selector: XfrmSelector
    public var direction: XfrmDirection
    public var action: Action
    public var priority: UInt32
    /// Set by the kernel (read back); 0 when adding lets it choose.
    public var index: UInt32
    /// `XFRMA_MARK`: the policy applies to packets whose mark matches.
    public var mark: XfrmMark?
    /// `XFRMA_IF_ID`: the xfrm interface the policy belongs to.
    public var interfaceID: UInt32?
    public var templates: [XfrmTemplate]
    public var limits: XfrmLifetimeLimits
    /// Read back.
    public var counters: XfrmLifetimeCounters

    public init(selector: XfrmSelector, direction: XfrmDirection, action: Action = .allow, priority: UInt32 = 0,
                index: UInt32 = 0, mark: XfrmMark? = nil, interfaceID: UInt32? = nil, templates: [XfrmTemplate] = [],
                limits: XfrmLifetimeLimits = .unlimited) {
        self.selector = selector
        self.direction = direction
        self.action = action
        self.priority = priority
        self.index = index
        self.mark = mark
        self.interfaceID = interfaceID
        self.templates = templates
        self.limits = limits
        self.counters = XfrmLifetimeCounters()
    }

    /// Parses `XFRM_MSG_NEWPOLICY` (a dump entry or a notification).
    public init(_ message: Message) throws {
        guard let info = Bytes.load(xfrm_userpolicy_info.self, from: message.payload) else {
            throw MalformedMessage("XFRM policy of \(message.payload.count) bytes is shorter than struct xfrm_userpolicy_info")
        }
        try self.init(info: info, attributes: message.attributes(after: MemoryLayout<xfrm_userpolicy_info>.stride))
    }

    init(info: xfrm_userpolicy_info, attributes attrs: Attributes) throws {
        let family = info.sel.family == 0 ? UInt16(AF_INET) : info.sel.family
        self.init(selector: XfrmStructs.selector(info.sel, fallbackFamily: family),
                  direction: XfrmDirection(rawValue: info.dir) ?? .out, action: Action(rawValue: info.action) ?? .allow,
                  priority: info.priority, index: info.index, mark: XfrmStructs.mark(attrs),
                  interfaceID: attrs[XFRMA_IF_ID]?.u32, templates: XfrmStructs.templates(attrs),
                  limits: XfrmStructs.limits(info.lft))
        counters = XfrmStructs.counters(info.curlft)
    }

    /// The `ip xfrm policy add` arguments after `add`.
    public var arguments: String {
        var s = "\(selector) dir \(direction)"
        if let mark { s += " mark \(mark.arguments)" }
        if index != 0 { s += " index \(index)" }
        if action == .block { s += " action block" }
        if priority != 0 { s += " priority \(priority)" }
        if let interfaceID { s += " if_id \(hex(interfaceID))" }
        s += limits.arguments
        for t in templates { s += " \(t)" }
        return s
    }

    public var description: String { arguments }

    /// Several lines in the shape of `ip xfrm policy`, for `xfrmlab show`.
    public var lines: [String] {
        var out = ["\(selector)"]
        out.append("\tdir \(direction) priority \(priority) index \(index)" + (action == .block ? " action block" : ""))
        if let mark { out.append("\tmark \(mark)") }
        if let interfaceID { out.append("\tif_id \(hex(interfaceID))") }
        for t in templates { out.append("\t\(t)") }
        return out
    }
}

/// Policy requests (`XFRM_MSG_*POLICY` on `NETLINK_XFRM`), each documented as the
/// `ip xfrm policy` command it equals.
public enum XfrmPolicyRequest {
    static func info(_ p: XfrmPolicy) -> xfrm_userpolicy_info {
        var info = xfrm_userpolicy_info()
        info.sel = XfrmStructs.selector(p.selector)
        info.lft = XfrmStructs.limits(p.limits)
        info.priority = p.priority
        info.index = p.index
        info.dir = p.direction.rawValue
        info.action = p.action.rawValue
        return info
    }

    static func attributes(_ p: XfrmPolicy) -> [Attribute] {
        var attrs: [Attribute] = []
        if !p.templates.isEmpty { attrs.append(XfrmStructs.attribute(p.templates)) }
        if let m = p.mark { attrs.append(XfrmStructs.attribute(m)) }
        if let i = p.interfaceID { attrs.append(.u32(nl16(XFRMA_IF_ID), i)) }
        return attrs
    }

    /// Adds a policy; `EEXIST` when one with the same selector, direction, mark and if_id exists.
    ///
    /// Equivalent to `ip xfrm policy add src S/L dst D/L dir out mark 0x1 mask 0xff priority P if_id I
    /// tmpl src A dst B proto esp reqid R mode tunnel`.
    public static func add(namespace: String?, _ policy: XfrmPolicy, origin: String? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_NEWPOLICY), flags: .add, headerBytes: XfrmStructs.header(info(policy)),
                attributes: attributes(policy), summary: ipPrefix(namespace) + "xfrm policy add " + policy.arguments,
                origin: origin)
    }

    /// Adds or replaces. Equivalent to `ip xfrm policy update …`.
    public static func update(namespace: String?, _ policy: XfrmPolicy, origin: String? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_UPDPOLICY), flags: .modify, headerBytes: XfrmStructs.header(info(policy)),
                attributes: attributes(policy), summary: ipPrefix(namespace) + "xfrm policy update " + policy.arguments,
                origin: origin)
    }

    static func identity(selector: XfrmSelector, direction: XfrmDirection, index: UInt32) -> xfrm_userpolicy_id {
        var id = xfrm_userpolicy_id()
        id.sel = XfrmStructs.selector(selector)
        id.index = index
        id.dir = direction.rawValue
        return id
    }

    static func lookup(_ verb: String, type: Int32, namespace: String?, selector: XfrmSelector, direction: XfrmDirection,
                       mark: XfrmMark?, interfaceID: UInt32?, index: UInt32) -> Request {
        var attrs: [Attribute] = []
        if let mark { attrs.append(XfrmStructs.attribute(mark)) }
        if let interfaceID { attrs.append(.u32(nl16(XFRMA_IF_ID), interfaceID)) }
        var s = ipPrefix(namespace) + "xfrm policy \(verb) "
        s += index != 0 ? "index \(index) dir \(direction)" : "\(selector) dir \(direction)"
        if let mark { s += " mark \(mark.arguments)" }
        if let interfaceID { s += " if_id \(hex(interfaceID))" }
        return Request(type: nl16(type), flags: .modify,
                       headerBytes: XfrmStructs.header(identity(selector: selector, direction: direction, index: index)),
                       attributes: attrs, summary: s)
    }

    /// Equivalent to `ip xfrm policy delete SELECTOR dir D [mark M mask MM] [if_id I]`
    /// (or `… delete index N dir D` when `index` is given).
    public static func delete(namespace: String?, selector: XfrmSelector, direction: XfrmDirection, mark: XfrmMark? = nil,
                              interfaceID: UInt32? = nil, index: UInt32 = 0) -> Request {
        lookup("delete", type: Int32(XFRM_MSG_DELPOLICY), namespace: namespace, selector: selector, direction: direction,
               mark: mark, interfaceID: interfaceID, index: index)
    }

    /// Equivalent to `ip xfrm policy get SELECTOR dir D [mark M mask MM] [if_id I]`.
    public static func get(namespace: String?, selector: XfrmSelector, direction: XfrmDirection, mark: XfrmMark? = nil,
                           interfaceID: UInt32? = nil, index: UInt32 = 0) -> Request {
        lookup("get", type: Int32(XFRM_MSG_GETPOLICY), namespace: namespace, selector: selector, direction: direction,
               mark: mark, interfaceID: interfaceID, index: index)
    }

    /// Equivalent to `ip xfrm policy show` (a dump, no fixed header, as iproute2 sends it).
    public static func dump(namespace: String?) -> Request {
        Request(type: nl16(XFRM_MSG_GETPOLICY), flags: .dump, headerBytes: [], summary: ipPrefix(namespace) + "xfrm policy show")
    }

    /// Removes every main-type policy. Equivalent to `ip xfrm policy flush`.
    public static func flush(namespace: String?) -> Request {
        Request(type: nl16(XFRM_MSG_FLUSHPOLICY), flags: .modify, headerBytes: [], summary: ipPrefix(namespace) + "xfrm policy flush")
    }
}

extension NetlinkSocket {
    /// Every policy in the socket's namespace (an `NETLINK_XFRM` socket). Equivalent to `ip xfrm policy`.
    public func xfrmPolicies(namespace: String? = nil) throws -> [XfrmPolicy] {
        try dump(XfrmPolicyRequest.dump(namespace: namespace)).filter { $0.type == nl16(XFRM_MSG_NEWPOLICY) }.map(XfrmPolicy.init)
    }

    /// One policy, or nil when there is none (`ENOENT`). Equivalent to `ip xfrm policy get …`.
    public func xfrmPolicy(namespace: String? = nil, selector: XfrmSelector, direction: XfrmDirection, mark: XfrmMark? = nil,
                           interfaceID: UInt32? = nil) throws -> XfrmPolicy? {
        do {
            let replies = try request(XfrmPolicyRequest.get(namespace: namespace, selector: selector, direction: direction,
                                                            mark: mark, interfaceID: interfaceID))
            return try replies.first { $0.type == nl16(XFRM_MSG_NEWPOLICY) }.map(XfrmPolicy.init)
        } catch let e as NetlinkError where e.errno == ENOENT {
            return nil
        }
    }
}
