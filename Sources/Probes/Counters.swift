import Foundation
import Namespaces

/// The namespace's SNMP counters (`nstat`'s source): `Ip.ForwDatagrams`, `Udp.InDatagrams` …
public struct SNMPCounters: Sendable {
    public var values: [String: Int64]
    public subscript(key: String) -> Int64 { values[key] ?? 0 }

    /// Reads /proc/thread-self/net/snmp and snmp6 on the namespace thread, so the counters
    /// are the namespace's own (/proc/self/net would show the main thread's namespace).
    public static func read(_ ns: Namespace) throws -> SNMPCounters {
        try ns.run {
            var values: [String: Int64] = [:]
            if let text = try? String(contentsOfFile: "/proc/thread-self/net/snmp", encoding: .utf8) {
                let lines = text.split(separator: "\n")
                var i = 0
                while i + 1 < lines.count {
                    let names = lines[i].split(separator: " "), numbers = lines[i + 1].split(separator: " ")
                    if let group = names.first, group == numbers.first {
                        for (n, v) in zip(names.dropFirst(), numbers.dropFirst()) {
                            values["\(group.dropLast())." + n] = Int64(v)
                        }
                    }
                    i += 2
                }
            }
            if let text = try? String(contentsOfFile: "/proc/thread-self/net/snmp6", encoding: .utf8) {
                for line in text.split(separator: "\n") {
                    let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                    if f.count == 2 { values["Ip6." + f[0]] = Int64(f[1]) }
                }
            }
            return SNMPCounters(values: values)
        }
    }
}
