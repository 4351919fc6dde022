import CNetlink
import Foundation
import Glibc

/// `XFRM_MSG_POLEXPIRE`: a policy reached a soft or hard lifetime limit (the hard one removes
/// it). Sent to `XfrmMonitor.expireGroup`, like a state's expiry.
public struct XfrmPolicyExpire: Sendable, Hashable, CustomStringConvertible {
    public var policy: XfrmPolicy
    public var hard: Bool

    public init(_ message: Message) throws {
        guard let e = Bytes.load(xfrm_user_polexpire.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_POLEXPIRE of \(message.payload.count) bytes is shorter than struct xfrm_user_polexpire")
        }
        policy = try XfrmPolicy(info: e.pol, attributes: message.attributes(after: MemoryLayout<xfrm_user_polexpire>.stride))
        hard = e.hard != 0
    }

    public var description: String { "polexpire \(hard ? "hard" : "soft") \(policy)" }
}

/// `XFRM_MSG_REPORT`: the kernel reports a packet to the key manager (Mobile IPv6's route
/// optimisation: a packet that needed a care-of address). Sent to `XfrmMonitor.reportGroup`.
public struct XfrmReport: Sendable, Hashable, CustomStringConvertible {
    public var proto: UInt8
    public var selector: XfrmSelector
    /// `XFRMA_COADDR`, when the kernel sent one.
    public var careOfAddress: [UInt8]?

    public init(_ message: Message) throws {
        guard let r = Bytes.load(xfrm_user_report.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_REPORT of \(message.payload.count) bytes is shorter than struct xfrm_user_report")
        }
        proto = r.proto
        let family = r.sel.family == 0 ? UInt16(AF_INET) : r.sel.family
        selector = XfrmStructs.selector(r.sel, fallbackFamily: family)
        let attrs = try message.attributes(after: MemoryLayout<xfrm_user_report>.stride)
        careOfAddress = attrs[XFRMA_COADDR].flatMap { Bytes.load(xfrm_address_t.self, from: $0.payload) }
            .map { XfrmStructs.bytes($0, family: family) }
    }

    public var description: String {
        "report proto \(protocolName(proto)) \(selector)" + (careOfAddress.map { " coaddr \(formatAddress($0))" } ?? "")
    }
}

/// `XFRM_MSG_MAPPING`: the NAT in front of an ESP-in-UDP peer changed its address or port (the
/// kernel saw the SA's packets arrive from a new one). Sent to `XfrmMonitor.mappingGroup`.
public struct XfrmMapping: Sendable, Hashable, CustomStringConvertible {
    public var destination: [UInt8]
    public var spi: UInt32
    public var proto: XfrmProtocol
    public var reqid: UInt32
    public var oldSource: [UInt8]
    public var newSource: [UInt8]
    public var oldSourcePort: UInt16
    public var newSourcePort: UInt16

    public init(_ message: Message) throws {
        guard let m = Bytes.load(xfrm_user_mapping.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_MAPPING of \(message.payload.count) bytes is shorter than struct xfrm_user_mapping")
        }
        let family = m.id.family == 0 ? UInt16(AF_INET) : m.id.family
        destination = XfrmStructs.bytes(m.id.daddr, family: family)
        spi = UInt32(bigEndian: m.id.spi)
        proto = XfrmProtocol(rawValue: m.id.proto) ?? .esp
        reqid = m.reqid
        oldSource = XfrmStructs.bytes(m.old_saddr, family: family)
        newSource = XfrmStructs.bytes(m.new_saddr, family: family)
        oldSourcePort = UInt16(bigEndian: m.old_sport)
        newSourcePort = UInt16(bigEndian: m.new_sport)
    }

    public var description: String {
        "mapping \(proto) spi \(hex(spi)) dst \(formatAddress(destination)) reqid \(reqid): "
            + "\(formatAddress(oldSource)):\(oldSourcePort) → \(formatAddress(newSource)):\(newSourcePort)"
    }
}

/// `XFRM_MSG_NEWAE`: an SA's replay state and lifetime counters — the answer to a
/// `XfrmStateRequest.getAsyncEvent`, or a notification to `XfrmMonitor.asyncEventsGroup` when
/// the replay or timer thresholds are crossed.
public struct XfrmAsyncEvent: Sendable, Hashable, CustomStringConvertible {
    public var destination: [UInt8]
    public var source: [UInt8]
    public var spi: UInt32
    public var proto: XfrmProtocol
    public var reqid: UInt32
    /// `XFRM_AE_*` flags: why it was sent (`XFRM_AE_CR` replay, `XFRM_AE_CE` timer, `XFRM_AE_CU` update).
    public var flags: UInt32
    /// Outbound and inbound sequence numbers (`XFRMA_REPLAY_VAL`, or the ESN form's low and high halves).
    public var outboundSequence: UInt64?
    public var inboundSequence: UInt64?
    /// `XFRMA_LTIME_VAL`: bytes and packets through the SA so far.
    public var counters: XfrmLifetimeCounters?
    public var mark: XfrmMark?

    public init(_ message: Message) throws {
        guard let a = Bytes.load(xfrm_aevent_id.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_NEWAE of \(message.payload.count) bytes is shorter than struct xfrm_aevent_id")
        }
        let family = a.sa_id.family == 0 ? UInt16(AF_INET) : a.sa_id.family
        destination = XfrmStructs.bytes(a.sa_id.daddr, family: family)
        source = XfrmStructs.bytes(a.saddr, family: family)
        spi = UInt32(bigEndian: a.sa_id.spi)
        proto = XfrmProtocol(rawValue: a.sa_id.proto) ?? .esp
        reqid = a.reqid
        flags = a.flags
        let attrs = try message.attributes(after: MemoryLayout<xfrm_aevent_id>.stride)
        if let esn = attrs[XFRMA_REPLAY_ESN_VAL].flatMap({ Bytes.load(xfrm_replay_state_esn.self, from: $0.payload) }) {
            outboundSequence = UInt64(esn.oseq_hi) << 32 | UInt64(esn.oseq)
            inboundSequence = UInt64(esn.seq_hi) << 32 | UInt64(esn.seq)
        } else if let r = attrs[XFRMA_REPLAY_VAL].flatMap({ Bytes.load(xfrm_replay_state.self, from: $0.payload) }) {
            outboundSequence = UInt64(r.oseq)
            inboundSequence = UInt64(r.seq)
        }
        counters = attrs[XFRMA_LTIME_VAL].flatMap { Bytes.load(xfrm_lifetime_cur.self, from: $0.payload) }.map(XfrmStructs.counters)
        mark = XfrmStructs.mark(attrs)
    }

    public var description: String {
        var s = "aevent \(proto) spi \(hex(spi)) src \(formatAddress(source)) dst \(formatAddress(destination)) reqid \(reqid)"
        if let outboundSequence { s += " oseq \(outboundSequence)" }
        if let inboundSequence { s += " seq \(inboundSequence)" }
        if let counters { s += " \(counters)" }
        return s
    }
}

extension XfrmStateRequest {
    /// `XFRM_MSG_GETAE`: asks for an SA's replay state and lifetime counters; the answer is one
    /// `XFRM_MSG_NEWAE` (`XfrmAsyncEvent`). iproute2 has no command for it; the summary reads like one.
    public static func getAsyncEvent(namespace: String?, source: [UInt8], destination: [UInt8], spi: UInt32,
                                     proto: XfrmProtocol = .esp, mark: XfrmMark? = nil) -> Request {
        var a = xfrm_aevent_id()
        a.sa_id.daddr = XfrmStructs.address(destination)
        a.sa_id.spi = spi.bigEndian
        a.sa_id.family = XfrmStructs.family(of: destination)
        a.sa_id.proto = proto.rawValue
        a.saddr = XfrmStructs.address(source)
        a.flags = UInt32(XFRM_AE_RVAL.rawValue | XFRM_AE_LVAL.rawValue)
        var attrs: [Attribute] = []
        if let mark { attrs.append(XfrmStructs.attribute(mark)) }
        let s = ipPrefix(namespace) + "xfrm state get-ae src \(formatAddress(source)) dst \(formatAddress(destination)) proto \(proto) spi \(hex(spi))"
            + (mark.map { " mark \($0.arguments)" } ?? "")
        return Request(type: nl16(XFRM_MSG_GETAE), flags: .modify, headerBytes: XfrmStructs.header(a), attributes: attrs, summary: s)
    }
}

extension NetlinkSocket {
    /// An SA's replay state and counters (`XFRM_MSG_GETAE`, answered with `XFRM_MSG_NEWAE`).
    public func xfrmAsyncEvent(namespace: String? = nil, source: [UInt8], destination: [UInt8], spi: UInt32,
                               proto: XfrmProtocol = .esp, mark: XfrmMark? = nil) throws -> XfrmAsyncEvent? {
        try request(XfrmStateRequest.getAsyncEvent(namespace: namespace, source: source, destination: destination, spi: spi,
                                                   proto: proto, mark: mark))
            .first { $0.type == nl16(XFRM_MSG_NEWAE) }.map(XfrmAsyncEvent.init)
    }
}
