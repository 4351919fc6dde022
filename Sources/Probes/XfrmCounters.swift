import Foundation
import Glibc
import Namespaces
import Netlink

/// The namespace's XFRM statistics (/proc/net/xfrm_stat, `CONFIG_XFRM_STATISTICS`):
/// `XfrmInNoStates`, `XfrmOutNoStates`, `XfrmInTmplMismatch`, `XfrmAcquireError` …
/// Which counter moves says why a packet did or did not take an SA.
public struct XfrmStatistics: Sendable, Equatable, CustomStringConvertible {
    public var values: [String: Int64]
    public subscript(key: String) -> Int64 { values[key] ?? 0 }

    public init(values: [String: Int64]) { self.values = values }

    /// Parses the file's `Name<whitespace>value` lines.
    public static func parse(_ text: String) -> XfrmStatistics {
        var values: [String: Int64] = [:]
        for line in text.split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if f.count == 2, let v = Int64(f[1]) { values[String(f[0])] = v }
        }
        return XfrmStatistics(values: values)
    }

    /// Reads /proc/thread-self/net/xfrm_stat on the namespace thread, so the counters are the
    /// namespace's own. A kernel built without `CONFIG_XFRM_STATISTICS` has no such file: that
    /// is thrown as `ENOENT`.
    public static func read(_ ns: Namespace) throws -> XfrmStatistics {
        try ns.run {
            let path = "/proc/thread-self/net/xfrm_stat"
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw SystemCallError("read", errno: errno == 0 ? ENOENT : errno, context: "\(path) in \(ns.name)")
            }
            return parse(text)
        }
    }

    /// Counters that went up since `earlier`, with by how much.
    public func increases(since earlier: XfrmStatistics) -> [String: Int64] {
        var out: [String: Int64] = [:]
        for (k, v) in values where v > earlier[k] { out[k] = v - earlier[k] }
        return out
    }

    /// The non-zero counters, `Name=value`, sorted.
    public var description: String {
        let nonzero = values.filter { $0.value != 0 }.sorted { $0.key < $1.key }
        return nonzero.isEmpty ? "all XFRM counters 0" : nonzero.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}
