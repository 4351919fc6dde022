import Foundation
import Glibc
import Namespaces
import Netlink

/// A socket address for an IPv4 or IPv6 address (network-order bytes) and port.
struct SocketAddress {
    var storage = sockaddr_storage()
    var length: socklen_t

    init(bytes: [UInt8], port: UInt16) {
        if bytes.count == 4 {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: bytes) }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { s in withUnsafeBytes(of: sin) { s.copyMemory(from: $0) } }
        } else {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: bytes) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { s in withUnsafeBytes(of: sin6) { s.copyMemory(from: $0) } }
        }
    }

    init() { length = socklen_t(MemoryLayout<sockaddr_storage>.size) }

    var addressBytes: [UInt8] {
        withUnsafeBytes(of: storage) { raw in
            if storage.ss_family == sa_family_t(AF_INET) { return Array(raw[4..<8]) }
            return Array(raw[8..<24])
        }
    }
    var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in UInt16(raw[2]) << 8 | UInt16(raw[3]) }
    }

    func withPointer<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
    mutating func withMutablePointer<T>(_ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> T) -> T {
        var len = length
        let r = withUnsafeMutableBytes(of: &storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), &len) }
        length = len
        return r
    }
}

/// An open socket descriptor, closed when dropped.
final class Socket {
    let fd: Int32
    init(fd: Int32) { self.fd = fd }
    deinit { close(fd) }

    func set(_ level: Int32, _ name: Int32, _ value: Int32, what: String) throws {
        var v = value
        guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SystemCallError("setsockopt(\(what))")
        }
    }

    func bind(_ address: SocketAddress, what: String) throws {
        let r = address.withPointer { Glibc.bind(fd, $0, $1) }
        guard r == 0 else { throw SystemCallError("bind", context: what) }
    }

    func send(_ bytes: [UInt8], to address: SocketAddress) throws {
        let n = address.withPointer { p, l in bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, p, l) } }
        guard n == bytes.count else { throw SystemCallError("sendto") }
    }

    /// Waits up to `timeout` seconds until `fd` is ready for `events`.
    static func wait(_ fd: Int32, for events: Int32, timeout: Double) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(events), revents: 0)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return false }
            let r = poll(&pfd, 1, Int32(max(1, left * 1000)))
            if r > 0 { return true }
            if r == 0 || errno != EINTR { return false }
        }
    }

    /// Waits up to `timeout` seconds for a datagram; nil when none came.
    func receive(timeout: Double, from: inout SocketAddress) throws -> [UInt8]? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { return nil }
            let r = poll(&pfd, 1, Int32(max(1, left * 1000)))
            if r < 0 && errno == EINTR { continue }
            if r < 0 { throw SystemCallError("poll") }
            if r == 0 { return nil }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = from.withMutablePointer { p, l in recvfrom(fd, &buffer, buffer.count, 0, p, l) }
            if n < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                throw SystemCallError("recvfrom")
            }
            return Array(buffer[0..<n])
        }
    }
}
