import CNetlink
import Glibc

/// A policy-routing rule as the kernel reports it (`RTM_NEWRULE`).
public struct RuleInfo: Sendable, Hashable, CustomStringConvertible {
    public var family: UInt8
    public var priority: UInt32
    public var table: UInt32
    public var action: UInt8
    public var invert: Bool
    public var fwmark: UInt32?
    public var fwmask: UInt32?
    public var source: [UInt8]?
    public var sourceLength: UInt8
    public var destination: [UInt8]?
    public var destinationLength: UInt8
    public var inputInterface: String?
    public var outputInterface: String?

    public init(_ message: Message) throws {
        let h = try message.header(fib_rule_hdr.self)
        let attrs = try message.attributes(after: MemoryLayout<fib_rule_hdr>.size)
        family = h.family
        priority = attrs[FRA_PRIORITY]?.u32 ?? 0
        table = attrs[FRA_TABLE]?.u32 ?? UInt32(h.table)
        action = h.action
        invert = h.flags & UInt32(FIB_RULE_INVERT) != 0
        fwmark = attrs[FRA_FWMARK]?.u32
        fwmask = attrs[FRA_FWMASK]?.u32
        source = attrs[FRA_SRC]?.payload
        sourceLength = h.src_len
        destination = attrs[FRA_DST]?.payload
        destinationLength = h.dst_len
        inputInterface = attrs[FRA_IIFNAME]?.string
        outputInterface = attrs[FRA_OIFNAME]?.string
    }

    public var description: String {
        var s = "\(priority):"
        if invert { s += " not" }
        s += " from " + (source.map { "\(formatAddress($0))/\(sourceLength)" } ?? "all")
        if let destination { s += " to \(formatAddress(destination))/\(destinationLength)" }
        if let fwmark {
            s += " fwmark 0x\(String(fwmark, radix: 16))"
            if let fwmask, fwmask != .max { s += "/0x\(String(fwmask, radix: 16))" }
        }
        if let inputInterface { s += " iif \(inputInterface)" }
        if let outputInterface { s += " oif \(outputInterface)" }
        if action == nl8(FR_ACT_TO_TBL) { s += " lookup \(tableName(table))" } else { s += " action \(action)" }
        return s
    }
}

/// Rule requests (`RTM_*RULE`).
public enum RuleRequest {
    /// Equivalent to `ip [-6] rule add [not] [from F] [to T] [fwmark M/MASK] [iif I] [oif O] [priority P] lookup TABLE`.
    public static func add(namespace: String?, family: UInt8, priority: UInt32? = nil, invert: Bool = false,
                           source: (bytes: [UInt8], length: Int)? = nil, destination: (bytes: [UInt8], length: Int)? = nil,
                           fwmark: UInt32? = nil, fwmask: UInt32? = nil, inputInterface: String? = nil,
                           outputInterface: String? = nil, table: UInt32, summary: String, origin: String? = nil) -> Request {
        var h = fib_rule_hdr()
        h.family = family
        h.action = nl8(FR_ACT_TO_TBL)
        h.table = table < 256 ? UInt8(table) : 0
        if invert { h.flags |= UInt32(FIB_RULE_INVERT) }
        var attrs: [Attribute] = [.u32(nl16(FRA_TABLE), table)]
        if let priority { attrs.append(.u32(nl16(FRA_PRIORITY), priority)) }
        if let source {
            h.src_len = UInt8(source.length)
            attrs.append(Attribute(nl16(FRA_SRC), bytes: source.bytes))
        }
        if let destination {
            h.dst_len = UInt8(destination.length)
            attrs.append(Attribute(nl16(FRA_DST), bytes: destination.bytes))
        }
        if let fwmark { attrs.append(.u32(nl16(FRA_FWMARK), fwmark)) }
        if let fwmask { attrs.append(.u32(nl16(FRA_FWMASK), fwmask)) }
        if let inputInterface { attrs.append(.string(nl16(FRA_IIFNAME), inputInterface)) }
        if let outputInterface { attrs.append(.string(nl16(FRA_OIFNAME), outputInterface)) }
        return Request(type: nl16(RTM_NEWRULE), flags: .add, header: h, attributes: attrs,
                       summary: ipPrefix(namespace) + summary, origin: origin)
    }

    /// Equivalent to `ip rule show` (and `ip -6 rule show` with `AF_UNSPEC`).
    public static func dump(namespace: String?, family: UInt8 = UInt8(AF_UNSPEC)) -> Request {
        var h = fib_rule_hdr()
        h.family = family
        return Request(type: nl16(RTM_GETRULE), flags: .dump, header: h, summary: ipPrefix(namespace) + "rule show")
    }
}

extension NetlinkSocket {
    /// Every rule of both families. Equivalent to `ip rule show; ip -6 rule show`.
    public func rules(namespace: String? = nil) throws -> [RuleInfo] {
        try dump(RuleRequest.dump(namespace: namespace)).filter { $0.type == nl16(RTM_NEWRULE) }.map(RuleInfo.init)
    }
}
