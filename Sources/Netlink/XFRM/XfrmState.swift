import CNetlink
import Glibc

/// An IPsec security association (SA): what to add with `XfrmStateRequest.add`, and what a
/// dump reads back (then with the lifetime counters and statistics filled in).
///
/// Keys are `XfrmKey`s, which print as `<key N bits>`: a state can be logged safely.
public struct XfrmState: Sendable, Hashable, CustomStringConvertible {
    /// Outer source and destination (network-order bytes, 4 or 16).
    public var source: [UInt8]
    public var destination: [UInt8]
    public var proto: XfrmProtocol
    /// The raw protocol number, when the kernel reported one this type does not name.
    public var rawProtocol: UInt8
    public var spi: UInt32
    public var mode: XfrmMode
    public var reqid: UInt32
    /// Inner traffic the state applies to; `.any` for a tunnel-mode state used by both families.
    public var selector: XfrmSelector
    public var algorithms: [XfrmAlgorithm]
    public var encapsulation: XfrmEncapsulation?
    /// `XFRMA_MARK`: the state applies to packets whose mark matches.
    public var mark: XfrmMark?
    /// `XFRMA_SET_MARK` and `XFRMA_SET_MARK_MASK` (`output-mark`): the mark given to packets
    /// the state produced (after encryption, or after decryption on input).
    public var outputMark: XfrmMark?
    /// `XFRMA_IF_ID`: the xfrm interface the state belongs to.
    public var interfaceID: UInt32?
    public var replayWindow: UInt8
    /// `XFRM_STATE_*` flags (`afUnspec` …).
    public var flags: UInt8
    public var limits: XfrmLifetimeLimits
    /// Read back: what went through it.
    public var counters: XfrmLifetimeCounters
    /// Read back: replay and integrity failures.
    public var statistics: XfrmStateStatistics

    public init(source: [UInt8], destination: [UInt8], proto: XfrmProtocol = .esp, spi: UInt32,
                mode: XfrmMode = .tunnel, reqid: UInt32 = 0, selector: XfrmSelector = .any,
                algorithms: [XfrmAlgorithm], encapsulation: XfrmEncapsulation? = nil, mark: XfrmMark? = nil,
                outputMark: XfrmMark? = nil, interfaceID: UInt32? = nil, replayWindow: UInt8 = 0, flags: UInt8 = 0,
                limits: XfrmLifetimeLimits = .unlimited) {
        self.source = source
        self.destination = destination
        self.proto = proto
        self.rawProtocol = proto.rawValue
        self.spi = spi
        self.mode = mode
        self.reqid = reqid
        self.selector = selector
        self.algorithms = algorithms
        self.encapsulation = encapsulation
        self.mark = mark
        self.outputMark = outputMark
        self.interfaceID = interfaceID
        self.replayWindow = replayWindow
        self.flags = flags
        self.limits = limits
        self.counters = XfrmLifetimeCounters()
        self.statistics = XfrmStateStatistics()
    }

    /// The outer family (`AF_INET` or `AF_INET6`).
    public var family: UInt16 { XfrmStructs.family(of: destination) }

    /// `XFRM_STATE_AF_UNSPEC`: keep an all-zero selector family-less. Without it the kernel gives
    /// the selector the outer family, and a tunnel-mode SA then carries only that inner family.
    public static let afUnspec: UInt8 = 32

    static let flagNames: [(UInt8, String)] = [(1, "noecn"), (2, "decap-dscp"), (4, "nopmtudisc"), (8, "wildrecv"),
                                               (16, "icmp"), (32, "af-unspec"), (64, "align4"), (128, "esn")]

    /// Parses `XFRM_MSG_NEWSA` (a dump entry or a notification).
    public init(_ message: Message) throws {
        try self.init(payload: message.payload[...])
    }

    /// Parses a `struct xfrm_usersa_info` and the attributes after it.
    init(payload: ArraySlice<UInt8>) throws {
        guard let info = Bytes.load(xfrm_usersa_info.self, from: payload) else {
            throw MalformedMessage("XFRM state of \(payload.count) bytes is shorter than struct xfrm_usersa_info")
        }
        let start = payload.startIndex + MemoryLayout<xfrm_usersa_info>.stride
        let attrs = start <= payload.endIndex ? try Attributes(parsing: payload[start...]) : Attributes(entries: [])
        try self.init(info: info, attributes: attrs)
    }

    init(info: xfrm_usersa_info, attributes attrs: Attributes) throws {
        let family = info.family
        self.init(source: XfrmStructs.bytes(info.saddr, family: family),
                  destination: XfrmStructs.bytes(info.id.daddr, family: family),
                  proto: XfrmProtocol(rawValue: info.id.proto) ?? .esp, spi: UInt32(bigEndian: info.id.spi),
                  mode: XfrmMode(rawValue: info.mode) ?? .tunnel, reqid: info.reqid,
                  selector: XfrmStructs.selector(info.sel, fallbackFamily: family),
                  algorithms: XfrmStructs.algorithms(attrs), encapsulation: XfrmStructs.encapsulation(attrs, family: family),
                  mark: XfrmStructs.mark(attrs), interfaceID: attrs[XFRMA_IF_ID]?.u32,
                  replayWindow: info.replay_window, flags: info.flags, limits: XfrmStructs.limits(info.lft))
        rawProtocol = info.id.proto
        if let set = attrs[XFRMA_SET_MARK]?.u32 {
            outputMark = XfrmMark(set, mask: attrs[XFRMA_SET_MARK_MASK]?.u32 ?? .max)
        }
        counters = XfrmStructs.counters(info.curlft)
        statistics.replayWindow = info.stats.replay_window
        statistics.replay = info.stats.replay
        statistics.integrityFailed = info.stats.integrity_failed
    }

    /// The `ip xfrm state add` arguments after `add`, keys shown only when `revealingKeys`.
    public func arguments(revealingKeys: Bool = false) -> String {
        var s = "src \(formatAddress(source)) dst \(formatAddress(destination)) proto \(XfrmProtocol.name(rawProtocol)) spi \(hex(spi))"
        if reqid != 0 { s += " reqid \(reqid)" }
        s += " mode \(mode)"
        if replayWindow != 0 { s += " replay-window \(replayWindow)" }
        if flags != 0 { s += " flag " + Self.flagNames.filter { flags & $0.0 != 0 }.map(\.1).joined(separator: " ") }
        if !selector.isAny { s += " sel \(selector)" }
        for a in algorithms { s += " " + a.arguments(revealingKeys: revealingKeys) }
        if let mark { s += " mark \(mark.arguments)" }
        s += limits.arguments
        if let encapsulation { s += " \(encapsulation)" }
        if let outputMark { s += " output-mark \(outputMark.arguments)" }
        if let interfaceID { s += " if_id \(hex(interfaceID))" }
        return s
    }

    /// One line, `ip xfrm state`-like, with the counters; keys hidden.
    public var description: String {
        var s = arguments()
        s += " (current \(counters); \(statistics))"
        return s
    }

    /// Several lines in the shape of `ip -s xfrm state` (keys hidden), for `xfrmlab show`.
    public var lines: [String] {
        var out = ["src \(formatAddress(source)) dst \(formatAddress(destination))"]
        var line = "\tproto \(XfrmProtocol.name(rawProtocol)) spi \(hex(spi)) reqid \(reqid) mode \(mode)"
        line += " replay-window \(replayWindow)"
        if flags != 0 { line += " flag " + Self.flagNames.filter { flags & $0.0 != 0 }.map(\.1).joined(separator: " ") }
        out.append(line)
        if let mark { out.append("\tmark \(mark)") }
        if let outputMark { out.append("\toutput-mark \(outputMark)") }
        if let interfaceID { out.append("\tif_id \(hex(interfaceID))") }
        for a in algorithms { out.append("\t\(a)") }
        if let encapsulation { out.append("\t\(encapsulation)") }
        if !selector.isAny { out.append("\tsel \(selector)") }
        out.append("\tlifetime current: \(counters)")
        out.append("\tstats: \(statistics)")
        return out
    }
}

/// State requests (`XFRM_MSG_*SA` on `NETLINK_XFRM`), each documented as the `ip xfrm state`
/// command it equals. Keys appear in summaries as `<key N bits>`.
public enum XfrmStateRequest {
    static func info(_ s: XfrmState) -> xfrm_usersa_info {
        var info = xfrm_usersa_info()
        info.sel = XfrmStructs.selector(s.selector)
        info.id.daddr = XfrmStructs.address(s.destination)
        info.id.spi = s.spi.bigEndian
        info.id.proto = s.rawProtocol
        info.saddr = XfrmStructs.address(s.source)
        info.lft = XfrmStructs.limits(s.limits)
        info.reqid = s.reqid
        info.family = s.family
        info.mode = s.mode.rawValue
        info.replay_window = s.replayWindow
        info.flags = s.flags
        return info
    }

    static func attributes(_ s: XfrmState) -> [Attribute] {
        var attrs = s.algorithms.map(XfrmStructs.attribute)
        if let e = s.encapsulation { attrs.append(XfrmStructs.attribute(e)) }
        if let m = s.mark { attrs.append(XfrmStructs.attribute(m)) }
        if let o = s.outputMark {
            attrs.append(.u32(nl16(XFRMA_SET_MARK), o.value))
            attrs.append(.u32(nl16(XFRMA_SET_MARK_MASK), o.mask))
        }
        if let i = s.interfaceID { attrs.append(.u32(nl16(XFRMA_IF_ID), i)) }
        return attrs
    }

    /// Adds a state; refused with `EEXIST` when one with the same (dst, spi, proto, mark) exists.
    ///
    /// Equivalent to `ip xfrm state add src S dst D proto esp spi SPI reqid R mode tunnel
    /// aead 'rfc4106(gcm(aes))' <key 160 bits> 128 mark 0x1 mask 0xff output-mark … if_id I`.
    public static func add(namespace: String?, _ state: XfrmState, origin: String? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_NEWSA), flags: .add, headerBytes: XfrmStructs.header(info(state)),
                attributes: attributes(state), summary: ipPrefix(namespace) + "xfrm state add " + state.arguments(),
                origin: origin)
    }

    /// Replaces an existing state's changeable parts. Equivalent to `ip xfrm state update …`.
    public static func update(namespace: String?, _ state: XfrmState, origin: String? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_UPDSA), flags: .modify, headerBytes: XfrmStructs.header(info(state)),
                attributes: attributes(state), summary: ipPrefix(namespace) + "xfrm state update " + state.arguments(),
                origin: origin)
    }

    static func identity(destination: [UInt8], spi: UInt32, proto: XfrmProtocol) -> xfrm_usersa_id {
        var id = xfrm_usersa_id()
        id.daddr = XfrmStructs.address(destination)
        id.spi = spi.bigEndian
        id.family = XfrmStructs.family(of: destination)
        id.proto = proto.rawValue
        return id
    }

    static func identityArguments(destination: [UInt8], spi: UInt32, proto: XfrmProtocol, mark: XfrmMark?) -> String {
        "dst \(formatAddress(destination)) proto \(proto) spi \(hex(spi))" + (mark.map { " mark \($0.arguments)" } ?? "")
    }

    /// Equivalent to `ip xfrm state delete dst D proto P spi SPI [mark M mask MM]`.
    public static func delete(namespace: String?, destination: [UInt8], spi: UInt32, proto: XfrmProtocol = .esp,
                              mark: XfrmMark? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_DELSA), flags: .modify,
                headerBytes: XfrmStructs.header(identity(destination: destination, spi: spi, proto: proto)),
                attributes: mark.map { [XfrmStructs.attribute($0)] } ?? [],
                summary: ipPrefix(namespace) + "xfrm state delete " + identityArguments(destination: destination, spi: spi, proto: proto, mark: mark))
    }

    /// Equivalent to `ip xfrm state get dst D proto P spi SPI [mark M mask MM]`.
    public static func get(namespace: String?, destination: [UInt8], spi: UInt32, proto: XfrmProtocol = .esp,
                           mark: XfrmMark? = nil) -> Request {
        Request(type: nl16(XFRM_MSG_GETSA), flags: .modify,
                headerBytes: XfrmStructs.header(identity(destination: destination, spi: spi, proto: proto)),
                attributes: mark.map { [XfrmStructs.attribute($0)] } ?? [],
                summary: ipPrefix(namespace) + "xfrm state get " + identityArguments(destination: destination, spi: spi, proto: proto, mark: mark))
    }

    /// Equivalent to `ip -s xfrm state show` (a dump). No fixed header is sent, as iproute2 does:
    /// the kernel reads a dump request's attributes right after the netlink header.
    public static func dump(namespace: String?) -> Request {
        Request(type: nl16(XFRM_MSG_GETSA), flags: .dump, headerBytes: [], summary: ipPrefix(namespace) + "xfrm state show")
    }

    /// Removes every state (of `proto`, or of every IPsec protocol). Equivalent to `ip xfrm state flush [proto P]`.
    public static func flush(namespace: String?, proto: XfrmProtocol? = nil) -> Request {
        var h = xfrm_usersa_flush()
        h.proto = proto?.rawValue ?? 255  // IPSEC_PROTO_ANY (linux/ipsec.h)
        return Request(type: nl16(XFRM_MSG_FLUSHSA), flags: .modify, headerBytes: XfrmStructs.header(h),
                       summary: ipPrefix(namespace) + "xfrm state flush" + (proto.map { " proto \($0)" } ?? ""))
    }
}

extension NetlinkSocket {
    /// Every state in the socket's namespace (an `NETLINK_XFRM` socket). Equivalent to `ip -s xfrm state`.
    public func xfrmStates(namespace: String? = nil) throws -> [XfrmState] {
        try dump(XfrmStateRequest.dump(namespace: namespace)).filter { $0.type == nl16(XFRM_MSG_NEWSA) }.map(XfrmState.init)
    }

    /// One state, or nil when there is none (`ESRCH`). Equivalent to `ip xfrm state get …`.
    public func xfrmState(namespace: String? = nil, destination: [UInt8], spi: UInt32, proto: XfrmProtocol = .esp,
                          mark: XfrmMark? = nil) throws -> XfrmState? {
        do {
            let replies = try request(XfrmStateRequest.get(namespace: namespace, destination: destination, spi: spi, proto: proto, mark: mark))
            return try replies.first { $0.type == nl16(XFRM_MSG_NEWSA) }.map(XfrmState.init)
        } catch let e as NetlinkError where e.errno == ESRCH || e.errno == ENOENT {
            return nil
        }
    }
}
