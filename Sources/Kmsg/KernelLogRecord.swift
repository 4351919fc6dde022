import Foundation

/// One record of the kernel log as /dev/kmsg gives it: `PRIO,SEQ,USEC,FLAGS;TEXT`.
public struct KernelLogRecord: Codable, Sendable, Equatable {
    public var sequence: UInt64
    /// Microseconds since boot on the printk clock.
    public var microseconds: UInt64
    public var priority: Int
    public var text: String

    public var seconds: Double { Double(microseconds) / 1_000_000 }

    /// `[   12.345678] text`, as dmesg prints it.
    public var dmesgLine: String { String(format: "[%12.6f] ", seconds) + text }

    public init(sequence: UInt64, microseconds: UInt64, priority: Int, text: String) {
        self.sequence = sequence
        self.microseconds = microseconds
        self.priority = priority
        self.text = text
    }

    /// Parses one /dev/kmsg record; continuation lines (` KEY=value`) are dropped.
    public init?(kmsg line: some StringProtocol) {
        guard let semicolon = line.firstIndex(of: ";") else { return nil }
        let fields = line[..<semicolon].split(separator: Character(","))
        guard fields.count >= 3, let prio = Int(fields[0]), let seq = UInt64(fields[1]), let usec = UInt64(fields[2]) else { return nil }
        let body = line[line.index(after: semicolon)...]
        let text = String(body.prefix { $0 != "\n" })
        self.init(sequence: seq, microseconds: usec, priority: prio & 7, text: KernelLogRecord.unescape(text))
    }

    /// /dev/kmsg escapes non-printable bytes as `\xNN`.
    static func unescape(_ text: String) -> String {
        guard text.contains("\\x") else { return text }
        var out = [UInt8]()
        let bytes = Array(text.utf8)
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\"), i + 3 < bytes.count, bytes[i + 1] == UInt8(ascii: "x"),
               let v = UInt8(String(decoding: bytes[(i + 2)...(i + 3)], as: UTF8.self), radix: 16) {
                out.append(v); i += 4
            } else {
                out.append(bytes[i]); i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The records that mean the kernel got something wrong (as netdev CI scans for them):
    /// WARN/BUG splats, oopses, refcount and ref_tracker reports, leaked devices, KASAN/UBSAN, kmemleak.
    public static let problemPatterns: [String] = [
        "WARNING:", "------------[ cut here ]------------", "BUG:", "kernel BUG at", "RIP:", "Call Trace:",
        "Oops:", "general protection fault", "Kernel panic", "refcount_t:", "ref_tracker:",
        "unregister_netdevice: waiting for", "unreferenced object 0x", "KASAN:", "UBSAN:",
        "possible circular locking dependency", "suspicious RCU usage", "list_add corruption", "list_del corruption",
    ]

    /// Whether `text` is one of those records.
    public static func isProblem(_ text: String) -> Bool { problemPatterns.contains { text.contains($0) } }

    /// Control characters and backslashes as `\xNN`, as /dev/kmsg itself writes them.
    public static func escape(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.value < 0x20 || $0 == "\\" ? String(format: "\\x%02x", $0.value) : String($0) }.joined())
    }
}
