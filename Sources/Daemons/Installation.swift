import Foundation
import Glibc
import Namespaces
import Netlink

/// Where the IKE daemons are on this machine, found without running any of them (a daemon
/// binary started outside a lab namespace would act on the host's own network namespace).
///
/// `make deps` (Scripts/install-daemon-deps.sh) installs strongSwan with apt and unpacks
/// libreswan into `.build/daemons/libreswan`: Debian has the two conflict as packages.
public enum Installation {
    /// The repository root (where Package.swift is), found from this file's path; the
    /// directory of the fixtures and of the unpacked libreswan are under it.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
        }
        return FileManager.default.currentDirectoryPath
    }()

    /// The configuration templates: `$XFRMLAB_FIXTURES`, else `Fixtures/daemons` of the repository.
    public static var fixturesDirectory: String {
        ProcessInfo.processInfo.environment["XFRMLAB_FIXTURES"] ?? repositoryRoot + "/Fixtures/daemons"
    }

    // MARK: - strongSwan

    /// strongSwan's charon as Debian packages it: `charon-systemd` (no starter script, no pid
    /// file, so several run side by side), `swanctl`, plugins in /usr/lib/ipsec/plugins. From
    /// this machine, a root of another release or a user's build (`strongSwan(at:)`).
    public struct StrongSwan: Sendable, CustomStringConvertible {
        /// Paths as seen by charon: inside `root` when there is one.
        public var charon: String
        public var swanctl: String
        public var pluginDirectory: String
        /// The package's version; "user build" when no package manager knows it (charon reports
        /// its own once running: `StrongSwan.reportedVersion()`).
        public var version: String
        /// The root filesystem charon runs chrooted into; nil: it runs from this machine's.
        public var root: DaemonRoot?
        public func hasPlugin(_ name: String) -> Bool {
            access((root?.path ?? "") + pluginDirectory + "/libstrongswan-\(name).so", R_OK) == 0
        }
        /// The lab's plugins this installation has (`kdf` exists from 5.9.6 to 5.9.x only).
        public var plugins: [String] { Installation.strongSwanPlugins.filter { hasPlugin($0) } }
        public var description: String {
            "strongSwan \(version) (\(charon), \(swanctl)\(root.map { ", root \($0.path)" } ?? ""))"
        }
    }

    /// The plugins every charon of the lab loads (besides the kernel backend), when it has them;
    /// all but the optional ones must be there.
    static let strongSwanPlugins = ["random", "nonce", "openssl", "kdf", "pem", "pkcs1", "pkcs8", "x509", "pubkey",
                                    "revocation", "constraints", "kernel-netlink", "socket-default", "vici"]
    static let optionalStrongSwanPlugins: Set<String> = ["kdf"]

    /// This machine's strongSwan (apt's).
    public static let strongSwan: Result<StrongSwan, DaemonError> = {
        let charon = "/usr/sbin/charon-systemd", swanctl = "/usr/sbin/swanctl", plugins = "/usr/lib/ipsec/plugins"
        for path in [charon, swanctl] where access(path, X_OK) != 0 {
            return .failure(DaemonError(.notInstalled, "strongSwan: \(path) not found (`make deps` installs charon-systemd and strongswan-swanctl)"))
        }
        return checked(StrongSwan(charon: charon, swanctl: swanctl, pluginDirectory: plugins,
                                  version: packageVersion("charon-systemd") ?? "?", root: nil))
    }()

    /// strongSwan from `path`: a root filesystem (a cached root such as
    /// /var/lib/xfrmlab/daemons/trixie-strongswan, or any directory with bin/sh: charon runs
    /// chrooted into it), or an install prefix of a build for this machine (`./configure
    /// --prefix=PATH`: PATH/sbin/swanctl, PATH/libexec/ipsec/charon or PATH/sbin/charon-systemd,
    /// PATH/lib/ipsec/plugins; it runs as it is).
    public static func strongSwan(at path: String) -> Result<StrongSwan, DaemonError> {
        if access(path + "/bin/sh", X_OK) == 0 {
            return Result {
                let root = try DaemonRoot(path: path)
                try DaemonRoot.checkTools()
                let charon = ["/usr/sbin/charon-systemd", "/usr/libexec/ipsec/charon", "/usr/lib/ipsec/charon"].first(where: root.isExecutable)
                guard let charon, root.isExecutable("/usr/sbin/swanctl") else {
                    throw DaemonError(.notInstalled, "strongSwan: no charon-systemd or charon with swanctl in the root \(path)")
                }
                let plugins = ["/usr/lib/ipsec/plugins", "/usr/lib/x86_64-linux-gnu/ipsec/plugins"].first(where: root.exists) ?? "/usr/lib/ipsec/plugins"
                let version = root.packageVersion("charon-systemd") ?? root.packageVersion("charon-daemon")
                    ?? root.packageVersion("strongswan-charon") ?? "user build"
                return try checked(StrongSwan(charon: charon, swanctl: "/usr/sbin/swanctl", pluginDirectory: plugins,
                                              version: version, root: root)).get()
            }.mapError { $0 as? DaemonError ?? DaemonError(.notInstalled, "\($0)") }
        }
        let charon = [path + "/sbin/charon-systemd", path + "/libexec/ipsec/charon"].first { (p: String) in access(p, X_OK) == 0 }
        guard let charon, access(path + "/sbin/swanctl", X_OK) == 0 else {
            return .failure(DaemonError(.notInstalled, "strongSwan: \(path) is neither a root filesystem (bin/sh) nor an install prefix (sbin/swanctl with sbin/charon-systemd or libexec/ipsec/charon)"))
        }
        return checked(StrongSwan(charon: charon, swanctl: path + "/sbin/swanctl", pluginDirectory: path + "/lib/ipsec/plugins",
                                  version: "user build", root: nil))
    }

    private static func checked(_ found: StrongSwan) -> Result<StrongSwan, DaemonError> {
        let missing = strongSwanPlugins.filter { !optionalStrongSwanPlugins.contains($0) && !found.hasPlugin($0) }
        guard missing.isEmpty else {
            return .failure(DaemonError(.notInstalled, "strongSwan: plugins missing from \((found.root?.path ?? "") + found.pluginDirectory): \(missing.joined(separator: ", "))"))
        }
        return .success(found)
    }

    /// Whether charon can use kernel-libipsec here: the plugin (libcharon-extra-plugins) and a
    /// TUN device node.
    public static let libipsec: Result<Void, DaemonError> = strongSwan.flatMap(libipsec(for:))

    /// Whether `installation` can use kernel-libipsec here.
    public static func libipsec(for s: StrongSwan) -> Result<Void, DaemonError> {
        guard s.hasPlugin("kernel-libipsec") else {
            return .failure(DaemonError(.notInstalled, "strongSwan: no kernel-libipsec plugin in \((s.root?.path ?? "") + s.pluginDirectory) (package libcharon-extra-plugins)"))
        }
        var st = stat()
        guard stat("/dev/net/tun", &st) == 0, (st.st_mode & S_IFMT) == S_IFCHR else {
            let why = errno == 0 ? "is no character device" : "\(errnoText(errno)) (\(errnoName(errno)))"
            return .failure(DaemonError(.notInstalled, "no TUN device: /dev/net/tun: \(why); kernel-libipsec needs it (module tun)"))
        }
        return .success(())
    }

    // MARK: - libreswan

    /// libreswan's pluto and its tools: unpacked into a prefix of the project's, installed at /
    /// by apt, or in a root filesystem of their own (`libreswan(at:)`).
    public struct Libreswan: Sendable, CustomStringConvertible {
        /// "/" for an apt installation or a root, else the directory the .deb was unpacked into.
        public var prefix: String
        public var version: String
        /// The root filesystem pluto runs chrooted into; nil: it runs from this machine's.
        public var root: DaemonRoot?
        /// Paths as seen by pluto: inside `root` when there is one.
        public var libexec: String { (prefix == "/" ? "" : prefix) + "/usr/libexec/ipsec" }
        public var pluto: String { libexec + "/pluto" }
        public var whack: String { libexec + "/whack" }
        public var addconn: String { libexec + "/addconn" }
        /// pluto runs `/usr/libexec/ipsec/addconn` at start-up (compiled-in path): an unpacked
        /// pluto needs its prefix's usr/libexec bind-mounted there, in a mount namespace of its own.
        public var needsMountNamespace: Bool { root == nil && prefix != "/" }
        public var certutil: String
        public var pk12util: String
        public var description: String { "libreswan \(version) (\(pluto)\(root.map { ", root \($0.path)" } ?? ""))" }
    }

    /// This machine's libreswan: `$XFRMLAB_LIBRESWAN_PREFIX`, .build/daemons/libreswan or apt's.
    public static let libreswan: Result<Libreswan, DaemonError> = {
        let env = ProcessInfo.processInfo.environment["XFRMLAB_LIBRESWAN_PREFIX"]
        let candidates = (env.map { [$0] } ?? []) + [repositoryRoot + "/.build/daemons/libreswan", "/"]
        guard let prefix = candidates.first(where: { access(($0 == "/" ? "" : $0) + "/usr/libexec/ipsec/pluto", X_OK) == 0 }) else {
            return .failure(DaemonError(.notInstalled, "libreswan: no pluto in \(candidates.map { ($0 == "/" ? "" : $0) + "/usr/libexec/ipsec" }.joined(separator: " or ")) (`make deps` unpacks it into .build/daemons/libreswan)"))
        }
        return libreswan(prefix: prefix)
    }()

    /// libreswan from `path`: a root filesystem (a cached root such as
    /// /var/lib/xfrmlab/daemons/trixie-libreswan, or any directory with bin/sh and
    /// usr/libexec/ipsec/pluto: pluto and its tools run chrooted into it), or a Debian package
    /// unpacked into a prefix for this machine (PATH/usr/libexec/ipsec/pluto).
    public static func libreswan(at path: String) -> Result<Libreswan, DaemonError> {
        guard access(path + "/bin/sh", X_OK) == 0 else {
            guard access(path + "/usr/libexec/ipsec/pluto", X_OK) == 0 else {
                return .failure(DaemonError(.notInstalled, "libreswan: \(path) is neither a root filesystem (bin/sh) nor an unpacked prefix (usr/libexec/ipsec/pluto)"))
            }
            return libreswan(prefix: path)
        }
        return Result {
            let root = try DaemonRoot(path: path)
            try DaemonRoot.checkTools()
            let found = Libreswan(prefix: "/", version: root.packageVersion("libreswan") ?? "user build", root: root,
                                  certutil: "/usr/bin/certutil", pk12util: "/usr/bin/pk12util")
            for tool in [found.pluto, found.whack, found.addconn, found.certutil, found.pk12util] where !root.isExecutable(tool) {
                throw DaemonError(.notInstalled, "libreswan: \(tool) missing from the root \(path)\(tool.contains("util") ? " (package libnss3-tools)" : "")")
            }
            return found
        }.mapError { $0 as? DaemonError ?? DaemonError(.notInstalled, "\($0)") }
    }

    private static func libreswan(prefix: String) -> Result<Libreswan, DaemonError> {
        let version = prefix == "/"
            ? packageVersion("libreswan") ?? "?"
            : (try? String(contentsOfFile: prefix + "/.version", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        guard let certutil = Executable.find("certutil"), let pk12util = Executable.find("pk12util") else {
            return .failure(DaemonError(.notInstalled, "libreswan: certutil/pk12util not found (package libnss3-tools)"))
        }
        let found = Libreswan(prefix: prefix, version: version, root: nil, certutil: certutil, pk12util: pk12util)
        for tool in [found.whack, found.addconn] where access(tool, X_OK) != 0 {
            return .failure(DaemonError(.notInstalled, "libreswan: \(tool) missing"))
        }
        if found.needsMountNamespace {
            for tool in ["unshare", "mount", "sh"] where Executable.find(tool) == nil {
                return .failure(DaemonError(.notInstalled, "libreswan: an unpacked pluto is started through \(tool), which is not on PATH"))
            }
        }
        return .success(found)
    }

    /// Whether `kind` can run here, and if not, why (for test traits).
    public static func probe(_ kind: IKEDaemonKind) -> (available: Bool, reason: String) {
        let result: Result<String, DaemonError>
        switch kind {
        case .strongSwan: result = strongSwan.map(\.description)
        case .libreswan: result = libreswan.map(\.description)
        }
        switch result {
        case .success(let d): return (true, d)
        case .failure(let e): return (false, e.message)
        }
    }

    static func packageVersion(_ package: String) -> String? {
        guard let r = try? Namespaces.Process.execute(["dpkg-query", "-W", "-f=${Version}", package], timeout: 10),
              r.succeeded else { return nil }
        return r.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
