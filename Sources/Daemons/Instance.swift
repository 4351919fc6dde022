import Foundation
import Glibc
import Namespaces
import Netlink

/// The private belongings of one daemon: a directory (mode 0700) with its configuration, run
/// files, NSS database and log, and the process started in a lab namespace.
///
/// The directory is `/run/xfrmlab/daemons/<namespace>.<program>` (`xl1a2b3c-west.charon`),
/// so two daemons never share a file; its `.owner` file (pid and start time of the process that
/// made it) lets a later start, or `xfrmlab gc`, remove what a killed owner left (`sweepLeftovers`).
public final class DaemonInstance: @unchecked Sendable {
    public static let baseDirectory = "/run/xfrmlab/daemons"

    public let namespace: Namespace
    public let program: String
    public let directory: String
    /// The daemon's own log file.
    public let logPath: String
    /// What the process printed on stdout and stderr (before its log was open, or instead of it).
    public let consolePath: String
    public private(set) var pid: pid_t?
    private var exitStatus: Int32?
    private let lock = NSLock()

    /// Makes the directory (removing a stale one of the same name: its run is over).
    public init(namespace: Namespace, program: String, logName: String) throws {
        self.namespace = namespace
        self.program = program
        directory = DaemonInstance.baseDirectory + "/\(namespace.name).\(program)"
        logPath = directory + "/" + logName
        consolePath = directory + "/console.log"
        DaemonInstance.sweepLeftovers()
        for dir in ["/run/xfrmlab", DaemonInstance.baseDirectory] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw DaemonError(.start, "\(SystemCallError("mkdir", context: dir))")
        }
        try? FileManager.default.removeItem(atPath: directory)
        guard mkdir(directory, 0o700) == 0 else {
            throw DaemonError(.start, "\(SystemCallError("mkdir", context: directory))")
        }
        // Who owns it, so that gc can tell a killed owner's directory from a live one's.
        do { try Leftovers.recordOwner(of: directory) } catch { throw DaemonError(.start, "\(error)") }
    }

    // MARK: - Files

    /// Writes `text` to `name` under the directory with `mode` (0600 for anything with a key
    /// or a secret), returning its path.
    @discardableResult
    public func write(_ name: String, _ text: String, mode: mode_t = 0o644) throws -> String {
        let path = name.hasPrefix("/") ? name : directory + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw DaemonError(.start, "\(SystemCallError("open", context: path))") }
        defer { close(fd) }
        // O_CREAT's mode only applies to new files (and is masked by the umask): set it.
        fchmod(fd, mode)
        let bytes = Array(text.utf8)
        guard Glibc.write(fd, bytes, bytes.count) == bytes.count else {
            throw DaemonError(.start, "\(SystemCallError("write", context: path))")
        }
        return path
    }

    /// Makes a subdirectory (mode 0700), returning its path.
    @discardableResult
    public func subdirectory(_ name: String) throws -> String {
        let path = directory + "/" + name
        guard mkdir(path, 0o700) == 0 || errno == EEXIST else {
            throw DaemonError(.start, "\(SystemCallError("mkdir", context: path))")
        }
        return path
    }

    // MARK: - The process

    /// Starts `command` in the namespace with exactly `environment`, its stdout and stderr
    /// going to `console.log`.
    func launch(_ command: [String], environment: [String: String]) throws {
        let console = open(consolePath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard console >= 0 else { throw DaemonError(.start, "\(SystemCallError("open", context: consolePath))") }
        defer { close(console) }
        let ns = namespace
        let started = try Launcher.shared.sync {
            try ns.spawn(command, logFD: console, environment: environment)
        }
        lock.lock()
        pid = started
        exitStatus = nil
        lock.unlock()
        _ = try? write("daemon.pid", "\(started)\n", mode: 0o600)
    }

    /// Whether the process is still alive (reaping it when it is not).
    public var isRunning: Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let pid, exitStatus == nil else { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || (r < 0 && errno == ECHILD) {
            exitStatus = r == pid ? status : -1
            return false
        }
        return true
    }

    /// "exit 1", "killed by signal 9", "running".
    public var exitDescription: String {
        _ = isRunning
        lock.lock()
        defer { lock.unlock() }
        guard pid != nil else { return "never started" }
        guard let status = exitStatus else { return "running" }
        if status == -1 { return "gone (reaped elsewhere)" }
        if status & 0x7f == 0 { return "exit \((status >> 8) & 0xff)" }
        return "killed by signal \(status & 0x7f) (\(signalName(status & 0x7f)))"
    }

    /// Ends the process: SIGTERM, then SIGKILL after `grace` seconds; waits for it.
    func terminate(grace: Double) -> StopReport? {
        let started = Date()
        guard let pid else { return nil }
        guard isRunning else {
            return StopReport(daemon: "\(program) \(pid)", signal: nil, exit: exitDescription, seconds: 0)
        }
        kill(pid, SIGTERM)
        var signal = SIGTERM
        let deadline = Date().addingTimeInterval(grace)
        while isRunning && Date() < deadline { usleep(5_000) }
        if isRunning {
            kill(pid, SIGKILL)
            signal = SIGKILL
            while isRunning { usleep(5_000) }
        }
        return StopReport(daemon: "\(program) \(pid)", signal: signal, exit: exitDescription,
                          seconds: Date().timeIntervalSince(started))
    }

    /// Removes the directory and everything in it.
    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// What is left of this instance: a live process, the directory, or any process whose
    /// command line names the directory. Empty after a clean `stop()`.
    public func leftovers() -> [String] {
        var found: [String] = []
        if let pid, kill(pid, 0) == 0, !DaemonInstance.isZombie(pid) { found.append("process \(pid) (\(program)) still alive") }
        if access(directory, F_OK) == 0 { found.append("directory \(directory) still exists") }
        for other in DaemonInstance.processes(naming: directory) where other != pid {
            found.append("process \(other) still names \(directory)")
        }
        return found
    }

    /// What any daemon of the namespace `name` left behind: its directories under
    /// `baseDirectory` and processes naming them (for tests of failure paths, where no daemon
    /// object comes back).
    public static func leftovers(namespace name: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: baseDirectory)) ?? []
        var found: [String] = []
        for entry in entries where entry.hasPrefix(name + ".") {
            found.append("directory \(baseDirectory)/\(entry) still exists")
        }
        for pid in processes(naming: baseDirectory + "/" + name + ".") {
            found.append("process \(pid) still names \(baseDirectory)/\(name).*")
        }
        return found
    }

    // MARK: - Logs

    /// The last lines of the log and of the console output, with earlier lines that look like
    /// reasons (failures, refusals, notify errors) kept in front, so that a long log still
    /// shows why. Secrets never reach the logs: neither daemon logs its PSK at these levels.
    public func logExcerpts(lines count: Int = 30) -> [LogExcerpt] {
        var out: [LogExcerpt] = []
        for (path, title) in [(logPath, "\(namespace.name) \((logPath as NSString).lastPathComponent)"),
                              (consolePath, "\(namespace.name) \(program) console")] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let all = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            guard !all.isEmpty else { continue }
            let tail = Array(all.suffix(count))
            let earlier = all.dropLast(count).filter(DaemonInstance.looksLikeAReason).suffix(10)
            var lines = Array(earlier)
            if !earlier.isEmpty { lines.append("…") }
            else if all.count > count { lines.append("… (\(all.count - count) earlier lines)") }
            out.append(LogExcerpt(title: title, lines: lines + tail))
        }
        return out
    }

    static func looksLikeAReason(_ line: String) -> Bool {
        let l = line.lowercased()
        return ["fail", "error", "refus", "invalid", "unacceptable", "no_proposal", "authentication", "not ", "unable", "fatal"]
            .contains { l.contains($0) }
    }

    // MARK: - Leftovers of killed runs

    /// Removes the directories whose owner is dead (by the owner file each directory holds, or
    /// for older ones the run id in the name), and kills a daemon still named by one (normally
    /// none: the daemons die with the process that started them). Directories of live owners,
    /// and those whose owner cannot be proven dead, are left alone. `xfrmlab gc` does the same.
    public static func sweepLeftovers() {
        Leftovers.sweepOwnedDirectories(under: baseDirectory)
    }

    static func processes(naming path: String) -> [pid_t] { ProcessTable.processes(naming: path) }

    static func isZombie(_ pid: pid_t) -> Bool { ProcessTable.isZombie(pid) }
}

func signalName(_ s: Int32) -> String {
    switch s {
    case SIGTERM: return "SIGTERM"
    case SIGKILL: return "SIGKILL"
    case SIGSEGV: return "SIGSEGV"
    case SIGABRT: return "SIGABRT"
    case SIGINT: return "SIGINT"
    case SIGHUP: return "SIGHUP"
    case SIGPIPE: return "SIGPIPE"
    default: return "signal \(s)"
    }
}
