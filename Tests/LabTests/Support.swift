import Foundation
import Glibc
import Lab
import Namespaces
import TestSupport
import Testing
import XfrmLabTesting
import Topology

/// The repository root (where Package.swift is).
let repositoryRoot = packageRoot()

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
