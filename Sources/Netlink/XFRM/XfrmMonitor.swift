import CNetlink
import Foundation
import Glibc

/// `XFRM_MSG_ACQUIRE`: a packet matched a policy whose template has no state yet; the kernel
/// asks a key manager to negotiate one. Carries the packet's flow and the policy it matched.
public struct XfrmAcquire: Sendable, Hashable, CustomStringConvertible {
    /// The SA wanted: outer destination and protocol (`id`), outer source.
    public var destination: [UInt8]
    public var source: [UInt8]
    public var proto: XfrmProtocol
    /// The flow that triggered it (addresses, protocol, ports of the packet).
    public var selector: XfrmSelector
    /// The policy it matched, with its mark, if_id and templates.
    public var policy: XfrmPolicy
    public var sequence: UInt32

    public init(_ message: Message) throws {
        guard let a = Bytes.load(xfrm_user_acquire.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_ACQUIRE of \(message.payload.count) bytes is shorter than struct xfrm_user_acquire")
        }
        let attrs = try message.attributes(after: MemoryLayout<xfrm_user_acquire>.stride)
        let family = a.policy.sel.family == 0 ? UInt16(AF_INET) : a.policy.sel.family
        let templates = XfrmStructs.templates(attrs)
        let outerFamily = templates.first.map { XfrmStructs.family(of: $0.destination) } ?? family
        destination = XfrmStructs.bytes(a.id.daddr, family: outerFamily)
        source = XfrmStructs.bytes(a.saddr, family: outerFamily)
        proto = XfrmProtocol(rawValue: a.id.proto) ?? .esp
        selector = XfrmStructs.selector(a.sel, fallbackFamily: family)
        policy = try XfrmPolicy(info: a.policy, attributes: attrs)
        sequence = a.seq
    }

    public var description: String {
        "acquire proto \(proto) src \(formatAddress(source)) dst \(formatAddress(destination)) flow \(selector) policy \(policy)"
    }
}

/// `XFRM_MSG_EXPIRE`: a state reached a soft or hard lifetime limit (or was deleted while larval).
public struct XfrmExpire: Sendable, Hashable, CustomStringConvertible {
    public var state: XfrmState
    public var hard: Bool

    public init(_ message: Message) throws {
        let size = MemoryLayout<xfrm_user_expire>.stride
        guard let e = Bytes.load(xfrm_user_expire.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_EXPIRE of \(message.payload.count) bytes is shorter than struct xfrm_user_expire")
        }
        let attrs = try message.attributes(after: size)
        state = try XfrmState(info: e.state, attributes: attrs)
        hard = e.hard != 0
    }

    public var description: String { "expire \(hard ? "hard" : "soft") \(state.arguments())" }
}

/// What an XFRM multicast listener receives.
public enum XfrmEvent: Sendable, CustomStringConvertible {
    case acquire(XfrmAcquire)
    case expire(XfrmExpire)
    case migrate(XfrmMigrate)
    case policyExpire(XfrmPolicyExpire)
    case report(XfrmReport)
    case mapping(XfrmMapping)
    case asyncEvent(XfrmAsyncEvent)
    /// Anything else (state and policy notifications when those groups are joined).
    case other(Message)

    public init(_ message: Message) throws {
        switch Int32(message.type) {
        case Int32(XFRM_MSG_ACQUIRE): self = .acquire(try XfrmAcquire(message))
        case Int32(XFRM_MSG_EXPIRE): self = .expire(try XfrmExpire(message))
        case Int32(XFRM_MSG_MIGRATE): self = .migrate(try XfrmMigrate(message))
        case Int32(XFRM_MSG_POLEXPIRE): self = .policyExpire(try XfrmPolicyExpire(message))
        case Int32(XFRM_MSG_REPORT): self = .report(try XfrmReport(message))
        case Int32(XFRM_MSG_MAPPING): self = .mapping(try XfrmMapping(message))
        case Int32(XFRM_MSG_NEWAE): self = .asyncEvent(try XfrmAsyncEvent(message))
        default: self = .other(message)
        }
    }

    public var acquire: XfrmAcquire? { if case .acquire(let a) = self { return a } else { return nil } }
    public var expire: XfrmExpire? { if case .expire(let e) = self { return e } else { return nil } }
    public var migrate: XfrmMigrate? { if case .migrate(let m) = self { return m } else { return nil } }
    public var policyExpire: XfrmPolicyExpire? { if case .policyExpire(let e) = self { return e } else { return nil } }
    public var report: XfrmReport? { if case .report(let r) = self { return r } else { return nil } }
    public var mapping: XfrmMapping? { if case .mapping(let m) = self { return m } else { return nil } }
    public var asyncEvent: XfrmAsyncEvent? { if case .asyncEvent(let a) = self { return a } else { return nil } }

    public var description: String {
        switch self {
        case .acquire(let a): return a.description
        case .expire(let e): return e.description
        case .migrate(let m): return m.description
        case .policyExpire(let e): return e.description
        case .report(let r): return r.description
        case .mapping(let m): return m.description
        case .asyncEvent(let a): return a.description
        case .other(let m): return "xfrm message type \(m.type) (\(m.payload.count) bytes)"
        }
    }
}

/// Listens to XFRM multicast groups (`XFRMNLGRP_ACQUIRE`, `XFRMNLGRP_EXPIRE`, migrate, report,
/// mapping, aevents) on a socket opened in the namespace to watch. Equivalent to
/// `ip xfrm monitor acquire expire migrate report mapping aevent`.
public final class XfrmMonitor: @unchecked Sendable {
    public static let acquireGroup = UInt32(XFRMNLGRP_ACQUIRE.rawValue)
    public static let expireGroup = UInt32(XFRMNLGRP_EXPIRE.rawValue)
    /// `XFRMNLGRP_MIGRATE`: a policy's templates moved (`XFRM_MSG_MIGRATE`).
    public static let migrateGroup = UInt32(XFRMNLGRP_MIGRATE.rawValue)
    /// `XFRMNLGRP_REPORT` (`XFRM_MSG_REPORT`).
    public static let reportGroup = UInt32(XFRMNLGRP_REPORT.rawValue)
    /// `XFRMNLGRP_MAPPING`: NAT mapping changes of ESP-in-UDP SAs (`XFRM_MSG_MAPPING`).
    public static let mappingGroup = UInt32(XFRMNLGRP_MAPPING.rawValue)
    /// `XFRMNLGRP_AEVENTS`: replay and timer thresholds crossed (`XFRM_MSG_NEWAE`).
    public static let asyncEventsGroup = UInt32(XFRMNLGRP_AEVENTS.rawValue)

    public let socket: NetlinkSocket

    /// Wraps a `NETLINK_XFRM` socket that has joined the groups to watch (open it inside the
    /// namespace, e.g. with `Namespace.netlinkSocket(protocol: NetlinkSocket.xfrm, groups:
    /// [XfrmMonitor.acquireGroup, XfrmMonitor.expireGroup])`).
    public init(socket: NetlinkSocket) {
        self.socket = socket
    }

    /// A listener in the namespace this thread is in — the harness's own, the host's, unless
    /// called inside `Namespace.run`. Read-only by construction: it joins groups and receives;
    /// any request sent on its socket in the host namespace is refused before it leaves, as for
    /// every host socket. XFRM events are per namespace, so what a lab does reaches it only
    /// when the kernel sends it to the wrong namespace.
    public static func here(groups: [UInt32]) throws -> XfrmMonitor {
        XfrmMonitor(socket: try NetlinkSocket(protocol: NetlinkSocket.xfrm, groups: groups))
    }

    /// Whatever arrives within `timeout` seconds (at most one read's worth).
    public func events(timeout: Double) throws -> [XfrmEvent] {
        try socket.receive(timeout: timeout).map(XfrmEvent.init)
    }

    /// Waits until an event satisfies `predicate` or `timeout` passes; every event seen meanwhile
    /// is passed to `seen` (so a test can say what came instead).
    public func wait(timeout: Double, seen: (XfrmEvent) -> Void = { _ in },
                     for predicate: (XfrmEvent) -> Bool) throws -> XfrmEvent? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            for event in try events(timeout: left) {
                seen(event)
                if predicate(event) { return event }
            }
        }
    }

    /// Every event that arrives within `timeout` seconds.
    public func collect(for timeout: Double) throws -> [XfrmEvent] {
        var all: [XfrmEvent] = []
        _ = try wait(timeout: timeout, seen: { all.append($0) }, for: { _ in false })
        return all
    }

    public func close() { socket.close() }
}
