import Foundation
import Glibc
import Namespaces
import Netlink

/// One packet seen on an interface, from its IP header on (link-layer header removed), with
/// what a test asks about it: addresses, protocol, ports, and the SPI when it is ESP.
public struct CapturedPacket: Sendable, CustomStringConvertible {
    public enum Direction: Sendable { case incoming, outgoing }

    public var time: Date
    public var interfaceIndex: Int32
    public var direction: Direction
    /// The packet from its IP header on.
    public var bytes: [UInt8]

    public var ipVersion: Int { bytes.first.map { Int($0 >> 4) } ?? 0 }
    public var source: [UInt8]? {
        switch ipVersion {
        case 4 where bytes.count >= 20: return Array(bytes[12..<16])
        case 6 where bytes.count >= 40: return Array(bytes[8..<24])
        default: return nil
        }
    }
    public var destination: [UInt8]? {
        switch ipVersion {
        case 4 where bytes.count >= 20: return Array(bytes[16..<20])
        case 6 where bytes.count >= 40: return Array(bytes[24..<40])
        default: return nil
        }
    }
    /// The IPv4 protocol or the IPv6 next header (extension headers are not followed).
    public var ipProtocol: UInt8? {
        switch ipVersion {
        case 4 where bytes.count >= 20: return bytes[9]
        case 6 where bytes.count >= 40: return bytes[6]
        default: return nil
        }
    }
    /// Bytes after the IP header.
    var transport: ArraySlice<UInt8> {
        switch ipVersion {
        case 4 where bytes.count >= 20:
            let ihl = Int(bytes[0] & 0x0f) * 4
            return ihl <= bytes.count ? bytes[ihl...] : []
        case 6 where bytes.count >= 40: return bytes[40...]
        default: return []
        }
    }
    public var udpPorts: (source: UInt16, destination: UInt16)? {
        let t = transport
        guard ipProtocol == 17, t.count >= 8 else { return nil }
        let b = t.startIndex
        return (UInt16(t[b]) << 8 | UInt16(t[b + 1]), UInt16(t[b + 2]) << 8 | UInt16(t[b + 3]))
    }

    /// The ESP header's SPI and sequence number: of an ESP packet (IP protocol 50) or of ESP in
    /// UDP on port 4500 (RFC 3948; a zero first word is the non-ESP marker of IKE, not ESP).
    public var esp: (spi: UInt32, sequence: UInt32, udpEncapsulated: Bool)? {
        var t = transport
        var udp = false
        if ipProtocol == 17, let ports = udpPorts, ports.source == 4500 || ports.destination == 4500 {
            t = t.dropFirst(8)
            udp = true
        } else if ipProtocol != 50 {
            return nil
        }
        guard t.count >= 8 else { return nil }
        let b = t.startIndex
        let spi = t[b..<b + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let seq = t[b + 4..<b + 8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        if udp && spi == 0 { return nil }
        return (spi, seq, udp)
    }

    public var description: String {
        var s = direction == .outgoing ? "out " : "in "
        s += "\(source.map(formatAddress) ?? "?") → \(destination.map(formatAddress) ?? "?")"
        if let esp {
            s += " ESP\(esp.udpEncapsulated ? " in UDP 4500" : "") spi 0x\(String(esp.spi, radix: 16)) seq \(esp.sequence)"
        } else if let ports = udpPorts {
            s += " UDP \(ports.source) → \(ports.destination)"
        } else if let p = ipProtocol {
            s += " proto \(p)"
        }
        return s + " (\(bytes.count) bytes)"
    }
}

/// An AF_PACKET socket opened inside a namespace and bound to one of its interfaces: sees every
/// packet the interface sends and receives from the moment it exists. Open it before sending.
///
/// Equivalent to `ip netns exec NS tcpdump -i IFACE -w …` (in cooked mode, IP packets only).
public final class PacketCapture: @unchecked Sendable {
    private let socket: Socket
    public let namespace: String
    public let interface: String
    public private(set) var packets: [CapturedPacket] = []

    public init(namespace ns: Namespace, interface: String) throws {
        guard let link = try ns.route.link(named: interface, namespace: ns.name) else {
            throw SystemCallError("capture", errno: ENODEV, context: "\(interface) in \(ns.name)")
        }
        let all = UInt16(0x0003).bigEndian  // ETH_P_ALL
        socket = Socket(fd: try ns.openSocket(domain: AF_PACKET, type: Int32(SOCK_DGRAM.rawValue), protocol: Int32(all)))
        namespace = ns.name
        self.interface = interface
        // struct sockaddr_ll { u16 family; be16 protocol; int ifindex; u16 hatype; u8 pkttype; u8 halen; u8 addr[8]; }
        var address = [UInt8](repeating: 0, count: 20)
        address.replaceSubrange(0..<2, with: Bytes.of(UInt16(AF_PACKET)))
        address.replaceSubrange(2..<4, with: Bytes.of(all))
        address.replaceSubrange(4..<8, with: Bytes.of(link.index))
        let r = address.withUnsafeBytes { Glibc.bind(socket.fd, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), 20) }
        guard r == 0 else { throw SystemCallError("bind(AF_PACKET)", context: "\(interface) in \(ns.name)") }
    }

    /// Waits up to `timeout` seconds for a packet that satisfies `predicate`; every packet read
    /// is kept in `packets`.
    public func next(timeout: Double, where predicate: (CapturedPacket) -> Bool = { _ in true }) throws -> CapturedPacket? {
        let deadline = Date().addingTimeInterval(timeout)
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            let r = poll(&pfd, 1, Int32(max(1, left * 1000)))
            if r < 0 && errno == EINTR { continue }
            if r < 0 { throw SystemCallError("poll", context: "capture on \(interface) in \(namespace)") }
            if r == 0 { return nil }
            var from = [UInt8](repeating: 0, count: 20)
            var fromLength = socklen_t(20)
            let n = from.withUnsafeMutableBytes { f in
                recvfrom(socket.fd, &buffer, buffer.count, 0, f.baseAddress!.assumingMemoryBound(to: sockaddr.self), &fromLength)
            }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw SystemCallError("recvfrom", context: "capture on \(interface) in \(namespace)")
            }
            let protocolNumber = UInt16(from[2]) << 8 | UInt16(from[3])
            guard protocolNumber == 0x0800 || protocolNumber == 0x86dd else { continue }  // IP only
            let packet = CapturedPacket(time: Date(), interfaceIndex: Bytes.load(Int32.self, from: from[4...]) ?? 0,
                                        direction: from[10] == 4 ? .outgoing : .incoming,  // PACKET_OUTGOING
                                        bytes: Array(buffer[0..<n]))
            packets.append(packet)
            if predicate(packet) { return packet }
        }
    }

    /// Every packet within `seconds`.
    public func collect(for seconds: Double) throws -> [CapturedPacket] {
        let before = packets.count
        _ = try next(timeout: seconds) { _ in false }
        return Array(packets[before...])
    }

    /// Writes the packets read so far as a pcap file (`LINKTYPE_RAW`), for Wireshark.
    public func writePCAP(to path: String) throws {
        var out: [UInt8] = []
        out += Bytes.of(UInt32(0xa1b2_c3d4)) + Bytes.of(UInt16(2)) + Bytes.of(UInt16(4))
        out += Bytes.of(Int32(0)) + Bytes.of(UInt32(0)) + Bytes.of(UInt32(65535)) + Bytes.of(UInt32(101))
        for p in packets {
            let t = p.time.timeIntervalSince1970
            out += Bytes.of(UInt32(t)) + Bytes.of(UInt32((t - t.rounded(.down)) * 1_000_000))
            out += Bytes.of(UInt32(p.bytes.count)) + Bytes.of(UInt32(p.bytes.count)) + p.bytes
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(out)) else {
            throw SystemCallError("write", errno: EIO, context: path)
        }
    }
}
