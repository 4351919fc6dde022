import Foundation
import Glibc
import Netlink

/// A value in a vici message: a string (bytes), a section, or a list of strings.
indirect enum ViciValue: Sendable, CustomStringConvertible {
    case value([UInt8])
    case section(ViciMessage)
    case list([[UInt8]])

    var string: String? {
        if case .value(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }
    var section: ViciMessage? {
        if case .section(let m) = self { return m }
        return nil
    }
    var strings: [String]? {
        if case .list(let l) = self { return l.map { String(decoding: $0, as: UTF8.self) } }
        return nil
    }

    var description: String {
        switch self {
        case .value(let b): return String(decoding: b, as: UTF8.self)
        case .section(let m): return "{\(m)}"
        case .list(let l): return "[" + l.map { String(decoding: $0, as: UTF8.self) }.joined(separator: ", ") + "]"
        }
    }
}

/// An ordered vici message (strongSwan's versatile IKE control interface, `src/libcharon/plugins/vici/README.md`).
struct ViciMessage: Sendable, CustomStringConvertible {
    var items: [(key: String, value: ViciValue)] = []

    init(_ items: [(String, ViciValue)] = []) { self.items = items.map { (key: $0.0, value: $0.1) } }

    subscript(key: String) -> ViciValue? { items.first { $0.key == key }?.value }

    var description: String { items.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }

    // Element types.
    static let sectionStart: UInt8 = 1, sectionEnd: UInt8 = 2, keyValue: UInt8 = 3
    static let listStart: UInt8 = 4, listItem: UInt8 = 5, listEnd: UInt8 = 6

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        func name(_ s: String) {
            let b = Array(s.utf8.prefix(255))
            out.append(UInt8(b.count))
            out += b
        }
        func value(_ b: [UInt8]) {
            out += [UInt8((b.count >> 8) & 0xff), UInt8(b.count & 0xff)]
            out += b.prefix(0xffff)
        }
        func encode(_ m: ViciMessage) {
            for (k, v) in m.items {
                switch v {
                case .value(let b):
                    out.append(ViciMessage.keyValue); name(k); value(b)
                case .section(let s):
                    out.append(ViciMessage.sectionStart); name(k); encode(s); out.append(ViciMessage.sectionEnd)
                case .list(let l):
                    out.append(ViciMessage.listStart); name(k)
                    for item in l { out.append(ViciMessage.listItem); value(item) }
                    out.append(ViciMessage.listEnd)
                }
            }
        }
        encode(self)
        return out
    }

    /// Parses a message; malformed input is an error, never a crash (it comes from a daemon).
    static func decode(_ bytes: ArraySlice<UInt8>) throws -> ViciMessage {
        var i = bytes.startIndex
        func byte() throws -> UInt8 {
            guard i < bytes.endIndex else { throw DaemonError(.control, "vici: message ends early") }
            defer { i += 1 }
            return bytes[i]
        }
        func take(_ n: Int) throws -> [UInt8] {
            guard bytes.endIndex - i >= n else { throw DaemonError(.control, "vici: message ends early") }
            defer { i += n }
            return Array(bytes[i..<(i + n)])
        }
        func name() throws -> String { String(decoding: try take(Int(try byte())), as: UTF8.self) }
        func value() throws -> [UInt8] {
            let n = Int(try byte()) << 8 | Int(try byte())
            return try take(n)
        }
        var stack: [(name: String, message: ViciMessage)] = [("", ViciMessage())]
        while i < bytes.endIndex {
            switch try byte() {
            case keyValue:
                let k = try name()
                stack[stack.count - 1].message.items.append((k, .value(try value())))
            case sectionStart:
                stack.append((try name(), ViciMessage()))
                guard stack.count < 64 else { throw DaemonError(.control, "vici: sections nested too deep") }
            case sectionEnd:
                guard stack.count > 1 else { throw DaemonError(.control, "vici: section end without start") }
                let done = stack.removeLast()
                stack[stack.count - 1].message.items.append((done.name, .section(done.message)))
            case listStart:
                let k = try name()
                var items: [[UInt8]] = []
                while true {
                    let t = try byte()
                    if t == listEnd { break }
                    guard t == listItem else { throw DaemonError(.control, "vici: unexpected element \(t) in list \(k)") }
                    items.append(try value())
                }
                stack[stack.count - 1].message.items.append((k, .list(items)))
            case let t:
                throw DaemonError(.control, "vici: unknown element type \(t)")
            }
        }
        guard stack.count == 1 else { throw DaemonError(.control, "vici: unterminated section \(stack.last!.name)") }
        return stack[0].message
    }
}

/// A connection to charon's vici socket (a Unix socket, reachable by path from any network
/// namespace). One request at a time.
final class ViciConnection {
    // Packet types.
    static let cmdRequest: UInt8 = 0, cmdResponse: UInt8 = 1, cmdUnknown: UInt8 = 2
    static let eventRegister: UInt8 = 3, eventUnregister: UInt8 = 4, eventConfirm: UInt8 = 5
    static let eventUnknown: UInt8 = 6, event: UInt8 = 7

    let path: String
    private var fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw DaemonError(.control, "\(SystemCallError("socket(AF_UNIX)"))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        // A class's deinit runs when its init throws after every property is set: each failure
        // path closes through close(), which forgets the descriptor, or deinit would close the
        // number again, by then perhaps another thread's file (seen: a daemon's swanctl.conf
        // write failing with EBADF while the other daemon's vici socket was not yet there).
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close()
            throw DaemonError(.control, "vici socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let r = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard r == 0 else {
            let e = SystemCallError("connect", context: path)
            close()
            throw DaemonError(.control, "\(e)")
        }
    }

    deinit { close() }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    /// Sends `command` and returns its response; with `streaming`, also the events of that name
    /// the command emits before it (`list-sas` → `list-sa`).
    func call(_ command: String, _ arguments: ViciMessage = ViciMessage(), streaming event: String? = nil,
              timeout: Double = 10) throws -> (response: ViciMessage, events: [ViciMessage]) {
        let deadline = Date().addingTimeInterval(timeout)
        if let event {
            try send(ViciConnection.eventRegister, name: event)
            let (type, _, _) = try receive(until: deadline)
            guard type == ViciConnection.eventConfirm else {
                throw DaemonError(.control, "vici: registering for \(event) answered with packet type \(type)")
            }
        }
        try send(ViciConnection.cmdRequest, name: command, message: arguments)
        var events: [ViciMessage] = []
        while true {
            let (type, name, message) = try receive(until: deadline)
            switch type {
            case ViciConnection.event where name == event:
                events.append(message)
            case ViciConnection.event:
                continue
            case ViciConnection.cmdResponse:
                if let event {
                    try send(ViciConnection.eventUnregister, name: event)
                    while try receive(until: deadline).type != ViciConnection.eventConfirm {}
                }
                return (message, events)
            case ViciConnection.cmdUnknown:
                throw DaemonError(.control, "vici: charon does not know the command \(command)")
            default:
                throw DaemonError(.control, "vici: unexpected packet type \(type) for \(command)")
            }
        }
    }

    private func send(_ type: UInt8, name: String, message: ViciMessage? = nil) throws {
        var packet: [UInt8] = [type, UInt8(name.utf8.count)] + Array(name.utf8)
        if let message { packet += message.encoded() }
        let length = UInt32(packet.count)
        let framed = [UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff)] + packet
        var off = 0
        while off < framed.count {
            let n = framed[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DaemonError(.control, "\(SystemCallError("send", context: "vici \(path)"))") }
            off += n
        }
    }

    private func receive(until deadline: Date) throws -> (type: UInt8, name: String?, message: ViciMessage) {
        let header = try read(4, until: deadline)
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length >= 1, length <= 1 << 24 else { throw DaemonError(.control, "vici: packet length \(length)") }
        let packet = try read(length, until: deadline)
        let type = packet[0]
        var body = packet[1...]
        var name: String?
        if [ViciConnection.cmdRequest, ViciConnection.eventRegister, ViciConnection.eventUnregister, ViciConnection.event].contains(type) {
            guard let n = body.first, body.count >= 1 + Int(n) else { throw DaemonError(.control, "vici: short packet name") }
            name = String(decoding: body.dropFirst().prefix(Int(n)), as: UTF8.self)
            body = body.dropFirst(1 + Int(n))
        }
        return (type, name, try ViciMessage.decode(body))
    }

    private func read(_ count: Int, until deadline: Date) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw DaemonError(.control, "vici: no answer from \(path) in time") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(min(left, 1) * 1000) + 1)
            if r < 0 && errno == EINTR { continue }
            guard r >= 0 else { throw DaemonError(.control, "\(SystemCallError("poll", context: "vici \(path)"))") }
            if r == 0 { continue }
            let n = out[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DaemonError(.control, "vici: \(path) closed the connection") }
            got += n
        }
        return out
    }
}

extension ViciMessage {
    static func strings(_ pairs: [(String, String)]) -> ViciMessage {
        ViciMessage(pairs.map { ($0.0, .value(Array($0.1.utf8))) })
    }
}
