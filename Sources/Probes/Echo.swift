import Foundation
import Glibc
import Namespaces
import Netlink

/// What one request/response exchange showed.
public struct RoundTrip: Sendable, CustomStringConvertible {
    public var request: String
    /// The responder got the request.
    public var delivered: Bool
    /// The sender got the answer.
    public var answered: Bool
    /// Why the sender's kernel refused to send at all (`sendto` → ENETUNREACH, EPERM …).
    public var refused: String?
    /// The source address the responder saw (after any NAT), as text.
    public var seenSource: String?
    /// What the responder answered (its identity, for UDP).
    public var reply: String?
    public var seconds: Double

    public var description: String {
        var s = "\(request): "
        if let refused { return s + "refused by the sender's kernel: \(refused)" }
        if !delivered { return s + "not delivered" }
        s += "delivered"
        if let seenSource { s += " (seen from \(seenSource))" }
        s += answered ? ", answered" : ", no answer"
        if let reply { s += " \"\(reply)\"" }
        return s + String(format: " in %.2f ms", seconds * 1000)
    }
}

/// Packets sent from inside one namespace to another, with a socket mark, a source address or
/// a bound device, and an answer, so both directions are exercised.
public enum Echo {
    /// Sends one UDP datagram from `from` to `to`'s `destination:port`, where a socket bound
    /// there answers with `identity` (its socket marked `replyMark`, when given). Equivalent to a
    /// one-shot `nc -u` client and server. With `resendEvery`, the same datagram goes again at
    /// that interval until the timeout, as a UDP application that retries would send it.
    public static func udp(from: Namespace, to: Namespace, destination: [UInt8], port: UInt16 = 7000,
                           source: [UInt8]? = nil, mark: UInt32? = nil, device: String? = nil,
                           identity: String? = nil, replyMark: UInt32? = nil, timeout: Double = 3,
                           resendEvery: Double? = nil) throws -> RoundTrip {
        let started = Date()
        let family = destination.count == 4 ? AF_INET : AF_INET6
        let describe = "udp \(from.name) → \(formatAddress(destination)):\(port)" + (mark.map { " mark 0x\(String($0, radix: 16))" } ?? "")
        let server = Socket(fd: try to.openSocket(domain: family, type: Int32(SOCK_DGRAM.rawValue), protocol: 0))
        try server.set(SOL_SOCKET, SO_REUSEADDR, 1, what: "SO_REUSEADDR")
        try server.bind(SocketAddress(bytes: destination, port: port), what: "\(to.name) \(formatAddress(destination)):\(port)")
        // The answer carries its own mark, so it can take a marked policy or route back.
        if let replyMark { try server.set(SOL_SOCKET, SO_MARK, Int32(bitPattern: replyMark), what: "SO_MARK") }
        let client = Socket(fd: try from.openSocket(domain: family, type: Int32(SOCK_DGRAM.rawValue), protocol: 0))
        if let mark { try client.set(SOL_SOCKET, SO_MARK, Int32(bitPattern: mark), what: "SO_MARK") }
        if let device {
            guard setsockopt(client.fd, SOL_SOCKET, SO_BINDTODEVICE, device, socklen_t(device.utf8.count)) == 0 else {
                throw SystemCallError("setsockopt(SO_BINDTODEVICE)", context: device)
            }
        }
        if let source { try client.bind(SocketAddress(bytes: source, port: 0), what: "source \(formatAddress(source))") }
        let payload = Array("xfrmlab probe \(UInt32.random(in: 0...UInt32.max))".utf8)
        var trip = RoundTrip(request: describe, delivered: false, answered: false, seconds: 0)
        if let refusal = try Echo.send(client, payload, to: SocketAddress(bytes: destination, port: port)) {
            trip.refused = refusal
            trip.seconds = Date().timeIntervalSince(started)
            return trip
        }

        var peer = SocketAddress()
        var got: [UInt8]?
        let deadline = started.addingTimeInterval(timeout)
        while got == nil {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { break }
            got = try server.receive(timeout: min(left, resendEvery ?? left), from: &peer)
            if got == nil, resendEvery != nil, deadline.timeIntervalSinceNow > 0,
               let refusal = try Echo.send(client, payload, to: SocketAddress(bytes: destination, port: port)) {
                trip.refused = refusal
                break
            }
        }
        guard let got, got == payload else {
            trip.seconds = Date().timeIntervalSince(started)
            return trip
        }
        trip.delivered = true
        trip.seenSource = "\(formatAddress(peer.addressBytes)):\(peer.port)"
        try server.send(Array((identity ?? to.name).utf8), to: peer)
        var back = SocketAddress()
        if let answer = try client.receive(timeout: timeout, from: &back) {
            trip.answered = true
            trip.reply = String(decoding: answer, as: UTF8.self)
        }
        trip.seconds = Date().timeIntervalSince(started)
        return trip
    }

    /// Opens a TCP connection from `from` to a listener on `to`'s `destination:port`, sends a
    /// line and reads the listener's answer (its identity). Equivalent to a one-shot `nc`
    /// client and server; the whole handshake, request and answer cross the path both ways.
    public static func tcp(from: Namespace, to: Namespace, destination: [UInt8], port: UInt16 = 7000,
                           source: [UInt8]? = nil, mark: UInt32? = nil, identity: String? = nil,
                           timeout: Double = 3) throws -> RoundTrip {
        let started = Date()
        let family = destination.count == 4 ? AF_INET : AF_INET6
        let describe = "tcp \(from.name) → \(formatAddress(destination)):\(port)" + (mark.map { " mark 0x\(String($0, radix: 16))" } ?? "")
        var trip = RoundTrip(request: describe, delivered: false, answered: false, seconds: 0)
        // Measured at each return (a `defer` would set it on a copy after the value is returned).
        func done(_ trip: RoundTrip) -> RoundTrip { var t = trip; t.seconds = Date().timeIntervalSince(started); return t }
        let listener = Socket(fd: try to.openSocket(domain: family, type: Int32(SOCK_STREAM.rawValue), protocol: 0))
        try listener.set(SOL_SOCKET, SO_REUSEADDR, 1, what: "SO_REUSEADDR")
        try listener.bind(SocketAddress(bytes: destination, port: port), what: "\(to.name) \(formatAddress(destination)):\(port)")
        guard listen(listener.fd, 4) == 0 else { throw SystemCallError("listen") }
        let client = Socket(fd: try from.openSocket(domain: family, type: Int32(SOCK_STREAM.rawValue), protocol: 0))
        if let mark { try client.set(SOL_SOCKET, SO_MARK, Int32(bitPattern: mark), what: "SO_MARK") }
        if let source { try client.bind(SocketAddress(bytes: source, port: 0), what: "source \(formatAddress(source))") }
        _ = fcntl(client.fd, F_SETFL, fcntl(client.fd, F_GETFL) | O_NONBLOCK)
        let target = SocketAddress(bytes: destination, port: port)
        if target.withPointer({ connect(client.fd, $0, $1) }) != 0 && errno != EINPROGRESS {
            trip.refused = "connect → \(errnoName(errno)) (\(errnoText(errno)))"
            return done(trip)
        }
        // The kernel completes the handshake on its own; the listener becomes readable.
        guard Socket.wait(listener.fd, for: POLLIN, timeout: timeout) else { return done(trip) }
        let accepted = accept(listener.fd, nil, nil)
        guard accepted >= 0 else { throw SystemCallError("accept") }
        let connection = Socket(fd: accepted)
        guard Socket.wait(client.fd, for: POLLOUT, timeout: timeout) else { return done(trip) }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(client.fd, SOL_SOCKET, SO_ERROR, &error, &length)
        if error != 0 {
            trip.refused = "connect → \(errnoName(error)) (\(errnoText(error)))"
            return done(trip)
        }
        let payload = Array("xfrmlab probe\n".utf8)
        guard write(client.fd, payload, payload.count) == payload.count else { throw SystemCallError("write") }
        guard Socket.wait(connection.fd, for: POLLIN, timeout: timeout) else { return done(trip) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let got = read(connection.fd, &buffer, buffer.count)
        guard got > 0, Array(buffer[0..<got]) == payload else { return done(trip) }
        trip.delivered = true
        var peer = SocketAddress()
        if peer.withMutablePointer({ getpeername(connection.fd, $0, $1) }) == 0 {
            trip.seenSource = "\(formatAddress(peer.addressBytes)):\(peer.port)"
        }
        let answer = Array((identity ?? to.name).utf8)
        _ = write(connection.fd, answer, answer.count)
        guard Socket.wait(client.fd, for: POLLIN, timeout: timeout) else { return done(trip) }
        let back = read(client.fd, &buffer, buffer.count)
        if back > 0 {
            trip.answered = true
            trip.reply = String(decoding: buffer[0..<back], as: UTF8.self)
        }
        return done(trip)
    }

    /// Sends ICMP or ICMPv6 echo requests from `from`, one every `timeout / attempts` seconds
    /// as `ping` does, until one is answered or the time is up.
    /// Equivalent to `ip netns exec FROM ping -c ATTEMPTS -w TIMEOUT [-m MARK] DESTINATION`.
    public static func ping(from: Namespace, destination: [UInt8], mark: UInt32? = nil, timeout: Double = 3,
                            attempts: Int = 3) throws -> RoundTrip {
        let started = Date()
        let v6 = destination.count == 16
        let describe = "ping \(from.name) → \(formatAddress(destination))" + (mark.map { " mark 0x\(String($0, radix: 16))" } ?? "")
        let s = Socket(fd: try from.openSocket(domain: v6 ? AF_INET6 : AF_INET, type: Int32(SOCK_RAW.rawValue),
                                               protocol: Int32(v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)))
        if let mark { try s.set(SOL_SOCKET, SO_MARK, Int32(bitPattern: mark), what: "SO_MARK") }
        let ident = UInt16.random(in: 1...UInt16.max)
        var trip = RoundTrip(request: describe, delivered: false, answered: false, seconds: 0)
        // Unanswered: the time waited. Answered: from sending the request answered to its reply,
        // as ping prints it.
        func done(_ trip: RoundTrip, sent: Date? = nil) -> RoundTrip { var t = trip; t.seconds = Date().timeIntervalSince(sent ?? started); return t }
        var sentAt: [UInt16: Date] = [:]
        let deadline = Date().addingTimeInterval(timeout)
        let interval = timeout / Double(max(1, attempts))
        for seq in 1...UInt16(max(1, attempts)) {
            var packet: [UInt8] = [v6 ? 128 : 8, 0, 0, 0, UInt8(ident >> 8), UInt8(ident & 0xff), UInt8(seq >> 8), UInt8(seq & 0xff)]
            packet += Array("xfrmlab".utf8)
            if !v6 {
                let c = checksum(packet)
                packet[2] = UInt8(c >> 8)
                packet[3] = UInt8(c & 0xff)
            }
            sentAt[seq] = Date()
            if let refusal = try Echo.send(s, packet, to: SocketAddress(bytes: destination, port: 0)) {
                trip.refused = refusal
                return done(trip)
            }
            let next = min(deadline, Date().addingTimeInterval(interval))
            while next.timeIntervalSinceNow > 0 {
                var peer = SocketAddress()
                guard var reply = try s.receive(timeout: next.timeIntervalSinceNow, from: &peer) else { break }
                // Raw IPv4 sockets hand over the IP header too.
                if !v6, let first = reply.first { reply = Array(reply.dropFirst(Int(first & 0x0f) * 4)) }
                guard reply.count >= 8, reply[0] == (v6 ? 129 : 0),
                      UInt16(reply[4]) << 8 | UInt16(reply[5]) == ident, peer.addressBytes == destination else { continue }
                trip.delivered = true
                trip.answered = true
                trip.seenSource = formatAddress(peer.addressBytes)
                return done(trip, sent: sentAt[UInt16(reply[6]) << 8 | UInt16(reply[7])])
            }
        }
        return done(trip)
    }

    /// Sends, turning the kernel's refusals to route or pass the packet into an observation.
    static func send(_ socket: Socket, _ bytes: [UInt8], to address: SocketAddress) throws -> String? {
        do {
            try socket.send(bytes, to: address)
            return nil
        } catch let e as SystemCallError where [ENETUNREACH, EHOSTUNREACH, EPERM, EACCES, EADDRNOTAVAIL, EINVAL].contains(e.errno) {
            return "sendto → \(errnoName(e.errno)) (\(errnoText(e.errno)))"
        }
    }

    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var i = 0
        while i + 1 < bytes.count {
            sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return ~UInt16(sum)
    }
}
