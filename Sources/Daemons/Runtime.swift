import Foundation
import Glibc
import Namespaces

/// A root filesystem a daemon runs from: its own /usr, /etc and C library, the lab's
/// interfaces and XFRM state.
///
/// A daemon of another Debian release (trixie's charon needs trixie's glibc) or a user's own
/// build installed into a directory runs chrooted into that directory, in a private mount
/// namespace *inside the lab host's network namespace*: the mount namespace gets fresh /proc,
/// /sys (the lab namespace's devices), /run and /tmp, the host's /dev, and the daemon's instance
/// directory at the same path, so its configuration, sockets and log are where the harness
/// looks. Nothing of it is visible outside (private propagation) and it goes with the daemon.
///
/// `Scripts/install-daemon-roots.sh` (`make daemon-roots`) builds the cached roots
/// (`DaemonRoot.cached("trixie-strongswan")`) with mmdebstrap; any other directory with a
/// shell at bin/sh (`DaemonRoot(path:)`) works the same way.
public struct DaemonRoot: Sendable, Hashable, CustomStringConvertible {
    /// The directory, absolute, symbolic links resolved (as /proc/PID/root shows it).
    public let path: String

    /// Where the cached roots are: `$XFRMLAB_DAEMON_CACHE`, else /var/lib/xfrmlab/daemons.
    public static var cacheDirectory: String {
        ProcessInfo.processInfo.environment["XFRMLAB_DAEMON_CACHE"] ?? "/var/lib/xfrmlab/daemons"
    }

    /// A root directory; throws when it is not one (no shell at bin/sh inside it: the daemons'
    /// scripts need one, and a prefix is not a root).
    public init(path: String) throws {
        var p = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        guard p != "/" else { throw DaemonError(.notInstalled, "\(path): the machine's own root is not a daemon root (leave the root out instead)") }
        guard access(p + "/bin/sh", X_OK) == 0 else {
            throw DaemonError(.notInstalled, "\(path): not a root filesystem (no executable bin/sh in it)")
        }
        self.path = p
    }

    /// A root of the cache by its name (`trixie-strongswan`): throws, saying how to build it,
    /// when it is not there.
    public static func cached(_ name: String) throws -> DaemonRoot {
        let path = cacheDirectory + "/" + name
        guard access(path + "/.xfrmlab-root", R_OK) == 0 else {
            throw DaemonError(.notInstalled, "no daemon root \(name) in \(cacheDirectory) (`Scripts/install-daemon-roots.sh \(name)` builds it; `make daemon-roots` builds trixie's)")
        }
        return try DaemonRoot(path: path)
    }

    /// The cached roots there are, by name.
    public static func cachedNames() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: cacheDirectory)) ?? []
        return entries.filter { access(cacheDirectory + "/" + $0 + "/.xfrmlab-root", R_OK) == 0 }.sorted()
    }

    /// `release`, `daemon` and `version` of a cached root (its .xfrmlab-root file).
    public var recorded: [String: String] {
        guard let text = try? String(contentsOfFile: path + "/.xfrmlab-root", encoding: .utf8) else { return [:] }
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { out[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return out
    }

    /// The version of a Debian package installed in the root (its dpkg database), nil when the
    /// root has none.
    public func packageVersion(_ package: String) -> String? {
        guard access(path + "/var/lib/dpkg/status", R_OK) == 0,
              let r = try? Namespaces.Process.execute(["dpkg-query", "--admindir=" + path + "/var/lib/dpkg", "-W", "-f=${Version}", package], timeout: 10),
              r.succeeded, !r.standardOutput.isEmpty else { return nil }
        return r.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `file` (a path as seen inside the root) is executable there.
    public func isExecutable(_ file: String) -> Bool { access(path + file, X_OK) == 0 }
    public func exists(_ file: String) -> Bool { access(path + file, F_OK) == 0 }

    public var description: String { path }

    /// `command` (paths as seen inside the root) run chrooted into the root in a new private
    /// mount namespace, with `directory` (an instance's) bound at the same path inside. For the
    /// daemon itself and for tools run before it is up; spawn the result in the lab namespace.
    func command(_ command: [String], binding directory: String) -> [String] {
        // set -e: a mount that fails stops here with mount's message, before anything runs.
        let script = """
            set -e
            r=$1; d=$2; shift 2
            mount --rbind /dev "$r/dev"
            mount -t proc proc "$r/proc"
            mount -t sysfs sysfs "$r/sys"
            mount -t tmpfs -o mode=0755 tmpfs "$r/run"
            mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
            mkdir -p "$r$d"
            mount --bind "$d" "$r$d"
            exec chroot "$r" "$@"
            """
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "xfrmlab-root", path, directory] + command
    }

    /// `command` run inside the mount namespace and root of the running daemon `pid` (its tools
    /// once it is up: whack, swanctl). Spawn the result in the lab namespace.
    static func entering(_ pid: pid_t, _ command: [String]) -> [String] {
        ["nsenter", "--target", "\(pid)", "--mount", "--root", "--wd", "--"] + command
    }

    /// The programs the wrapping needs on the machine's own PATH.
    static func checkTools() throws {
        for tool in ["unshare", "nsenter", "mount", "chroot", "sh"] where Executable.find(tool) == nil {
            throw DaemonError(.notInstalled, "a daemon root is entered through \(tool), which is not on PATH (util-linux, coreutils)")
        }
    }
}
