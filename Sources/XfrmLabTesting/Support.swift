import Foundation
import Glibc
import Namespaces
import Probes
import Testing

/// The root of the package a test file belongs to (the nearest folder above it with a
/// Package.swift), so that a suite finds its own topology files and fixtures wherever it runs,
/// in a VM guest as on the host.
public func packageRoot(of filePath: String = #filePath) -> String {
    var url = URL(fileURLWithPath: filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}

/// Names under /run/netns that start with a run's prefix.
public func namespacesLeft(prefix: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: Namespace.directory)) ?? []).filter { $0.hasPrefix(prefix) }
}

/// Waits, without sleeping blind, until `condition` holds or `timeout` passes.
public func poll(timeout: Double = 10, every interval: Double = 0.02, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        usleep(UInt32(interval * 1_000_000))
    }
    return try condition()
}

/// Expects `trace` to follow `expected`; a failure records the problems, the expected path
/// beside the actual trace and, under `xfrmlab matrix`, the picture of both (report.html links it).
@discardableResult
public func expectPath(_ expected: PathExpectation, in trace: Trace, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
    let verdict = expected.evaluate(trace)
    #expect(verdict.passed, Comment(rawValue: verdict.report), sourceLocation: sourceLocation)
    return verdict.passed
}
