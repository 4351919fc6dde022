import Foundation
import Glibc
import Netlink

/// One run of the harness: a unique id that prefixes every namespace it makes
/// (`xl<id>-west`), a lock held for as long as the owning process lives, and a state file.
///
/// The lock is what makes cleanup after `kill -9` safe: `gc` removes the namespaces of a run
/// only when it can take that run's lock, which the kernel releases when the owner dies, so a
/// live run is never touched. A run left up on purpose (`xfrmlab up`) is marked detached and
/// is removed by `down`, not by `gc`.
public final class Run: @unchecked Sendable {
    public static let stateDirectory = "/run/xfrmlab"
    public static let namespacePrefix = "xl"

    public struct State: Codable, Sendable {
        public var id: String
        public var pid: Int32
        public var topology: String
        public var topologyFile: String?
        public var created: Date
        public var detached: Bool
        /// Host name → namespace name.
        public var namespaces: [String: String]
    }

    public let id: String
    private var lockFD: Int32
    public private(set) var state: State

    /// `xl<id>-`: every namespace of this run starts with it.
    public var prefix: String { Run.prefix(for: id) }
    public static func prefix(for id: String) -> String { namespacePrefix + id + "-" }

    public func namespaceName(for host: String) -> String { prefix + host }

    static var lockDirectory: String { stateDirectory + "/locks" }
    static func lockPath(_ id: String) -> String { lockDirectory + "/" + id + ".lock" }
    static func statePath(_ id: String) -> String { stateDirectory + "/" + id + ".json" }

    /// Starts a run with a fresh id, its lock taken before anything else exists.
    public init(topology: String, topologyFile: String? = nil, namespaces: [String: String] = [:]) throws {
        for dir in [Run.stateDirectory, Run.lockDirectory] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SystemCallError("mkdir", context: dir)
        }
        while true {
            let candidate = Run.randomID()
            // Lock a temporary file, then rename it into place: gc never sees an unlocked
            // fresh lock file, so it can never mistake a starting run for a dead one.
            let temporary = Run.lockDirectory + "/.\(candidate).\(getpid())"
            let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open", context: temporary) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                close(fd); unlink(temporary)
                throw SystemCallError("flock", context: temporary)
            }
            // link() fails with EEXIST when the id is taken; rename() would replace it.
            if link(temporary, Run.lockPath(candidate)) == 0 {
                unlink(temporary)
                id = candidate
                lockFD = fd
                break
            }
            let e = errno
            close(fd); unlink(temporary)
            if e != EEXIST { throw SystemCallError("link", errno: e, context: Run.lockPath(candidate)) }
        }
        let runPrefix = Run.prefix(for: id)
        state = State(id: id, pid: getpid(), topology: topology, topologyFile: topologyFile, created: Date(),
                      detached: false, namespaces: namespaces.mapValues { [runPrefix] in runPrefix + $0 })
        do {
            try save()
        } catch {
            finish()
            throw error
        }
    }

    private init(id: String, lockFD: Int32, state: State) {
        self.id = id
        self.lockFD = lockFD
        self.state = state
    }

    deinit { if lockFD >= 0 { close(lockFD) } }

    static func randomID() -> String {
        String(format: "%06x", UInt32.random(in: 0..<0x100_0000))
    }


    /// Marks the run as intentionally left up: `gc` will leave it alone, `down` removes it.
    public func detach() throws {
        state.detached = true
        try save()
    }

    /// Writes the state file (write to a temporary name, then rename). Encoded by hand: this
    /// runs on every bring-up, and Foundation's encoder costs milliseconds on first use.
    func save() throws {
        func quoted(_ s: String) -> String {
            var out = "\""
            for u in s.unicodeScalars {
                switch u {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
                default: out.unicodeScalars.append(u)
                }
            }
            return out + "\""
        }
        let namespaces = state.namespaces.sorted { $0.key < $1.key }.map { "\(quoted($0.key)): \(quoted($0.value))" }
        let text = """
        {"created": \(quoted(ISO8601Format.string(state.created))), "detached": \(state.detached), "id": \(quoted(state.id)), \
        "namespaces": {\(namespaces.joined(separator: ", "))}, "pid": \(state.pid), "topology": \(quoted(state.topology)), \
        "topologyFile": \(state.topologyFile.map(quoted) ?? "null")}

        """
        let path = Run.statePath(id)
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemCallError("open", context: temporary) }
        let bytes = Array(text.utf8)
        let written = write(fd, bytes, bytes.count)
        close(fd)
        guard written == bytes.count else { throw SystemCallError("write", context: temporary) }
        guard rename(temporary, path) == 0 else { throw SystemCallError("rename", context: path) }
    }

    /// Removes the run's files and releases its lock (after its namespaces are gone).
    public func finish() {
        unlink(Run.statePath(id) + ".tmp")
        unlink(Run.statePath(id))
        unlink(Run.lockPath(id))
        if lockFD >= 0 {
            close(lockFD)
            lockFD = -1
        }
    }

    // MARK: - Other runs

    /// A run found on this machine.
    public struct Found: Sendable {
        public var id: String
        public var state: State?
        public var namespaces: [String]
        /// Its owner still holds the lock.
        public var live: Bool
    }

    /// Dates as the state file holds them (ISO 8601, UTC, whole seconds).
    enum ISO8601Format {
        static func string(_ date: Date) -> String {
            var t = time_t(date.timeIntervalSince1970)
            var tm = tm()
            gmtime_r(&t, &tm)
            return String(format: "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                          tm.tm_hour, tm.tm_min, tm.tm_sec)
        }
    }

    static func readState(_ id: String) -> State? {
        guard let data = FileManager.default.contents(atPath: statePath(id)) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(State.self, from: data)
    }

    /// Every run that has a state file, a lock or a namespace here.
    public static func all() -> [Found] {
        var byID: [String: [String]] = [:]
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Namespace.directory)) ?? []
        for name in names where name.hasPrefix(namespacePrefix) {
            let rest = name.dropFirst(namespacePrefix.count)
            guard let dash = rest.firstIndex(of: "-") else { continue }
            let id = String(rest[..<dash])
            guard id.count == 6, id.allSatisfy(\.isHexDigit) else { continue }
            byID[id, default: []].append(name)
        }
        for file in (try? FileManager.default.contentsOfDirectory(atPath: stateDirectory)) ?? [] where file.hasSuffix(".json") {
            byID[String(file.dropLast(5)), default: []] += []
        }
        for file in (try? FileManager.default.contentsOfDirectory(atPath: lockDirectory)) ?? [] where file.hasSuffix(".lock") {
            byID[String(file.dropLast(5)), default: []] += []
        }
        return byID.keys.sorted().map { id in
            Found(id: id, state: readState(id), namespaces: byID[id]!.sorted(), live: isLocked(id))
        }
    }

    /// Removes the temporary files of runs killed while writing them: a lock file not yet
    /// moved into place (`.ID.PID`) whose process is gone. Returns what it removed.
    @discardableResult
    public static func sweepTemporaryFiles() -> [String] {
        var removed: [String] = []
        for file in (try? FileManager.default.contentsOfDirectory(atPath: lockDirectory)) ?? [] where file.hasPrefix(".") {
            guard let pid = Int32(file.split(separator: ".").last ?? "") else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink(lockDirectory + "/" + file)
                removed.append(file)
            }
        }
        return removed
    }

    static func isLocked(_ id: String) -> Bool {
        let fd = open(lockPath(id), O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return flock(fd, LOCK_EX | LOCK_NB) != 0
    }

    /// Takes over a run that is not live (a detached one, for `down`, or a dead one, for `gc`).
    /// Returns nil when its owner is alive.
    public static func adopt(id: String) throws -> Run? {
        let path = lockPath(id)
        var fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            // No lock file: a run killed between its lock and its state, or one gc half-removed.
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SystemCallError("open", context: path) }
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        let state = readState(id) ?? State(id: id, pid: 0, topology: "?", topologyFile: nil, created: Date(),
                                           detached: false, namespaces: [:])
        return Run(id: id, lockFD: fd, state: state)
    }
}
