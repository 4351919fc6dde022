import Daemons
import Foundation
import Glibc
import Lab
import Namespaces
import Testing
import XfrmLabTesting

/// The cached roots `make daemon-roots` builds (Scripts/install-daemon-roots.sh), named as
/// paths, the way a user names their own build.
let trixieStrongSwanRoot = DaemonRoot.cacheDirectory + "/trixie-strongswan"
let trixieLibreswanRoot = DaemonRoot.cacheDirectory + "/trixie-libreswan"

/// Daemons of another release, run from a root filesystem given as a path through the public
/// API: chrooted in a mount namespace of their own inside the lab host's network namespace.
/// Runs on any kernel (no SA is negotiated here; `DaemonVersionTests` does that in a VM).
@Suite("IKE daemons from a root filesystem named by path", .tags(.privileged, .daemons), .needsNamespaces)
struct DaemonRootTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var kind: IKEDaemonKind
        var root: String
        /// What the running daemon must say it is: its package's upstream version.
        var reports: String
        var testDescription: String { "\(kind) from \(root)" }
    }

    /// trixie's two roots (which `make test` builds), and every other root of the cache
    /// (`Scripts/install-daemon-roots.sh bullseye-libreswan …`), each expected to report the
    /// version its .xfrmlab-root file records.
    static let cases: [Case] = {
        let names = Set(DaemonRoot.cachedNames() + ["trixie-strongswan", "trixie-libreswan"])
        return names.sorted().compactMap { name in
            let path = DaemonRoot.cacheDirectory + "/" + name
            let kind: IKEDaemonKind = name.hasSuffix("-libreswan") ? .libreswan : .strongSwan
            let recorded = (try? DaemonRoot(path: path))?.recorded["version"].map(DaemonRelease.upstream)
            // Before the root exists (the trait then skips): what trixie has.
            let version = recorded ?? (kind == .strongSwan ? "6.0" : "5.")
            return Case(kind: kind, root: path, reports: kind == .strongSwan ? "charon-systemd \(version)" : "Libreswan \(version)")
        }
    }()

    @Test("the daemon runs from the root: its own version, chrooted, in the lab host's network namespace, nothing left after stop",
          .needsDaemon(.strongSwan, from: trixieStrongSwanRoot), .needsDaemon(.libreswan, from: trixieLibreswanRoot),
          arguments: cases)
    func fromRoot(_ c: Case) async throws {
        try await daemonTopology().withLab { lab in
            let config = try IKEConfiguration.between(lab, "west", "east", subnets: true, style: .policy)
            try await lab.withDaemon(DaemonSpec(c.kind, host: "west", configuration: config, installation: c.root)) { daemon in
                // Which build ran: the one of the root, not this machine's (bookworm's 5.9.8 / 4.10).
                let version = try daemon.reportedVersion()
                #expect(version.hasPrefix(c.reports), "\(daemon) reports \(version)")
                let pid = try #require(daemon.instance.pid)
                let root = try DaemonRoot(path: c.root).path
                #expect(try processRoot(pid) == root, "the daemon's root")
                #expect(try namespaceInode(pid, "net") == namespaceInode(getpid(), "net", in: lab.namespace("west")),
                        "the daemon is not in west's network namespace")
                #expect(try namespaceInode(pid, "mnt") != namespaceInode(getpid(), "mnt"), "the daemon shares the harness's mount namespace")
                // Loaded and serving: the connection is known to it, no SA yet.
                #expect(try daemon.status().isEmpty)
                // The root's mounts are private to the daemon: none shows in the harness's table.
                #expect(try hostMounts().filter { $0.hasPrefix(root) } == [])
                if let pluto = daemon as? Libreswan {
                    let said = try pluto.whack(["--status"]).standardOutput
                    #expect(said.contains("\"\(config.name)\""), "whack --status of the root's whack: \(said)")
                }
            }
            #expect(daemonLeftovers([lab.run.prefix + "west"]) == [])
        }
        #expect(try hostMounts().filter { $0.hasPrefix(try DaemonRoot(path: c.root).path) } == [])
    }

    @Test("a path that is neither a root nor a prefix is refused with the path and what was looked for")
    func notARoot() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-not-a-root-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for (kind, result) in [(IKEDaemonKind.strongSwan, Installation.strongSwan(at: dir).map(\.description)),
                               (.libreswan, Installation.libreswan(at: dir).map(\.description))] {
            guard case .failure(let e) = result else { Issue.record("\(kind) from \(dir) was accepted"); continue }
            #expect(e.message.contains(dir) && e.message.contains("root filesystem"), "\(e.message)")
        }
    }

    func processRoot(_ pid: pid_t) throws -> String {
        try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/root")
    }

    func namespaceInode(_ pid: pid_t, _ kind: String, in namespace: Namespace? = nil) throws -> String {
        if let namespace {
            let r = try namespace.execute(["readlink", "/proc/self/ns/\(kind)"])
            return r.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")
    }

    /// The mount points of the harness's mount namespace.
    func hostMounts() throws -> [String] {
        try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8).split(separator: "\n")
            .map { $0.split(separator: " ").dropFirst(4).prefix(1).joined() }.sorted()
    }
}
