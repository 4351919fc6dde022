import Foundation
import Glibc
import Lab
import Namespaces
import TestSupport
import Testing
import Topology

extension Tag {
    /// Needs root: creates network namespaces.
    @Tag static var privileged: Self
}

/// Whether this process may create network namespaces, probed once by trying it.
let namespaceProbe: (ok: Bool, reason: String) = {
    guard geteuid() == 0 else { return (false, "needs root: geteuid() = \(geteuid())") }
    do {
        let ns = try Namespace.create(name: "xlprobe\(getpid())")
        ns.delete()
        return (true, "")
    } catch {
        return (false, "cannot create a network namespace: \(error)")
    }
}()

extension Trait where Self == ConditionTrait {
    /// The test creates namespaces; skipped, with the probe's answer, where that fails.
    static var needsNamespaces: Self {
        .enabled(if: namespaceProbe.ok, Comment(rawValue: namespaceProbe.reason))
    }
}

/// The repository root (where Package.swift is).
let repositoryRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}()

func topologyFile(_ name: String) -> String { repositoryRoot + "/Topologies/\(name).yaml" }

/// The built `xfrmlab` next to the test bundle.
let xfrmlabBinary: String = {
    let bundle = Bundle.main.bundleURL.deletingLastPathComponent()
    // On Linux the main bundle is the directory holding the test executable, next to xfrmlab.
    for candidate in [Bundle.main.bundleURL.appendingPathComponent("xfrmlab").path,
                      bundle.appendingPathComponent("xfrmlab").path, repositoryRoot + "/.build/debug/xfrmlab"]
    where FileManager.default.isExecutableFile(atPath: candidate) {
        return candidate
    }
    return repositoryRoot + "/.build/debug/xfrmlab"
}()

/// Runs the built `xfrmlab` with `args`, as a user would.
func xfrmlab(_ args: [String], timeout: Double = 120) throws -> ProcessResult {
    try Namespaces.Process.execute([xfrmlabBinary] + args, timeout: timeout)
}

/// Names under /run/netns that start with a run's prefix.
func namespacesLeft(prefix: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: Namespace.directory)) ?? []).filter { $0.hasPrefix(prefix) }
}

/// Waits, without sleeping blind, until `condition` holds or `timeout` passes.
func poll(timeout: Double = 10, every interval: Double = 0.02, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(UInt32(interval * 1_000_000))
    }
    return try condition()
}

