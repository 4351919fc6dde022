import CNetlink
import Glibc

/// A mark with a mask as XFRM uses it (`struct xfrm_mark`): a state or policy with mark V/M
/// applies to a packet whose mark P has `P & M == V`.
public struct XfrmMark: Sendable, Hashable, CustomStringConvertible {
    public var value: UInt32
    public var mask: UInt32

    public init(_ value: UInt32, mask: UInt32 = .max) {
        self.value = value
        self.mask = mask
    }

    /// Whether a packet with `mark` matches.
    public func matches(_ mark: UInt32) -> Bool { mark & mask == value }

    /// `0x1/0xff`, as `ip xfrm` prints it.
    public var description: String { "0x\(String(value, radix: 16))/0x\(String(mask, radix: 16))" }

    /// `0x1 mask 0xff`, as `ip xfrm … add` takes it.
    var arguments: String { "0x\(String(value, radix: 16)) mask 0x\(String(mask, radix: 16))" }
}

/// Key material. It never shows itself: `description`, `debugDescription` and reflection all
/// print `<key 128 bits>`, so a key cannot reach a log, an error or a test failure by accident.
/// `revealedHex` gives the bytes when a caller explicitly asks for them.
public struct XfrmKey: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let material: [UInt8]

    public init(bytes: [UInt8]) { material = bytes }

    /// Parses `0x…` or bare hex; nil for anything else.
    public init?(hex: String) {
        var text = Substring(hex)
        if text.hasPrefix("0x") || text.hasPrefix("0X") { text = text.dropFirst(2) }
        guard text.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        var i = text.startIndex
        while i < text.endIndex {
            let j = text.index(i, offsetBy: 2)
            guard let b = UInt8(text[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        material = out
    }

    /// Fresh random bytes from the kernel's generator (`getrandom`).
    public static func random(bits: Int) -> XfrmKey {
        var generator = SystemRandomNumberGenerator()
        return XfrmKey(bytes: (0..<(bits + 7) / 8).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    public var bits: Int { material.count * 8 }
    /// The key as `0x…`: only for callers that mean to show it.
    public var revealedHex: String { "0x" + material.map { String(format: "%02x", $0) }.joined() }
    /// The raw bytes: only for callers that mean to use them.
    public var revealedBytes: [UInt8] { material }

    public var description: String { "<key \(bits) bits>" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// The IPsec protocol of a state or template (`id.proto`).
public enum XfrmProtocol: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case esp = 50
    case ah = 51
    case comp = 108

    public var description: String {
        switch self {
        case .esp: return "esp"
        case .ah: return "ah"
        case .comp: return "comp"
        }
    }

    static func name(_ raw: UInt8) -> String { XfrmProtocol(rawValue: raw)?.description ?? "proto \(raw)" }
}

/// `XFRM_MODE_*`.
public enum XfrmMode: UInt8, Sendable, Hashable, CustomStringConvertible {
    case transport = 0
    case tunnel = 1
    case routeOptimization = 2
    case inTrigger = 3
    case beet = 4

    public var description: String {
        switch self {
        case .transport: return "transport"
        case .tunnel: return "tunnel"
        case .routeOptimization: return "ro"
        case .inTrigger: return "in_trigger"
        case .beet: return "beet"
        }
    }
}

/// Policy direction (`XFRM_POLICY_IN/OUT/FWD`).
public enum XfrmDirection: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case `in` = 0
    case out = 1
    case fwd = 2

    public var description: String {
        switch self {
        case .in: return "in"
        case .out: return "out"
        case .fwd: return "fwd"
        }
    }
}

/// One algorithm of a state: `XFRMA_ALG_AEAD`, `XFRMA_ALG_CRYPT`, `XFRMA_ALG_AUTH_TRUNC` or
/// `XFRMA_ALG_COMP`, with the kernel's crypto API name (`rfc4106(gcm(aes))`).
public enum XfrmAlgorithm: Sendable, Hashable, CustomStringConvertible {
    case aead(name: String, key: XfrmKey, icvBits: UInt32)
    case encryption(name: String, key: XfrmKey)
    case authentication(name: String, key: XfrmKey, truncationBits: UInt32)
    case compression(name: String)

    /// AES-GCM for ESP (RFC 4106) with a 128-bit ICV; the key is the AES key and a 32-bit salt
    /// (160 bits for AES-128, 288 for AES-256).
    public static func aesGCM(key: XfrmKey) -> XfrmAlgorithm { .aead(name: "rfc4106(gcm(aes))", key: key, icvBits: 128) }
    /// AES-CBC encryption (RFC 3602).
    public static func aesCBC(key: XfrmKey) -> XfrmAlgorithm { .encryption(name: "cbc(aes)", key: key) }
    /// HMAC-SHA-256 truncated to 128 bits (RFC 4868).
    public static func hmacSHA256(key: XfrmKey) -> XfrmAlgorithm { .authentication(name: "hmac(sha256)", key: key, truncationBits: 128) }

    public var name: String {
        switch self {
        case .aead(let n, _, _), .encryption(let n, _), .authentication(let n, _, _), .compression(let n): return n
        }
    }

    public var key: XfrmKey? {
        switch self {
        case .aead(_, let k, _), .encryption(_, let k), .authentication(_, let k, _): return k
        case .compression: return nil
        }
    }

    /// As `ip xfrm state add` takes it, the key shown as `<key N bits>` unless revealed.
    func arguments(revealingKeys: Bool) -> String {
        func k(_ key: XfrmKey) -> String { revealingKeys ? key.revealedHex : key.description }
        switch self {
        case .aead(let n, let key, let icv): return "aead '\(n)' \(k(key)) \(icv)"
        case .encryption(let n, let key): return "enc '\(n)' \(k(key))"
        case .authentication(let n, let key, let t): return "auth-trunc '\(n)' \(k(key)) \(t)"
        case .compression(let n): return "comp '\(n)'"
        }
    }

    public var description: String { arguments(revealingKeys: false) }
}

/// UDP encapsulation of ESP (`XFRMA_ENCAP`, NAT traversal, RFC 3948).
public struct XfrmEncapsulation: Sendable, Hashable, CustomStringConvertible {
    /// `UDP_ENCAP_ESPINUDP` (2), the only type in use; 1 is the obsolete non-IKE variant.
    public var type: UInt16
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// The original address before NAT (`encap_oa`), for transport-mode checksum fix-ups.
    public var originalAddress: [UInt8]?

    public static let espInUDP: UInt16 = 2

    public init(sourcePort: UInt16 = 4500, destinationPort: UInt16 = 4500, originalAddress: [UInt8]? = nil,
                type: UInt16 = XfrmEncapsulation.espInUDP) {
        self.type = type
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.originalAddress = originalAddress
    }

    var typeName: String {
        switch type {
        case 2: return "espinudp"
        case 1: return "espinudp-nonike"
        case 7: return "espintcp"
        default: return "type \(type)"
        }
    }

    public var description: String {
        "encap \(typeName) \(sourcePort) \(destinationPort) \(originalAddress.map(formatAddress) ?? "0.0.0.0")"
    }
}

/// A selector (`struct xfrm_selector`): which traffic a policy, or a state, applies to.
public struct XfrmSelector: Sendable, Hashable, CustomStringConvertible {
    public var source: [UInt8]
    public var sourcePrefixLength: UInt8
    public var destination: [UInt8]
    public var destinationPrefixLength: UInt8
    /// `AF_INET`, `AF_INET6`, or `AF_UNSPEC` (0) for a selector that matches both.
    public var family: UInt16
    /// IP protocol (`IPPROTO_UDP` …); 0 for any.
    public var ipProtocol: UInt8
    /// Ports; 0 for any.
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// An interface index; 0 for any.
    public var interfaceIndex: Int32

    public init(source: [UInt8], sourcePrefixLength: Int, destination: [UInt8], destinationPrefixLength: Int,
                ipProtocol: UInt8 = 0, sourcePort: UInt16 = 0, destinationPort: UInt16 = 0, interfaceIndex: Int32 = 0) {
        self.source = source
        self.sourcePrefixLength = UInt8(sourcePrefixLength)
        self.destination = destination
        self.destinationPrefixLength = UInt8(destinationPrefixLength)
        self.family = UInt16(addressFamily(of: destination))
        self.ipProtocol = ipProtocol
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.interfaceIndex = interfaceIndex
    }

    /// Parses `ADDR/LEN` (or a bare address) for both ends; nil when either does not parse or
    /// the families differ.
    public init?(source: String, destination: String, ipProtocol: UInt8 = 0, sourcePort: UInt16 = 0,
                 destinationPort: UInt16 = 0) {
        guard let s = parsePrefix(source), let d = parsePrefix(destination), s.address.count == d.address.count else { return nil }
        self.init(source: s.address, sourcePrefixLength: s.length, destination: d.address, destinationPrefixLength: d.length,
                  ipProtocol: ipProtocol, sourcePort: sourcePort, destinationPort: destinationPort)
    }

    /// Matches everything (`AF_UNSPEC`, all zeros), as a tunnel-mode state's selector usually does.
    public static let any = XfrmSelector(family: 0)

    /// Matches all traffic of one family (`0.0.0.0/0` or `::/0`).
    public static func all(family: UInt16) -> XfrmSelector { XfrmSelector(family: family) }

    private init(family: UInt16) {
        let n = family == UInt16(AF_INET6) ? 16 : 4
        source = Array(repeating: 0, count: n)
        destination = source
        sourcePrefixLength = 0
        destinationPrefixLength = 0
        self.family = family
        ipProtocol = 0
        sourcePort = 0
        destinationPort = 0
        interfaceIndex = 0
    }

    public var isAny: Bool {
        family == 0 && sourcePrefixLength == 0 && destinationPrefixLength == 0 && ipProtocol == 0
            && sourcePort == 0 && destinationPort == 0 && interfaceIndex == 0
    }

    /// `src 192.0.1.0/24 dst 192.0.2.0/24 [proto udp [sport S] [dport D]] [dev #I]`, as `ip xfrm` writes a selector.
    public var description: String {
        var s = "src \(formatAddress(source))/\(sourcePrefixLength) dst \(formatAddress(destination))/\(destinationPrefixLength)"
        if ipProtocol != 0 {
            s += " proto \(protocolName(ipProtocol))"
            if sourcePort != 0 { s += " sport \(sourcePort)" }
            if destinationPort != 0 { s += " dport \(destinationPort)" }
        }
        if interfaceIndex != 0 { s += " dev #\(interfaceIndex)" }
        return s
    }
}

/// Lifetime counters (`struct xfrm_lifetime_cur`): what went through a state or policy.
public struct XfrmLifetimeCounters: Sendable, Hashable, CustomStringConvertible {
    public var bytes: UInt64
    public var packets: UInt64
    /// Seconds since the epoch when it was added, and first used (0: never).
    public var addTime: UInt64
    public var useTime: UInt64

    public init(bytes: UInt64 = 0, packets: UInt64 = 0, addTime: UInt64 = 0, useTime: UInt64 = 0) {
        self.bytes = bytes
        self.packets = packets
        self.addTime = addTime
        self.useTime = useTime
    }

    public var description: String { "\(bytes)(bytes), \(packets)(packets)" }
}

/// Lifetime limits (`struct xfrm_lifetime_cfg`); `.max` means none, as `XFRM_INF`.
public struct XfrmLifetimeLimits: Sendable, Hashable {
    public var softBytes: UInt64 = .max
    public var hardBytes: UInt64 = .max
    public var softPackets: UInt64 = .max
    public var hardPackets: UInt64 = .max
    public var softAddSeconds: UInt64 = 0
    public var hardAddSeconds: UInt64 = 0
    public var softUseSeconds: UInt64 = 0
    public var hardUseSeconds: UInt64 = 0
    public init() {}
    public static let unlimited = XfrmLifetimeLimits()

    var arguments: String {
        var s = ""
        if softBytes != .max { s += " limit byte-soft \(softBytes)" }
        if hardBytes != .max { s += " limit byte-hard \(hardBytes)" }
        if softPackets != .max { s += " limit packet-soft \(softPackets)" }
        if hardPackets != .max { s += " limit packet-hard \(hardPackets)" }
        if softAddSeconds != 0 { s += " limit time-soft \(softAddSeconds)" }
        if hardAddSeconds != 0 { s += " limit time-hard \(hardAddSeconds)" }
        if softUseSeconds != 0 { s += " limit time-use-soft \(softUseSeconds)" }
        if hardUseSeconds != 0 { s += " limit time-use-hard \(hardUseSeconds)" }
        return s
    }
}

/// A state's error counters (`struct xfrm_stats`).
public struct XfrmStateStatistics: Sendable, Hashable, CustomStringConvertible {
    public var replayWindow: UInt32 = 0
    public var replay: UInt32 = 0
    public var integrityFailed: UInt32 = 0
    public init() {}
    public var description: String { "replay-window \(replayWindow) replay \(replay) failed \(integrityFailed)" }
}

// MARK: - Text helpers

/// Parses `ADDR/LEN` or a bare address (a host prefix) into network-order bytes.
func parsePrefix(_ text: String) -> (address: [UInt8], length: Int)? {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count <= 2, let address = parseAddress(String(parts[0])) else { return nil }
    var length = address.count * 8
    if parts.count == 2 {
        guard let n = Int(parts[1]), n >= 0, n <= length else { return nil }
        length = n
    }
    return (address, length)
}

/// Parses an IPv4 or IPv6 address into network-order bytes.
public func parseAddress(_ text: String) -> [UInt8]? {
    if text.contains(":") {
        var a = in6_addr()
        guard inet_pton(AF_INET6, text, &a) == 1 else { return nil }
        return withUnsafeBytes(of: a) { Array($0) }
    }
    var a = in_addr()
    guard inet_pton(AF_INET, text, &a) == 1 else { return nil }
    return withUnsafeBytes(of: a) { Array($0) }
}

func protocolName(_ p: UInt8) -> String {
    switch p {
    case 1: return "icmp"
    case 6: return "tcp"
    case 17: return "udp"
    case 50: return "esp"
    case 58: return "ipv6-icmp"
    default: return String(p)
    }
}

func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
