import Foundation
import Glibc
import Netlink

/// What killed processes leave that is not a run (runs are `Run`'s): the throwaway namespaces
/// of a capability probe, and directories owned by a process (the IKE daemons' private
/// directories under /run/xfrmlab/daemons). `xfrmlab gc` removes them once their owner is
/// dead, and never before.
public enum Leftovers {
    // MARK: - Probe namespaces

    /// `xlprobe<pid>-caps<n>` (the capability probe in Xfrm) and `xlprobe<pid>` (the test
    /// suite's "can I make namespaces" probe): the pid is the process that made them.
    public static func probeNamespaceOwner(_ name: String) -> pid_t? {
        guard name.hasPrefix("xlprobe") else { return nil }
        let rest = name.dropFirst("xlprobe".count)
        let digits = rest.prefix(while: \.isNumber)
        let tail = rest.dropFirst(digits.count)
        guard !digits.isEmpty, let pid = pid_t(digits), pid > 0 else { return nil }
        if tail.isEmpty { return pid }
        guard tail.hasPrefix("-caps"), !tail.dropFirst(5).isEmpty, tail.dropFirst(5).allSatisfy(\.isNumber) else { return nil }
        return pid
    }

    /// Probe namespaces under /run/netns whose maker is dead.
    public static func deadProbeNamespaces() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Namespace.directory)) ?? []
        return names.filter { name in probeNamespaceOwner(name).map { !ProcessTable.isAlive($0) } ?? false }.sorted()
    }

    /// Removes the probe namespaces whose maker is dead; returns their names.
    @discardableResult
    public static func removeDeadProbeNamespaces() -> [String] {
        let dead = deadProbeNamespaces()
        // Checked again right before each removal: a pid can only be dead for good, but a
        // name is cheap to re-check.
        for name in dead where !ProcessTable.isAlive(probeNamespaceOwner(name)!) { Namespace.removeEntry(name: name) }
        return dead
    }

    // MARK: - Owned directories

    /// The file in an owned directory that names its owner: `PID STARTTIME` (the start time, in
    /// clock ticks since boot from /proc/PID/stat, tells a reused pid from the owner).
    public static let ownerFile = ".owner"

    /// Records the calling process as the owner of `directory`.
    public static func recordOwner(of directory: String) throws {
        let pid = getpid()
        let text = "\(pid) \(ProcessTable.startTime(pid) ?? 0)\n"
        guard FileManager.default.createFile(atPath: directory + "/" + ownerFile, contents: Data(text.utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw SystemCallError("write", errno: errno, context: directory + "/" + ownerFile)
        }
    }

    /// Whether the owner of `directory` is dead, as far as can be proven: by its owner file, else
    /// by the run id in its name (`xl1a2b3c-west.charon`: the run's lock is free). nil: unknown
    /// (no owner file, no run id), to be left alone.
    public static func ownerIsDead(directory: String) -> Bool? {
        if let text = try? String(contentsOfFile: directory + "/" + ownerFile, encoding: .utf8) {
            let fields = text.split(whereSeparator: \.isWhitespace)
            guard fields.count >= 1, let pid = pid_t(fields[0]) else { return nil }
            let start = fields.count > 1 ? UInt64(fields[1]) : nil
            guard ProcessTable.isAlive(pid) else { return true }
            // Alive, but another process under a reused pid.
            if let start, start != 0, let now = ProcessTable.startTime(pid), now != start { return true }
            return false
        }
        let entry = (directory as NSString).lastPathComponent
        guard entry.hasPrefix(Run.namespacePrefix) else { return nil }
        let rest = entry.dropFirst(Run.namespacePrefix.count)
        guard let dash = rest.firstIndex(of: "-") else { return nil }
        let id = String(rest[..<dash])
        guard id.count == 6, id.allSatisfy(\.isHexDigit) else { return nil }
        return !Run.isLocked(id)
    }

    /// Removes the directories under `base` whose owner is dead, killing any process still
    /// naming one (a daemon normally dies with the process that started it); returns their
    /// paths. A directory with a live owner, or none that can be proven, is left alone.
    @discardableResult
    public static func sweepOwnedDirectories(under base: String, dryRun: Bool = false) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: base)) ?? []
        var removed: [String] = []
        for entry in entries.sorted() {
            let path = base + "/" + entry
            guard ownerIsDead(directory: path) == true else { continue }
            removed.append(path)
            if dryRun { continue }
            for pid in ProcessTable.processes(naming: path) { kill(pid, SIGKILL) }
            try? FileManager.default.removeItem(atPath: path)
        }
        return removed
    }
}

/// Reads of /proc about other processes.
public enum ProcessTable {
    /// Alive and not a zombie (a zombie holds nothing but its exit status).
    public static func isAlive(_ pid: pid_t) -> Bool {
        if kill(pid, 0) != 0 && errno == ESRCH { return false }
        return !isZombie(pid)
    }

    public static func isZombie(_ pid: pid_t) -> Bool {
        statFields(pid)?.first == "Z"
    }

    /// Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot.
    public static func startTime(_ pid: pid_t) -> UInt64? {
        guard let fields = statFields(pid), fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    /// The fields of /proc/PID/stat after the command name (which may hold spaces): state first.
    static func statFields(_ pid: pid_t) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    /// Live processes (not this one) whose command line or environment mentions `path`.
    public static func processes(naming path: String) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        let needle = Array(path.utf8)
        var found: [pid_t] = []
        for entry in entries {
            guard let pid = pid_t(entry), pid != getpid() else { continue }
            for file in ["cmdline", "environ"] {
                guard let data = FileManager.default.contents(atPath: "/proc/\(entry)/\(file)") else { continue }
                if contains([UInt8](data), needle), !isZombie(pid) {
                    found.append(pid)
                    break
                }
            }
        }
        return found
    }

    static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, haystack.count >= needle.count else { return false }
        for i in 0...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if haystack[i..<(i + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}
