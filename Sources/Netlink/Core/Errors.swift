import Glibc

/// The symbolic name of an errno value (`EEXIST`), for messages a kernel developer recognises.
public func errnoName(_ code: Int32) -> String {
    switch code {
    case EPERM: return "EPERM"
    case ENOENT: return "ENOENT"
    case ESRCH: return "ESRCH"
    case EINTR: return "EINTR"
    case EIO: return "EIO"
    case ENXIO: return "ENXIO"
    case E2BIG: return "E2BIG"
    case EBADF: return "EBADF"
    case EAGAIN: return "EAGAIN"
    case ENOMEM: return "ENOMEM"
    case EACCES: return "EACCES"
    case EFAULT: return "EFAULT"
    case EBUSY: return "EBUSY"
    case EEXIST: return "EEXIST"
    case ENODEV: return "ENODEV"
    case ENOTDIR: return "ENOTDIR"
    case EINVAL: return "EINVAL"
    case ENFILE: return "ENFILE"
    case EMFILE: return "EMFILE"
    case ENOSPC: return "ENOSPC"
    case ERANGE: return "ERANGE"
    case ENOSYS: return "ENOSYS"
    case ENODATA: return "ENODATA"
    case EPROTO: return "EPROTO"
    case EMSGSIZE: return "EMSGSIZE"
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT"
    case EOPNOTSUPP: return "EOPNOTSUPP"
    case EAFNOSUPPORT: return "EAFNOSUPPORT"
    case EADDRINUSE: return "EADDRINUSE"
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL"
    case ENETDOWN: return "ENETDOWN"
    case ENETUNREACH: return "ENETUNREACH"
    case ENOBUFS: return "ENOBUFS"
    case ETIMEDOUT: return "ETIMEDOUT"
    case ECONNREFUSED: return "ECONNREFUSED"
    case EHOSTUNREACH: return "EHOSTUNREACH"
    case ENOTSUP: return "ENOTSUP"
    default: return "errno \(code)"
    }
}

/// The C library's text for an errno value.
public func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// A system call failed before the kernel's netlink code saw the request (`socket`, `sendto`,
/// `setns` …). Distinct from `NetlinkError`, where the kernel understood and refused.
public struct SystemCallError: Error, CustomStringConvertible, Sendable, Equatable {
    public var call: String
    public var errno: Int32
    public var context: String?

    public init(_ call: String, errno: Int32 = Glibc.errno, context: String? = nil) {
        self.call = call
        self.errno = errno
        self.context = context
    }

    public var description: String {
        let base = "\(call) failed: \(errnoText(errno)) (\(errnoName(errno)))"
        return context.map { "\($0): \(base)" } ?? base
    }
}

/// The kernel refused a netlink request. Carries the errno, the kernel's extended-ack text
/// ("Unknown device type"), the attribute offset it blamed, and the request as the `ip`
/// command it equals, so the message can be pasted into a shell.
public struct NetlinkError: Error, CustomStringConvertible, Sendable, Equatable {
    public var errno: Int32
    /// The extended-ack message (`NLMSGERR_ATTR_MSG`), exactly as the kernel wrote it.
    public var kernelMessage: String?
    /// `NLMSGERR_ATTR_OFFS`: byte offset of the offending attribute in the request.
    public var offset: UInt32?
    /// `NLMSGERR_ATTR_MISS_TYPE`: an attribute the kernel needed and did not get.
    public var missingAttribute: UInt32?
    /// The request, as the equivalent command (`ip -n west link add …`).
    public var request: String
    /// Where the request came from (a topology file line), when known.
    public var origin: String?

    public init(errno: Int32, kernelMessage: String? = nil, offset: UInt32? = nil,
                missingAttribute: UInt32? = nil, request: String = "", origin: String? = nil) {
        self.errno = errno
        self.kernelMessage = kernelMessage
        self.offset = offset
        self.missingAttribute = missingAttribute
        self.request = request
        self.origin = origin
    }

    public var description: String {
        var s = ""
        if let origin { s += "\(origin): " }
        if !request.isEmpty { s += "\(request): " }
        s += "\(errnoText(errno)) (\(errnoName(errno)))"
        if let kernelMessage, !kernelMessage.isEmpty { s += "; kernel: \"Error: \(kernelMessage)\"" }
        if let missingAttribute { s += "; missing attribute \(missingAttribute)" }
        return s
    }

    /// Lets callers write `catch let e as NetlinkError where e ~= EEXIST`.
    public static func ~= (code: Int32, error: NetlinkError) -> Bool { error.errno == code }
}

/// A dump was interrupted by a concurrent change (`NLM_F_DUMP_INTR`): its result is inconsistent
/// and must be retried.
public struct DumpInterrupted: Error, CustomStringConvertible, Sendable {
    public var request: String
    public var description: String { "\(request): dump interrupted by a concurrent change (NLM_F_DUMP_INTR)" }
}

/// A reply the parser could not accept (truncated, oversized, or lying about a length).
public struct MalformedMessage: Error, CustomStringConvertible, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { "malformed netlink message: \(reason)" }
}
