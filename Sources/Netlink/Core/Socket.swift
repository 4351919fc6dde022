import CNetlink
import Foundation
import Glibc

/// A netlink socket (libmnl), bound to the network namespace of the thread that opened it.
///
/// Requests and dumps are serialised by a lock, so one socket may be shared across tasks.
/// Every socket asks for extended acks (`NETLINK_EXT_ACK`), capped acks, and, for rtnetlink,
/// strict checking of dump requests (`NETLINK_GET_STRICT_CHK`).
public final class NetlinkSocket: @unchecked Sendable {
    public let netlinkProtocol: Int32
    private let nl: OpaquePointer
    private let lock = NSLock()
    private var nextSequence: UInt32
    private let portID: UInt32
    private var receiveBuffer: UnsafeMutableRawPointer
    private let receiveBufferSize = 1 << 17
    private var closed = false
    /// Opened in the process's own network namespace (the host's): only reads are sent.
    public let inHostNamespace: Bool

    /// Netlink protocols by name.
    public static let route = NETLINK_ROUTE
    public static let xfrm = NETLINK_XFRM
    public static let netfilter = NETLINK_NETFILTER

    /// Opens and binds a socket in the calling thread's network namespace.
    /// - Parameter groups: multicast groups to join (numbers, as `RTNLGRP_LINK`).
    public convenience init(protocol proto: Int32, groups: [UInt32] = []) throws {
        guard let nl = mnl_socket_open2(proto, Int32(SOCK_CLOEXEC.rawValue)) else { throw SystemCallError("mnl_socket_open") }
        try self.init(nl, protocol: proto, groups: groups, inHostNamespace: HostNamespace.contains(currentThread: ()))
    }

    /// Takes over a netlink socket opened elsewhere (by a process with other credentials: a
    /// user namespace's root), in the network namespace it was opened in.
    public convenience init(adopting fd: Int32, protocol proto: Int32, inHostNamespace: Bool, groups: [UInt32] = []) throws {
        guard let nl = mnl_socket_fdopen(fd) else {
            Glibc.close(fd)
            throw SystemCallError("mnl_socket_fdopen")
        }
        try self.init(nl, protocol: proto, groups: groups, inHostNamespace: inHostNamespace)
    }

    private init(_ nl: OpaquePointer, protocol proto: Int32, groups: [UInt32], inHostNamespace: Bool) throws {
        self.nl = nl
        self.netlinkProtocol = proto
        guard mnl_socket_bind(nl, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let e = SystemCallError("mnl_socket_bind")
            mnl_socket_close(nl)
            throw e
        }
        self.portID = mnl_socket_get_portid(nl)
        self.inHostNamespace = inHostNamespace
        self.nextSequence = UInt32(truncatingIfNeeded: time(nil))
        self.receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: receiveBufferSize, alignment: 8)
        var one: Int32 = 1
        _ = mnl_socket_setsockopt(nl, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = mnl_socket_setsockopt(nl, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        if proto == NETLINK_ROUTE {
            _ = mnl_socket_setsockopt(nl, NETLINK_GET_STRICT_CHK, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        // Large batches answer with one ack each: give the socket room for them.
        var size: Int32 = 4 << 20
        _ = setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        for group in groups { try join(group: group) }
    }

    deinit {
        if !closed { mnl_socket_close(nl) }
        receiveBuffer.deallocate()
    }

    /// The socket's file descriptor (for poll).
    public var fileDescriptor: Int32 { mnl_socket_get_fd(nl) }

    /// Joins a multicast group (`NETLINK_ADD_MEMBERSHIP`).
    public func join(group: UInt32) throws {
        var g = group
        guard mnl_socket_setsockopt(nl, NETLINK_ADD_MEMBERSHIP, &g, socklen_t(MemoryLayout<UInt32>.size)) == 0 else {
            throw SystemCallError("setsockopt(NETLINK_ADD_MEMBERSHIP)", context: "group \(group)")
        }
    }

    /// Sends one request and waits for its acknowledgement; returns any messages the kernel
    /// sent back for it before the ack (e.g. the answer to `RTM_GETROUTE`).
    @discardableResult
    public func request(_ request: Request) throws -> [Message] {
        var r = request
        r.flags.insert(.request)
        if !r.flags.contains(.dump) { r.flags.insert(.ack) }
        let results = try execute([r], stopOnError: true)
        if let error = results.errors.first { throw error }
        return results.replies[0]
    }

    /// Sends every request in as few `sendmsg` calls as fit the buffer and collects one ack
    /// each. The kernel handles them in order; the first refusal is thrown (after all acks
    /// were read, so the socket stays in step), naming the request it refused.
    public func batch(_ requests: [Request]) throws {
        guard !requests.isEmpty else { return }
        let results = try execute(requests.map { var r = $0; r.flags.formUnion([.request, .ack]); return r }, stopOnError: false)
        if let error = results.errors.first { throw error }
    }

    /// Like `batch`, but returns every refusal instead of throwing the first.
    public func batchCollectingErrors(_ requests: [Request]) throws -> [NetlinkError] {
        try execute(requests.map { var r = $0; r.flags.formUnion([.request, .ack]); return r }, stopOnError: false).errors
    }

    /// Sends a dump request (`NLM_F_DUMP`) and returns every message until `NLMSG_DONE`.
    ///
    /// A dump the kernel marks inconsistent (`NLM_F_DUMP_INTR`: the table changed while it was
    /// read, e.g. IPv6 adding link-local addresses to new devices) is read again, up to
    /// `attempts` times, as the netlink documentation asks; then `DumpInterrupted` is thrown.
    public func dump(_ request: Request, attempts: Int = 5) throws -> [Message] {
        var r = request
        r.flags = [.request, .dump]
        for attempt in 1...max(1, attempts) {
            do {
                let results = try execute([r], stopOnError: true)
                if let error = results.errors.first { throw error }
                return results.replies[0]
            } catch let e as DumpInterrupted where attempt < attempts {
                _ = e
                continue
            }
        }
        throw DumpInterrupted(request: request.summary)
    }

    /// Waits up to `timeout` seconds for multicast messages (or anything) and returns them;
    /// an empty array means the time ran out.
    public func receive(timeout: Double) throws -> [Message] {
        lock.lock()
        defer { lock.unlock() }
        var pfd = pollfd(fd: fileDescriptor, events: Int16(POLLIN), revents: 0)
        let ms = Int32(max(0, timeout * 1000))
        let n = poll(&pfd, 1, ms)
        if n < 0 {
            if errno == EINTR { return [] }
            throw SystemCallError("poll")
        }
        if n == 0 { return [] }
        let got = mnl_socket_recvfrom(nl, receiveBuffer, receiveBufferSize)
        if got < 0 { throw SystemCallError("recvfrom") }
        return try Message.split(UnsafeRawBufferPointer(start: receiveBuffer, count: got))
    }

    /// Closes the socket now rather than at deinit.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        if !closed { mnl_socket_close(nl); closed = true }
    }

    // MARK: - Engine

    private struct Results {
        var replies: [[Message]]
        var errors: [NetlinkError]
    }

    private func execute(_ requests: [Request], stopOnError: Bool) throws -> Results {
        // The harness never changes the host: a socket of the host's namespace sends reads only.
        if inHostNamespace, let write = requests.first(where: { !HostNamespace.isReadOnly($0, protocol: netlinkProtocol) }) {
            throw HostNamespaceRefused(request: write.summary)
        }
        lock.lock()
        defer { lock.unlock() }
        var results = Results(replies: Array(repeating: [], count: requests.count), errors: [])
        var index = 0
        while index < requests.count {
            // Pack as many messages as fit in one send buffer.
            let limit = max(1 << 16, requests[index].encodedSize)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: limit, alignment: 8)
            defer { buffer.deallocate() }
            var used = 0
            var firstSequence: UInt32 = 0
            var pending: [UInt32: Int] = [:]
            let start = index
            while index < requests.count, used + requests[index].encodedSize <= limit {
                let seq = nextSequence
                nextSequence &+= 1
                if index == start { firstSequence = seq }
                (buffer + used).initializeMemory(as: UInt8.self, repeating: 0, count: requests[index].encodedSize)
                used += Bytes.align(requests[index].encode(into: buffer + used, sequence: seq))
                pending[seq] = index
                index += 1
            }
            _ = firstSequence
            let sent = mnl_socket_sendto(nl, buffer, used)
            if sent < 0 { throw SystemCallError("sendto", context: requests[start].summary) }
            try collect(pending: &pending, requests: requests, into: &results)
            if stopOnError && !results.errors.isEmpty { break }
        }
        return results
    }

    /// Reads until every pending sequence number got its ack (or its `NLMSG_DONE`).
    private func collect(pending: inout [UInt32: Int], requests: [Request], into results: inout Results) throws {
        // Read to the end even when a dump was interrupted, so the socket stays in step.
        var interrupted: Set<Int> = []
        while !pending.isEmpty {
            let got = mnl_socket_recvfrom(nl, receiveBuffer, receiveBufferSize)
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemCallError("recvfrom", context: requests[pending.values.min()!].summary)
            }
            let messages = try Message.split(UnsafeRawBufferPointer(start: receiveBuffer, count: got))
            for message in messages {
                // Multicast notifications and other ports' traffic are not ours.
                guard message.portID == portID || message.portID == 0, let i = pending[message.sequence] else { continue }
                switch Int32(message.type) {
                case NLMSG_ERROR:
                    let code = try Self.errorCode(of: message)
                    if code != 0 {
                        var e = try Self.parseError(message, request: requests[i].summary)
                        e.origin = requests[i].origin
                        results.errors.append(e)
                    }
                    pending[message.sequence] = nil
                case NLMSG_DONE:
                    // A dump's end; a negative int payload is an error that ended it.
                    if let code = Bytes.load(Int32.self, from: message.payload), code < 0 {
                        var e = try Self.parseError(message, request: requests[i].summary, doneCode: code)
                        e.origin = requests[i].origin
                        results.errors.append(e)
                    }
                    if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted.insert(i) }
                    pending[message.sequence] = nil
                case NLMSG_NOOP, NLMSG_OVERRUN:
                    continue
                default:
                    if message.flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted.insert(i) }
                    results.replies[i].append(message)
                }
            }
        }
        if let i = interrupted.min() { throw DumpInterrupted(request: requests[i].summary) }
    }

    static func errorCode(of message: Message) throws -> Int32 {
        guard let code = Bytes.load(Int32.self, from: message.payload) else {
            throw MalformedMessage("NLMSG_ERROR of \(message.payload.count) bytes has no error code")
        }
        return code
    }

    /// Parses `struct nlmsgerr` and the extended-ack TLVs after it.
    public static func parseError(_ message: Message, request: String, doneCode: Int32? = nil) throws -> NetlinkError {
        var error = NetlinkError(errno: 0, request: request)
        var tlvStart: Int
        if let doneCode {
            error.errno = -doneCode
            tlvStart = 4
        } else {
            let code = try errorCode(of: message)
            error.errno = -code
            // struct nlmsgerr { int error; struct nlmsghdr msg; }, then the echoed request's
            // payload unless the ack is capped (NLM_F_CAPPED).
            guard message.payload.count >= 20 else {
                throw MalformedMessage("NLMSG_ERROR of \(message.payload.count) bytes is shorter than struct nlmsgerr")
            }
            tlvStart = 20
            if message.flags & UInt16(NLM_F_CAPPED) == 0 {
                let echoedLength = Int(Bytes.load(UInt32.self, from: message.payload[4...]) ?? 16)
                tlvStart = 4 + Bytes.align(max(16, echoedLength))
            }
        }
        guard message.flags & UInt16(NLM_F_ACK_TLVS) != 0, tlvStart < message.payload.count else { return error }
        let tlvs = try Attributes(parsing: message.payload[tlvStart...])
        if let m = tlvs[Int(NLMSGERR_ATTR_MSG.rawValue)] { error.kernelMessage = m.string }
        if let o = tlvs[Int(NLMSGERR_ATTR_OFFS.rawValue)]?.u32 { error.offset = o }
        if let t = tlvs[Int(NLMSGERR_ATTR_MISS_TYPE.rawValue)]?.u32 { error.missingAttribute = t }
        return error
    }
}
