import CNetlink
import Foundation
import Glibc

/// One template's move in an `XFRM_MSG_MIGRATE` (`struct xfrm_user_migrate`): the SA endpoints
/// a policy's template (and the states matching it) had, and the ones it gets.
public struct XfrmMigration: Sendable, Hashable, CustomStringConvertible {
    public var oldSource: [UInt8]
    public var oldDestination: [UInt8]
    public var newSource: [UInt8]
    public var newDestination: [UInt8]
    public var proto: XfrmProtocol
    public var mode: XfrmMode
    public var reqid: UInt32

    public init(oldSource: [UInt8], oldDestination: [UInt8], newSource: [UInt8], newDestination: [UInt8],
                proto: XfrmProtocol = .esp, mode: XfrmMode = .tunnel, reqid: UInt32 = 0) {
        self.oldSource = oldSource
        self.oldDestination = oldDestination
        self.newSource = newSource
        self.newDestination = newDestination
        self.proto = proto
        self.mode = mode
        self.reqid = reqid
    }

    init(_ m: xfrm_user_migrate) {
        oldSource = XfrmStructs.bytes(m.old_saddr, family: m.old_family)
        oldDestination = XfrmStructs.bytes(m.old_daddr, family: m.old_family)
        newSource = XfrmStructs.bytes(m.new_saddr, family: m.new_family)
        newDestination = XfrmStructs.bytes(m.new_daddr, family: m.new_family)
        proto = XfrmProtocol(rawValue: m.proto) ?? .esp
        mode = XfrmMode(rawValue: m.mode) ?? .tunnel
        reqid = m.reqid
    }

    var raw: xfrm_user_migrate {
        var m = xfrm_user_migrate()
        m.old_saddr = XfrmStructs.address(oldSource)
        m.old_daddr = XfrmStructs.address(oldDestination)
        m.new_saddr = XfrmStructs.address(newSource)
        m.new_daddr = XfrmStructs.address(newDestination)
        m.proto = proto.rawValue
        m.mode = mode.rawValue
        m.reqid = reqid
        m.old_family = XfrmStructs.family(of: oldDestination)
        m.new_family = XfrmStructs.family(of: newDestination)
        return m
    }

    /// `tmpl src A dst B proto esp mode tunnel reqid R newsrc C newdst D`.
    public var description: String {
        "tmpl src \(formatAddress(oldSource)) dst \(formatAddress(oldDestination)) proto \(proto) mode \(mode) reqid \(reqid)"
            + " newsrc \(formatAddress(newSource)) newdst \(formatAddress(newDestination))"
    }
}

extension XfrmPolicyRequest {
    /// `XFRM_MSG_MIGRATE`: moves the templates of the policy `selector`/`direction` (and the
    /// states that match them) to new endpoints, as a MOBIKE daemon does when an address
    /// changes; listeners of `XfrmMonitor.migrateGroup` are told. Needs CONFIG_XFRM_MIGRATE
    /// (`ENOPROTOOPT` without it). iproute2 has no command for it; the summary reads like one.
    public static func migrate(namespace: String?, selector: XfrmSelector, direction: XfrmDirection,
                               migrations: [XfrmMigration], origin: String? = nil) -> Request {
        migrate(namespace: namespace, selector: selector, rawDirection: direction.rawValue, migrations: migrations, origin: origin)
    }

    /// The same with the direction as a number, so a request the kernel must refuse (a direction
    /// past `XFRM_POLICY_MAX`, CVE-2017-11600) can be sent as it is.
    public static func migrate(namespace: String?, selector: XfrmSelector, rawDirection: UInt8,
                               migrations: [XfrmMigration], origin: String? = nil) -> Request {
        var id = xfrm_userpolicy_id()
        id.sel = XfrmStructs.selector(selector)
        id.dir = rawDirection
        // One attribute carrying every migration, as the kernel reads it (nla_len / sizeof).
        let payload = migrations.flatMap { Bytes.of($0.raw) }
        let direction = XfrmDirection(rawValue: rawDirection).map(String.init(describing:)) ?? String(rawDirection)
        let s = ipPrefix(namespace) + "xfrm policy migrate \(selector) dir \(direction) " + migrations.map(\.description).joined(separator: " ")
        return Request(type: nl16(XFRM_MSG_MIGRATE), flags: .modify, headerBytes: XfrmStructs.header(id),
                       attributes: [Attribute(nl16(XFRMA_MIGRATE), bytes: payload)], summary: s, origin: origin)
    }
}

/// `XFRM_MSG_MIGRATE` as a listener receives it: the policy whose templates moved, and how.
public struct XfrmMigrate: Sendable, Hashable, CustomStringConvertible {
    public var selector: XfrmSelector
    /// The policy direction as the kernel sent it (a number, not always a valid direction).
    public var rawDirection: UInt8
    public var direction: XfrmDirection? { XfrmDirection(rawValue: rawDirection) }
    public var migrations: [XfrmMigration]

    public init(_ message: Message) throws {
        let size = MemoryLayout<xfrm_userpolicy_id>.stride
        guard let id = Bytes.load(xfrm_userpolicy_id.self, from: message.payload) else {
            throw MalformedMessage("XFRM_MSG_MIGRATE of \(message.payload.count) bytes is shorter than struct xfrm_userpolicy_id")
        }
        let attrs = try message.attributes(after: size)
        selector = XfrmStructs.selector(id.sel, fallbackFamily: UInt16(AF_INET))
        rawDirection = id.dir
        let stride = MemoryLayout<xfrm_user_migrate>.size
        migrations = attrs.all(nl16(XFRMA_MIGRATE)).flatMap { entry in
            stride == 0 ? [] : (0..<(entry.payload.count / stride)).compactMap { i in
                Bytes.load(xfrm_user_migrate.self, from: Array(entry.payload[(i * stride)..<((i + 1) * stride)])).map(XfrmMigration.init)
            }
        }
    }

    public var description: String {
        "migrate \(selector) dir \(direction.map(String.init(describing:)) ?? String(rawDirection)) " + migrations.map(\.description).joined(separator: " ")
    }
}
