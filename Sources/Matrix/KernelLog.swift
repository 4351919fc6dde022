import Dispatch
import Foundation
import Glibc
import Kmsg

public enum KernelLog {
    /// Writes a line to the kernel log and returns CLOCK_MONOTONIC around it, so the record's
    /// printk timestamp can be related to the test binary's clock.
    public static func mark(_ text: String, device: String = "/dev/kmsg") -> (before: Double, after: Double)? {
        let fd = open(device, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        let before = monotonic()
        // With its newline: a record without one stays open (for a continuation) and reaches
        // readers only when the next one is logged.
        let bytes = Array((text + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return nil }
        return (before, monotonic())
    }

    public static func monotonic() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Groups warning records into splats: one per burst (warning records less than 1 s apart), each
    /// with up to `context` following records of the same burst so the trace is readable.
    public static func warnings(in records: [KernelLogRecord], ignoring ignored: [String] = [], context: Int = 24) -> [KernelWarning] {
        var result: [KernelWarning] = []
        var i = 0
        while i < records.count {
            let r = records[i]
            guard KernelLogRecord.isProblem(r.text), !ignored.contains(where: { r.text.contains($0) }) else { i += 1; continue }
            var lines = [r]
            var j = i + 1
            var last = r.microseconds
            while j < records.count, records[j].microseconds <= last + 1_000_000 {
                if KernelLogRecord.isProblem(records[j].text) { last = records[j].microseconds }
                if lines.count < context { lines.append(records[j]) }
                j += 1
            }
            result.append(KernelWarning(at: r.seconds, records: lines))
            i = j
        }
        return result
    }

    /// The console's `[   12.345678] text` lines logged after `microseconds`, as records (their
    /// priority unknown: 4). A panic stops a guest before its log recorder writes another line,
    /// but the console has it: an oops or a panic makes the console verbose, whatever its loglevel.
    public static func consoleRecords(_ console: String, after microseconds: UInt64, sequence: UInt64) -> [KernelLogRecord] {
        var records: [KernelLogRecord] = []
        for line in console.split(whereSeparator: \.isNewline) {
            guard line.first == "[", let close = line.firstIndex(of: "]"),
                  let seconds = Double(line[line.index(after: line.startIndex)..<close].trimmingCharacters(in: .whitespaces)) else { continue }
            let usec = UInt64((seconds * 1_000_000).rounded())
            guard usec > microseconds else { continue }
            let text = line[line.index(after: close)...].drop { $0 == " " }
            records.append(KernelLogRecord(sequence: sequence + UInt64(records.count) + 1, microseconds: usec, priority: 4, text: String(text)))
        }
        return records
    }
}

/// Records the kernel log to a file while the suite runs, as /dev/kmsg gives it, so nothing is
/// lost when the ring buffer wraps (1,000 bridge ports log thousands of lines) and what came
/// before a panic is already in the shared directory.
public final class KernelLogRecorder: @unchecked Sendable {
    private let fd: Int32
    private let out: FileHandle
    private var wake: [Int32] = [-1, -1]
    private let finished = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var marks: [String: Double] = [:]
    private var stopping = false

    /// `fromStart`: the whole ring buffer first (a fresh guest's boot); else only what comes next
    /// (the host, whose log is not ours).
    public init(output path: String, fromStart: Bool) throws {
        fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw KernelLogError(text: "open /dev/kmsg: \(String(cString: strerror(errno)))") }
        if !fromStart { lseek(fd, 0, SEEK_END) }
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            close(fd)
            throw KernelLogError(text: "cannot write \(path)")
        }
        out = handle
        guard pipe(&wake) == 0 else { close(fd); throw KernelLogError(text: "pipe: \(String(cString: strerror(errno)))") }
        let thread = Thread { [self] in loop() }
        thread.name = "kmsg"
        thread.start()
    }

    /// Writes `text` to the kernel log and returns its printk time and CLOCK_MONOTONIC around the write.
    public func mark(_ text: String) -> (before: Double, after: Double, logged: Double)? {
        guard let written = KernelLog.mark(text) else { return nil }
        for _ in 0..<100 {
            if let t = lock.withLock({ marks[text] }) { return (written.before, written.after, t) }
            usleep(20_000)
        }
        return nil
    }

    /// Reads what is left and closes the file.
    public func stop() {
        lock.withLock { stopping = true }
        _ = write(wake[1], "x", 1)
        finished.wait()
        try? out.close()
        close(fd); close(wake[0]); close(wake[1])
    }

    private func loop() {
        var buffer = [UInt8](repeating: 0, count: 16384)
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
        while true {
            var lines = ""
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n > 0 {
                    let raw = String(decoding: buffer[0..<n], as: UTF8.self)
                    if let record = KernelLogRecord(kmsg: raw) {
                        lines += "\(record.priority),\(record.sequence),\(record.microseconds),-;\(KernelLogRecord.escape(record.text))\n"
                        if record.text.hasPrefix("xfrmlab-matrix: ") { lock.withLock { marks[record.text] = record.seconds } }
                    }
                    continue
                }
                if n < 0 && errno == EPIPE {  // overwritten before we read them
                    lines += "# kernel log records lost (ring buffer wrapped)\n"
                    continue
                }
                if n < 0 && errno == EINTR { continue }
                break
            }
            if !lines.isEmpty { out.write(Data(lines.utf8)) }
            if lock.withLock({ stopping }) { break }
            _ = poll(&fds, 2, 1000)
        }
        finished.signal()
    }
}

public struct KernelLogError: Error, CustomStringConvertible, Sendable {
    public var text: String
    public var description: String { text }
}

/// A burst of kernel log records that a warning pattern matched.
public struct KernelWarning: Codable, Sendable, Equatable {
    /// Seconds since boot (printk clock) of its first record.
    public var at: Double
    public var records: [KernelLogRecord]
    /// The first matching line, for one-line summaries.
    public var headline: String { records.first { KernelLogRecord.isProblem($0.text) && !$0.text.hasPrefix("------------[ cut here") }?.text ?? records.first?.text ?? "" }
    public var lines: [String] { records.map(\.dmesgLine) }
}

extension KernelWarning {
    /// An oops, a BUG or a panic: the kernel stopped what it was doing (a WARN did not).
    public var isCrash: Bool {
        records.contains { r in ["Oops:", "BUG: unable to handle", "kernel BUG at", "general protection fault", "Kernel panic"].contains { r.text.contains($0) } }
    }

    /// The function the CPU was in (`RIP: 0010:NF_HOOK.constprop.0+0x24/0x80` → `NF_HOOK.constprop.0`).
    public var instructionPointer: String? {
        guard let line = records.first(where: { $0.text.contains("RIP: ") && $0.text.contains("+0x") })?.text,
              let rip = line.range(of: "RIP: ") else { return nil }
        var rest = line[rip.upperBound...]
        if let colon = rest.firstIndex(of: ":"), rest[..<colon].allSatisfy(\.isHexDigit) { rest = rest[rest.index(after: colon)...] }
        return KernelWarning.function(rest)
    }

    /// The call trace's functions, innermost first (` ? foo+0x1/0x2` guesses left out, as the
    /// kernel's own decoder prints them only as hints).
    public var stack: [String] {
        var out: [String] = []
        var inTrace = false
        for r in records {
            let t = r.text.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("Call Trace:") { inTrace = true; continue }
            guard inTrace else { continue }
            if t.hasPrefix("<") || t.hasPrefix("?") { continue }
            guard t.contains("+0x"), let f = KernelWarning.function(t[...]) else {
                if !out.isEmpty && !t.hasPrefix("RIP") && !t.hasPrefix("R") { break }
                continue
            }
            out.append(f)
        }
        return out
    }

    /// `foo.constprop.0+0x24/0x80 [module]` → `foo.constprop.0`.
    static func function(_ text: Substring) -> String? {
        let name = text.trimmingCharacters(in: .whitespaces).prefix { $0 != "+" && $0 != " " }
        return name.isEmpty || name.contains("/") ? nil : String(name)
    }
}

/// A guest's kernel crashing (an oops, a BUG, a panic), kept with what identifies it.
public struct KernelCrash: Codable, Sendable, Equatable {
    public var headline: String
    /// The function at the instruction pointer, then the call trace.
    public var fingerprint: [String]
    /// The test that ran, when one alone did.
    public var test: String?
    /// The expectation rule that names it (a known crash), or nil: a crash no rule names fails the matrix.
    public var known: String?
    /// Whether it came back when its test ran again in a fresh guest (nil: not run again).
    public var recurred: Bool?
    public var lines: [String]

    public init(_ warning: AttributedWarning) {
        headline = warning.warning.headline
        fingerprint = (warning.warning.instructionPointer.map { [$0] } ?? []) + warning.warning.stack
        test = warning.test
        lines = warning.warning.lines
    }

    public var summary: String {
        "\(headline) at \(fingerprint.prefix(6).joined(separator: " ← "))" + (test.map { " during \($0)" } ?? "")
            + (known.map { " — known: \($0)" } ?? " — no rule names it")
            + (recurred.map { $0 ? "; it recurred in a fresh guest" : "; it did not recur in a fresh guest" } ?? "")
    }
}
