import Foundation
import Glibc
import Namespaces
import Netlink

/// One packet seen on an interface, from its IP header on (link-layer header removed), with
/// where and when it was seen; what a test asks about it (addresses, protocol, ports, the SPI
/// when it is ESP) is its `summary`, parsed as the NFLOG trace's packets are.
public struct CapturedPacket: Sendable, CustomStringConvertible {
    public enum Direction: Sendable { case incoming, outgoing }

    public var time: Date
    public var interfaceIndex: Int32
    public var direction: Direction
    /// The packet from its IP header on.
    public let bytes: [UInt8]
    /// The packet parsed; nil when the bytes are no IPv4 or IPv6 packet.
    public let summary: PacketSummary?

    public init(time: Date, interfaceIndex: Int32, direction: Direction, bytes: [UInt8]) {
        self.time = time
        self.interfaceIndex = interfaceIndex
        self.direction = direction
        self.bytes = bytes
        summary = PacketSummary(bytes)
    }

    public var ipVersion: Int { summary?.version ?? 0 }
    public var source: [UInt8]? { summary?.source }
    public var destination: [UInt8]? { summary?.destination }
    /// The IPv4 protocol or the IPv6 next header (after hop-by-hop, routing and destination options).
    public var ipProtocol: UInt8? { summary?.protocolNumber }

    public var udpPorts: (source: UInt16, destination: UInt16)? {
        guard let s = summary, s.proto == .udp, let from = s.sourcePort, let to = s.destinationPort else { return nil }
        return (from, to)
    }

    /// The ESP header's SPI and sequence number: of an ESP packet (IP protocol 50) or of ESP in
    /// UDP on port 4500 (RFC 3948; a zero first word is the non-ESP marker of IKE, not ESP).
    public var esp: (spi: UInt32, sequence: UInt32, udpEncapsulated: Bool)? {
        guard let s = summary, s.proto == .esp || s.encapsulated, let spi = s.spi, let sequence = s.sequence else { return nil }
        return (spi, sequence, s.encapsulated)
    }

    public var description: String {
        (direction == .outgoing ? "out " : "in ") + (summary.map { "\($0)" } ?? "not IP") + " (\(bytes.count) bytes)"
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
