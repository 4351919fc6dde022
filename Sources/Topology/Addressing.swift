import Foundation

/// An IPv4 or IPv6 address, kept as network-order bytes.
public enum IPAddress: Hashable, Sendable, Codable, CustomStringConvertible, Comparable {
    case v4([UInt8])
    case v6([UInt8])

    public enum Family: String, Codable, Sendable, Hashable { case ipv4, ipv6 }

    public init?(_ text: String) {
        var a4 = in_addr()
        var a6 = in6_addr()
        if text.contains(":") {
            guard inet_pton(AF_INET6, text, &a6) == 1 else { return nil }
            self = .v6(withUnsafeBytes(of: a6) { Array($0) })
        } else {
            guard inet_pton(AF_INET, text, &a4) == 1 else { return nil }
            self = .v4(withUnsafeBytes(of: a4) { Array($0) })
        }
    }

    public var bytes: [UInt8] {
        switch self { case .v4(let b), .v6(let b): return b }
    }
    public var family: Family {
        if case .v4 = self { return .ipv4 } else { return .ipv6 }
    }
    public var bitCount: Int { family == .ipv4 ? 32 : 128 }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let af = family == .ipv4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        guard ok != nil else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The address with every bit past `prefixLength` cleared.
    public func masked(to prefixLength: Int) -> IPAddress {
        var b = bytes
        for i in 0..<b.count {
            let keep = max(0, min(8, prefixLength - i * 8))
            b[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return family == .ipv4 ? .v4(b) : .v6(b)
    }

    public static func < (l: IPAddress, r: IPAddress) -> Bool {
        l.bytes.count != r.bytes.count ? l.bytes.count < r.bytes.count : l.bytes.lexicographicallyPrecedes(r.bytes)
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let a = IPAddress(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not an IP address: \(text)"))
        }
        self = a
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An address with a prefix length: `192.1.2.45/24`, `2001:db8::/64`.
public struct CIDR: Hashable, Sendable, Codable, CustomStringConvertible {
    public var address: IPAddress
    public var prefixLength: Int

    public init(address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `a.b.c.d/n`, `x::y/n`, a bare address (a host prefix) or `default`
    /// (`0.0.0.0/0`, or `::/0` when `family` says so).
    public init?(_ text: String, defaultFamily: IPAddress.Family = .ipv4) {
        if text == "default" {
            self.init(address: defaultFamily == .ipv4 ? .v4([0, 0, 0, 0]) : .v6(Array(repeating: 0, count: 16)), prefixLength: 0)
            return
        }
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = IPAddress(String(parts[0])) else { return nil }
        var length = address.bitCount
        if parts.count == 2 {
            guard let n = Int(parts[1]), n >= 0, n <= address.bitCount, !parts[1].hasPrefix("+") else { return nil }
            length = n
        }
        self.init(address: address, prefixLength: length)
    }

    public var family: IPAddress.Family { address.family }
    /// The network address (host bits cleared).
    public var network: CIDR { CIDR(address: address.masked(to: prefixLength), prefixLength: prefixLength) }
    public var isNetworkAddress: Bool { address.masked(to: prefixLength) == address }

    public func contains(_ other: IPAddress) -> Bool {
        other.family == family && other.masked(to: prefixLength) == address.masked(to: prefixLength)
    }
    public func contains(_ other: CIDR) -> Bool {
        other.prefixLength >= prefixLength && contains(other.address)
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let c = CIDR(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a CIDR: \(text)"))
        }
        self = c
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// A packet mark with a mask: `0x1/0xff`. Used for fwmark rules, SO_MARK and XFRM marks.
public struct Mark: Hashable, Sendable, Codable, CustomStringConvertible {
    public var value: UInt32
    public var mask: UInt32

    public init(_ value: UInt32, mask: UInt32 = .max) {
        self.value = value
        self.mask = mask
    }

    /// Parses `N` or `N/M`, each decimal or 0x-hex.
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let v = Mark.number(parts[0]) else { return nil }
        var m = UInt32.max
        if parts.count == 2 {
            guard let mm = Mark.number(parts[1]) else { return nil }
            m = mm
        }
        self.init(v, mask: m)
    }

    static func number(_ s: Substring) -> UInt32? {
        let t = s.trimmingCharacters(in: .whitespaces)
        if t.lowercased().hasPrefix("0x") { return UInt32(t.dropFirst(2), radix: 16) }
        return UInt32(t)
    }

    public var description: String {
        mask == .max ? "0x" + String(value, radix: 16) : "0x\(String(value, radix: 16))/0x\(String(mask, radix: 16))"
    }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let m = Mark(text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a mark: \(text)"))
        }
        self = m
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
