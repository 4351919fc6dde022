import CNetlink
import Glibc

/// A netlink attribute to send: raw bytes or nested attributes.
public struct Attribute: Sendable, Hashable {
    public enum Value: Sendable, Hashable {
        case bytes([UInt8])
        case nested([Attribute])
    }
    public var type: UInt16
    public var value: Value

    public init(_ type: UInt16, bytes: [UInt8]) {
        self.type = type
        self.value = .bytes(bytes)
    }
    public init(_ type: UInt16, nested: [Attribute]) {
        self.type = type
        self.value = .nested(nested)
    }

    public static func u8(_ type: UInt16, _ v: UInt8) -> Attribute { Attribute(type, bytes: [v]) }
    public static func u16(_ type: UInt16, _ v: UInt16) -> Attribute { Attribute(type, bytes: Bytes.of(v)) }
    public static func u32(_ type: UInt16, _ v: UInt32) -> Attribute { Attribute(type, bytes: Bytes.of(v)) }
    public static func u64(_ type: UInt16, _ v: UInt64) -> Attribute { Attribute(type, bytes: Bytes.of(v)) }
    public static func i32(_ type: UInt16, _ v: Int32) -> Attribute { Attribute(type, bytes: Bytes.of(v)) }
    /// A NUL-terminated string (`mnl_attr_put_strz`).
    public static func string(_ type: UInt16, _ s: String) -> Attribute { Attribute(type, bytes: Array(s.utf8) + [0]) }
    public static func flag(_ type: UInt16) -> Attribute { Attribute(type, bytes: []) }
    public static func value<T>(_ type: UInt16, _ v: T) -> Attribute { Attribute(type, bytes: Bytes.of(v)) }
    public static func nest(_ type: UInt16, _ children: [Attribute]) -> Attribute { Attribute(type, nested: children) }

    /// Bytes this attribute takes in a message, alignment included.
    var encodedSize: Int {
        switch value {
        case .bytes(let b): return 4 + Bytes.align(b.count)
        case .nested(let c): return 4 + c.reduce(0) { $0 + $1.encodedSize }
        }
    }
}

/// Helpers for host-order struct ⇄ byte conversion.
public enum Bytes {
    public static func of<T>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    public static func align(_ n: Int) -> Int { (n + 3) & ~3 }
    /// Loads a `T` from the start of `bytes`, or nil when there are too few.
    public static func load<T>(_ type: T.Type, from bytes: ArraySlice<UInt8>) -> T? {
        guard bytes.count >= MemoryLayout<T>.size else { return nil }
        return bytes.withUnsafeBytes { raw in
            let p = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
            defer { p.deallocate() }
            p.copyMemory(from: raw.baseAddress!, byteCount: MemoryLayout<T>.size)
            return p.load(as: T.self)
        }
    }
    public static func load<T>(_ type: T.Type, from bytes: [UInt8]) -> T? { load(type, from: bytes[...]) }
}

/// Message flags (`NLM_F_*`).
public struct MessageFlags: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let request = MessageFlags(rawValue: UInt16(NLM_F_REQUEST))
    public static let ack = MessageFlags(rawValue: UInt16(NLM_F_ACK))
    public static let dump = MessageFlags(rawValue: UInt16(NLM_F_DUMP))
    public static let create = MessageFlags(rawValue: UInt16(NLM_F_CREATE))
    public static let exclusive = MessageFlags(rawValue: UInt16(NLM_F_EXCL))
    public static let replace = MessageFlags(rawValue: UInt16(NLM_F_REPLACE))
    /// `NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL`: what `ip … add` sends.
    public static let add: MessageFlags = [.request, .ack, .create, .exclusive]
    public static let modify: MessageFlags = [.request, .ack]
}

/// One netlink request: type, flags, the family's fixed header and attributes, plus the
/// command it equals (`ip -n west route add …`) for error messages.
public struct Request: Sendable, Hashable, CustomStringConvertible {
    public var type: UInt16
    public var flags: MessageFlags
    public var header: [UInt8]
    public var attributes: [Attribute]
    /// The equivalent command, shown in errors.
    public var summary: String
    /// Where the request came from (a topology file position), shown in errors.
    public var origin: String?

    public init<Header>(type: UInt16, flags: MessageFlags, header: Header, attributes: [Attribute] = [],
                        summary: String, origin: String? = nil) {
        self.type = type
        self.flags = flags
        self.header = Bytes.of(header)
        self.attributes = attributes
        self.summary = summary
        self.origin = origin
    }

    public init(type: UInt16, flags: MessageFlags, headerBytes: [UInt8], attributes: [Attribute] = [],
                summary: String, origin: String? = nil) {
        self.type = type
        self.flags = flags
        self.header = headerBytes
        self.attributes = attributes
        self.summary = summary
        self.origin = origin
    }

    public var description: String { summary }

    /// Bytes the whole message takes, alignment included.
    public var encodedSize: Int {
        16 + Bytes.align(header.count) + attributes.reduce(0) { $0 + $1.encodedSize }
    }

    /// Writes the message at `buffer` with libmnl and returns its length.
    func encode(into buffer: UnsafeMutableRawPointer, sequence: UInt32) -> Int {
        let nlh = mnl_nlmsg_put_header(buffer)!
        nlh.pointee.nlmsg_type = type
        nlh.pointee.nlmsg_flags = flags.rawValue
        nlh.pointee.nlmsg_seq = sequence
        if !header.isEmpty {
            let extra = mnl_nlmsg_put_extra_header(nlh, header.count)!
            header.withUnsafeBytes { extra.copyMemory(from: $0.baseAddress!, byteCount: header.count) }
        }
        for attribute in attributes { Request.put(attribute, into: nlh) }
        return Int(nlh.pointee.nlmsg_len)
    }

    private static func put(_ attribute: Attribute, into nlh: UnsafeMutablePointer<nlmsghdr>) {
        switch attribute.value {
        case .bytes(let bytes):
            bytes.withUnsafeBytes { mnl_attr_put(nlh, attribute.type, bytes.count, $0.baseAddress) }
        case .nested(let children):
            let nest = mnl_attr_nest_start(nlh, attribute.type)
            for child in children { put(child, into: nlh) }
            mnl_attr_nest_end(nlh, nest)
        }
    }

    /// The encoded bytes of the message (for golden tests and fuzzing).
    public func encoded(sequence: UInt32 = 1) -> [UInt8] {
        let size = encodedSize
        let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { p.deallocate() }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        let n = encode(into: p, sequence: sequence)
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}

/// A message the kernel sent: header fields and the payload after the netlink header.
public struct Message: Sendable, Hashable {
    public var type: UInt16
    public var flags: UInt16
    public var sequence: UInt32
    public var portID: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, flags: UInt16 = 0, sequence: UInt32 = 0, portID: UInt32 = 0, payload: [UInt8]) {
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
        self.payload = payload
    }

    /// The family's fixed header (`ifinfomsg`, `rtmsg` …) at the start of the payload.
    public func header<T>(_ type: T.Type) throws -> T {
        guard let h = Bytes.load(T.self, from: payload) else {
            throw MalformedMessage("payload of \(payload.count) bytes is shorter than its \(MemoryLayout<T>.size)-byte header")
        }
        return h
    }

    /// The attributes after a fixed header of `headerSize` bytes.
    public func attributes(after headerSize: Int) throws -> Attributes {
        let start = Bytes.align(headerSize)
        guard start <= payload.count else {
            throw MalformedMessage("payload of \(payload.count) bytes is shorter than its \(headerSize)-byte header")
        }
        return try Attributes(parsing: payload[start...])
    }

    /// Splits a receive buffer into messages with libmnl's bounds checks. A length that lies
    /// (shorter than a header, longer than what is left) is an error, never a read past the end.
    public static func split(_ buffer: UnsafeRawBufferPointer) throws -> [Message] {
        var out: [Message] = []
        guard let base = buffer.baseAddress, buffer.count > 0 else { return out }
        var remaining = Int32(buffer.count)
        var nlh = UnsafeRawPointer(base).assumingMemoryBound(to: nlmsghdr.self)
        // mnl_nlmsg_ok compares (int)nlmsg_len with what is left, so a length with the top
        // bit set passes it as negative: check the unsigned value as well.
        while mnl_nlmsg_ok(nlh, remaining) && Int(nlh.pointee.nlmsg_len) <= Int(remaining) {
            let len = Int(nlh.pointee.nlmsg_len)
            let payloadStart = UnsafeRawPointer(nlh) + 16
            out.append(Message(type: nlh.pointee.nlmsg_type, flags: nlh.pointee.nlmsg_flags,
                               sequence: nlh.pointee.nlmsg_seq, portID: nlh.pointee.nlmsg_pid,
                               payload: Array(UnsafeRawBufferPointer(start: payloadStart, count: len - 16))))
            // mnl_nlmsg_next aligns the length; the last message may end unaligned.
            let advance = Bytes.align(len)
            if advance >= Int(remaining) { remaining = 0; break }
            nlh = UnsafeRawPointer(mnl_nlmsg_next(nlh, &remaining)!).assumingMemoryBound(to: nlmsghdr.self)
        }
        if remaining > 0 {
            throw MalformedMessage("\(remaining) trailing bytes do not form a message")
        }
        return out
    }

    public static func split(_ bytes: [UInt8]) throws -> [Message] {
        try bytes.withUnsafeBytes { try split($0) }
    }
}

/// Parsed attributes, in order, with lookup by type. Types carry `NLA_F_NESTED` stripped.
public struct Attributes: Sendable, Hashable, Sequence {
    public struct Entry: Sendable, Hashable {
        public var type: UInt16
        public var nested: Bool
        public var payload: [UInt8]

        public var u8: UInt8? { payload.first }
        public var u16: UInt16? { Bytes.load(UInt16.self, from: payload) }
        public var u32: UInt32? { Bytes.load(UInt32.self, from: payload) }
        public var i32: Int32? { Bytes.load(Int32.self, from: payload) }
        public var u64: UInt64? { Bytes.load(UInt64.self, from: payload) }
        /// A string attribute, stopping at the first NUL.
        public var string: String { String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self) }
        public func value<T>(_ type: T.Type) -> T? { Bytes.load(T.self, from: payload) }
        public func children() throws -> Attributes { try Attributes(parsing: payload[...]) }
    }

    public private(set) var entries: [Entry] = []

    public init(entries: [Entry]) { self.entries = entries }

    /// Walks attributes with libmnl's `mnl_attr_ok`/`mnl_attr_next`, which check each length
    /// against what is left, so a lying length stops the walk with an error.
    public init(parsing bytes: ArraySlice<UInt8>) throws {
        guard !bytes.isEmpty else { return }
        var entries: [Entry] = []
        try bytes.withUnsafeBytes { raw in
            // Copy into an aligned buffer: struct nlattr must be 4-byte aligned for libmnl.
            let p = UnsafeMutableRawPointer.allocate(byteCount: raw.count, alignment: 8)
            defer { p.deallocate() }
            p.copyMemory(from: raw.baseAddress!, byteCount: raw.count)
            var remaining = Int32(raw.count)
            var attr = UnsafeRawPointer(p).assumingMemoryBound(to: nlattr.self)
            while remaining >= 4 {
                guard mnl_attr_ok(attr, remaining) else {
                    throw MalformedMessage("attribute at offset \(Int32(raw.count) - remaining) claims \(attr.pointee.nla_len) bytes with \(remaining) left")
                }
                let len = Int(attr.pointee.nla_len)
                let type = attr.pointee.nla_type
                let payload = Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(attr) + 4, count: len - 4))
                entries.append(Entry(type: type & ~UInt16(NLA_F_NESTED | NLA_F_NET_BYTEORDER), nested: type & UInt16(NLA_F_NESTED) != 0, payload: payload))
                if Bytes.align(len) >= Int(remaining) { remaining = 0; break }
                attr = UnsafeRawPointer(mnl_attr_next(attr)!).assumingMemoryBound(to: nlattr.self)
                remaining -= Int32(Bytes.align(len))
            }
            if remaining > 0 {
                throw MalformedMessage("\(remaining) trailing bytes do not form an attribute")
            }
        }
        self.entries = entries
    }

    public subscript(type: UInt16) -> Entry? { entries.first { $0.type == type } }
    public subscript(type: Int32) -> Entry? { self[UInt16(truncatingIfNeeded: type)] }
    public subscript(type: Int) -> Entry? { self[UInt16(truncatingIfNeeded: type)] }
    public func all(_ type: UInt16) -> [Entry] { entries.filter { $0.type == type } }
    public func makeIterator() -> IndexingIterator<[Entry]> { entries.makeIterator() }
    public var count: Int { entries.count }
}
