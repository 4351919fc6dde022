import CNetlink
import Glibc

// Kernel constants come in as Int (anonymous enums), as imported enum structs (named enums)
// or as Int32 macros; these helpers give them the width netlink wants.
@inline(__always) func nl16<T: BinaryInteger>(_ v: T) -> UInt16 { UInt16(truncatingIfNeeded: v) }
@inline(__always) func nl8<T: BinaryInteger>(_ v: T) -> UInt8 { UInt8(truncatingIfNeeded: v) }

/// Renders network-order address bytes (4 or 16) as text.
public func formatAddress(_ bytes: [UInt8]) -> String {
    guard bytes.count == 4 || bytes.count == 16 else { return bytes.map { String(format: "%02x", $0) }.joined(separator: ":") }
    var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
    let af = bytes.count == 4 ? AF_INET : AF_INET6
    let ok = bytes.withUnsafeBytes { inet_ntop(af, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
    guard ok != nil else { return "?" }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The address family for address bytes: `AF_INET` for 4, `AF_INET6` for 16.
public func addressFamily(of bytes: [UInt8]) -> UInt8 { bytes.count == 16 ? UInt8(AF_INET6) : UInt8(AF_INET) }

/// Renders a routing table number as `ip` does.
public func tableName(_ id: UInt32) -> String {
    switch id {
    case 254: return "main"
    case 255: return "local"
    case 253: return "default"
    default: return String(id)
    }
}

/// `ip -n NS ` or an empty prefix when the namespace is unnamed.
func ipPrefix(_ namespace: String?) -> String {
    guard let namespace, !namespace.isEmpty else { return "ip " }
    return "ip -n \(namespace) "
}

extension Attribute {
    /// Serialises attributes into bytes (for payloads that embed a header and attributes,
    /// such as the veth peer's `ifinfomsg`).
    static func encode(_ attributes: [Attribute]) -> [UInt8] {
        var out: [UInt8] = []
        for a in attributes {
            let body: [UInt8]
            var type = a.type
            switch a.value {
            case .bytes(let b): body = b
            case .nested(let c):
                body = encode(c)
                type |= nl16(NLA_F_NESTED)
            }
            out += Bytes.of(UInt16(4 + body.count)) + Bytes.of(type) + body
            out += Array(repeating: 0, count: Bytes.align(body.count) - body.count)
        }
        return out
    }
}
