import Glibc
import Kmsg

/// Reads the kernel log (/dev/kmsg) from the moment it is opened, to catch what netdev CI
/// catches: WARN and BUG splats, call traces, refcount and ref_tracker reports, and
/// "unregister_netdevice: waiting for X to become free". Read-only.
public final class KernelLog: @unchecked Sendable {
    private var fd: Int32

    /// Opens the log positioned at its end; nil when there is none to read.
    public init?() {
        fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        lseek(fd, 0, SEEK_END)
    }

    deinit { if fd >= 0 { close(fd) } }

    /// The messages logged since the last read (text after the record header).
    public func read() -> [String] {
        var out: [String] = []
        var buffer = [UInt8](repeating: 0, count: 8192)
        while fd >= 0 {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n < 0 {
                // EPIPE: records were overwritten before we read them; go on from the next.
                if errno == EPIPE { continue }
                break
            }
            if n == 0 { break }
            if let record = KernelLogRecord(kmsg: String(decoding: buffer[0..<n], as: UTF8.self)) { out.append(record.text) }
        }
        return out
    }

    /// The messages since the last read that mean the kernel is unhappy, whoever caused it
    /// (`KernelLogRecord.problemPatterns`, the matrix's list).
    public func problems() -> [String] {
        read().filter(KernelLogRecord.isProblem)
    }
}
