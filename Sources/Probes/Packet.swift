import Netlink

/// What a packet's headers say, as far as a mark question needs: addresses, protocol, ports,
/// ICMP type, ESP SPI (also inside UDP encapsulation).
public struct PacketSummary: Sendable, Hashable, CustomStringConvertible {
    public enum Proto: String, Sendable, Hashable { case udp, tcp, icmp, icmpv6, esp, ah, other }

    public var version: Int
    public var source: [UInt8]
    public var destination: [UInt8]
    public var proto: Proto
    public var protocolNumber: UInt8
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    /// ESP's SPI, for plain ESP or ESP in UDP (NAT-T, port 4500).
    public var spi: UInt32?
    /// ESP's sequence number, beside its SPI.
    public var sequence: UInt32?
    public var encapsulated: Bool
    public var icmpType: UInt8?
    public var length: Int

    /// Parses an IPv4 or IPv6 packet; nil when the bytes are no such packet.
    public init?(_ bytes: [UInt8]) {
        guard let first = bytes.first else { return nil }
        version = Int(first >> 4)
        length = bytes.count
        var offset: Int
        if version == 4 {
            guard bytes.count >= 20 else { return nil }
            let ihl = Int(first & 0x0f) * 4
            guard ihl >= 20, bytes.count >= ihl else { return nil }
            protocolNumber = bytes[9]
            source = Array(bytes[12..<16])
            destination = Array(bytes[16..<20])
            offset = ihl
        } else if version == 6 {
            guard bytes.count >= 40 else { return nil }
            protocolNumber = bytes[6]
            source = Array(bytes[8..<24])
            destination = Array(bytes[24..<40])
            offset = 40
            // Hop-by-hop, routing, destination options: skip to the transport header.
            while [0, 43, 60].contains(protocolNumber), bytes.count >= offset + 8 {
                protocolNumber = bytes[offset]
                offset += (Int(bytes[offset + 1]) + 1) * 8
            }
        } else {
            return nil
        }
        encapsulated = false
        let rest = offset <= bytes.count ? Array(bytes[offset...]) : []
        func u16(_ i: Int) -> UInt16? { rest.count >= i + 2 ? UInt16(rest[i]) << 8 | UInt16(rest[i + 1]) : nil }
        func u32(_ i: Int, in b: [UInt8]) -> UInt32? {
            b.count >= i + 4 ? UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3]) : nil
        }
        switch protocolNumber {
        case 17:
            proto = .udp
            sourcePort = u16(0)
            destinationPort = u16(2)
            // RFC 3948: on port 4500 a non-zero first word is an ESP SPI (zero marks IKE).
            if sourcePort == 4500 || destinationPort == 4500, rest.count >= 12, let spi = u32(8, in: rest), spi != 0 {
                self.spi = spi
                sequence = u32(12, in: rest)
                encapsulated = true
            }
        case 6:
            proto = .tcp
            sourcePort = u16(0)
            destinationPort = u16(2)
        case 1:
            proto = .icmp
            icmpType = rest.first
        case 58:
            proto = .icmpv6
            icmpType = rest.first
        case 50:
            proto = .esp
            spi = u32(0, in: rest)
            sequence = u32(4, in: rest)
        case 51:
            proto = .ah
            spi = u32(4, in: rest)
        default:
            proto = .other
        }
    }

    public var description: String {
        let src = formatAddress(source), dst = formatAddress(destination)
        switch proto {
        case .udp where encapsulated:
            return "esp-in-udp spi 0x\(String(spi ?? 0, radix: 16)) \(src):\(sourcePort ?? 0) → \(dst):\(destinationPort ?? 0)"
        case .udp, .tcp:
            return "\(proto.rawValue) \(src):\(sourcePort ?? 0) → \(dst):\(destinationPort ?? 0)"
        case .icmp, .icmpv6:
            return "\(proto.rawValue) type \(icmpType ?? 0) \(src) → \(dst)"
        case .esp, .ah:
            return "\(proto.rawValue) spi 0x\(String(spi ?? 0, radix: 16)) \(src) → \(dst)"
        case .other:
            return "proto \(protocolNumber) \(src) → \(dst)"
        }
    }
}
