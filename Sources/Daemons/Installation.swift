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
    /// file, so several run side by side), `swanctl`, plugins in /usr/lib/ipsec/plugins.
    public struct StrongSwan: Sendable, CustomStringConvertible {
        public var charon: String
        public var swanctl: String
        public var pluginDirectory: String
        public var version: String
        public func hasPlugin(_ name: String) -> Bool {
            access(pluginDirectory + "/libstrongswan-\(name).so", R_OK) == 0
        }
        public var description: String { "strongSwan \(version) (\(charon), \(swanctl))" }
    }

    /// The plugins every charon of the lab loads (besides the kernel backend).
    static let strongSwanPlugins = ["random", "nonce", "openssl", "kdf", "pem", "pkcs1", "pkcs8", "x509", "pubkey",
                                    "revocation", "constraints", "kernel-netlink", "socket-default", "vici"]

    public static let strongSwan: Result<StrongSwan, DaemonError> = {
        let charon = "/usr/sbin/charon-systemd", swanctl = "/usr/sbin/swanctl", plugins = "/usr/lib/ipsec/plugins"
        for path in [charon, swanctl] where access(path, X_OK) != 0 {
            return .failure(DaemonError(.notInstalled, "strongSwan: \(path) not found (`make deps` installs charon-systemd and strongswan-swanctl)"))
        }
        let found = StrongSwan(charon: charon, swanctl: swanctl, pluginDirectory: plugins,
                               version: packageVersion("charon-systemd") ?? "?")
        let missing = strongSwanPlugins.filter { !found.hasPlugin($0) }
        guard missing.isEmpty else {
            return .failure(DaemonError(.notInstalled, "strongSwan: plugins missing from \(plugins): \(missing.joined(separator: ", "))"))
        }
        return .success(found)
    }()

    /// Whether charon can use kernel-libipsec here: the plugin (libcharon-extra-plugins) and a
    /// TUN device node.
    public static let libipsec: Result<Void, DaemonError> = {
        switch strongSwan {
        case .failure(let e): return .failure(e)
        case .success(let s):
            guard s.hasPlugin("kernel-libipsec") else {
                return .failure(DaemonError(.notInstalled, "strongSwan: no kernel-libipsec plugin in \(s.pluginDirectory) (package libcharon-extra-plugins)"))
            }
            var st = stat()
            guard stat("/dev/net/tun", &st) == 0, (st.st_mode & S_IFMT) == S_IFCHR else {
                let why = errno == 0 ? "is no character device" : "\(errnoText(errno)) (\(errnoName(errno)))"
                return .failure(DaemonError(.notInstalled, "no TUN device: /dev/net/tun: \(why); kernel-libipsec needs it (module tun)"))
            }
            return .success(())
        }
    }()

    // MARK: - libreswan

    /// libreswan's pluto and its tools, either unpacked into a prefix of the project's or
    /// installed at / by apt.
    public struct Libreswan: Sendable, CustomStringConvertible {
        /// "/" for an apt installation, else the directory the .deb was unpacked into.
        public var prefix: String
        public var version: String
        public var libexec: String { (prefix == "/" ? "" : prefix) + "/usr/libexec/ipsec" }
        public var pluto: String { libexec + "/pluto" }
        public var whack: String { libexec + "/whack" }
        public var addconn: String { libexec + "/addconn" }
        /// pluto runs `/usr/libexec/ipsec/addconn` at start-up (compiled-in path): an unpacked
        /// pluto needs its prefix's usr/libexec bind-mounted there, in a mount namespace of its own.
        public var needsMountNamespace: Bool { prefix != "/" }
        public var certutil: String
        public var pk12util: String
        public var description: String { "libreswan \(version) (\(pluto))" }
    }

    public static let libreswan: Result<Libreswan, DaemonError> = {
        let env = ProcessInfo.processInfo.environment["XFRMLAB_LIBRESWAN_PREFIX"]
        let candidates = (env.map { [$0] } ?? []) + [repositoryRoot + "/.build/daemons/libreswan", "/"]
        guard let prefix = candidates.first(where: { access(($0 == "/" ? "" : $0) + "/usr/libexec/ipsec/pluto", X_OK) == 0 }) else {
            return .failure(DaemonError(.notInstalled, "libreswan: no pluto in \(candidates.map { ($0 == "/" ? "" : $0) + "/usr/libexec/ipsec" }.joined(separator: " or ")) (`make deps` unpacks it into .build/daemons/libreswan)"))
        }
        let version = prefix == "/"
            ? packageVersion("libreswan") ?? "?"
            : (try? String(contentsOfFile: prefix + "/.version", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        guard let certutil = Executable.find("certutil"), let pk12util = Executable.find("pk12util") else {
            return .failure(DaemonError(.notInstalled, "libreswan: certutil/pk12util not found (package libnss3-tools)"))
        }
        let found = Libreswan(prefix: prefix, version: version, certutil: certutil, pk12util: pk12util)
        for tool in [found.whack, found.addconn] where access(tool, X_OK) != 0 {
            return .failure(DaemonError(.notInstalled, "libreswan: \(tool) missing"))
        }
        if found.needsMountNamespace {
            for tool in ["unshare", "mount", "sh"] where Executable.find(tool) == nil {
                return .failure(DaemonError(.notInstalled, "libreswan: an unpacked pluto is started through \(tool), which is not on PATH"))
            }
        }
        return .success(found)
    }()

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
