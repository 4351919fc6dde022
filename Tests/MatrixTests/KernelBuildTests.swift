import Foundation
import Testing
@testable import Matrix

/// A scratch directory of the test's own, removed afterwards.
private func scratch(_ name: String) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-\(name)-\(getpid())").path
    try? FileManager.default.removeItem(atPath: dir)
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

/// A unified diff that changes line `line` of `file` from `old` to `new`.
private func patch(_ file: String, _ old: String, _ new: String) -> String {
    "# changes \(file)\n--- a/\(file)\n+++ b/\(file)\n@@ -1 +1 @@\n-\(old)\n+\(new)\n"
}

@Suite("Kernels built from source: pins, aliases, patches, the mutation score")
struct KernelBuildTests {
    @Test("a lock's sources are pinned like its kernels: a bad checksum or a name given twice is refused with the field")
    func sourcesInLock() throws {
        let sha = String(repeating: "b", count: 64)
        let good = """
            series: {}
            kernels: []
            sources:
              - { name: "6.1", version: "6.1.192", suite: bookworm-security,
                  package: { name: linux-source-6.1, version: "6.1.192-3", size: 1, sha256: \(sha) } }
            """
        let lock = try KernelLock.parse(good, path: "k.lock")
        #expect(lock.source(for: "6.1")?.package.version == "6.1.192-3")
        #expect(lock.source(for: "6.12") == nil)
        let bad = #expect(throws: KernelLockError.self) { try KernelLock.parse(good.replacingOccurrences(of: sha, with: "xyz"), path: "k.lock") }
        #expect(bad?.description == "k.lock: sources[0].package.sha256: \"xyz\" is not a SHA-256")
        // A lock written before sources existed still reads.
        #expect(try KernelLock.parse("series: {}\nkernels: []\n", path: "k.lock").sources == nil)
        // The repository's own lock pins 6.1's source.
        let repo = try KernelLock.load(path: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path + "/" + KernelLock.defaultPath)
        #expect(repo.source(for: "6.1")?.package.name == "linux-source-6.1")
    }

    @Test("SERIES-control has no patches, SERIES-mutant every mutant but those that must be alone, SERIES-mutant-ID one")
    func aliases() throws {
        let root = try scratch("aliases")
        defer { try? FileManager.default.removeItem(atPath: root) }
        for (id, alone) in [("a-bug", false), ("b-panic", true), ("c-bug", false)] {
            try FileManager.default.createDirectory(atPath: "\(root)/Fixtures/reports/\(id)", withIntermediateDirectories: true)
            let text = "# mutant for \(id)\n" + (alone ? "# XfrmLab: alone — panics\n" : "") + patch("f.c", "x", "y")
            try Data(text.utf8).write(to: URL(fileURLWithPath: "\(root)/Fixtures/reports/\(id)/mutant-6.1.patch"))
        }
        try FileManager.default.createDirectory(atPath: "\(root)/Fixtures/reports/no-mutant", withIntermediateDirectories: true)
        let lock = KernelLock(series: [:], kernels: [], sources: [KernelLock.Source(
            name: "6.1", version: "6.1.192", suite: "bookworm-security",
            package: KernelLock.Package(name: "linux-source-6.1", version: "6.1.192-3", size: 1, sha256: String(repeating: "b", count: 64)))])
        let control = try #require(try BuiltKernels.request(for: "6.1-control", lock: lock, repositoryRoot: root))
        #expect(control.patches.isEmpty && control.localVersion == "-xfrmlab")
        let mutant = try #require(try BuiltKernels.request(for: "6.1-mutant", lock: lock, repositoryRoot: root))
        #expect(mutant.patches.map(\.report) == ["a-bug", "c-bug"])
        #expect(mutant.localVersion == "-xfrmlab-mutant")
        let one = try #require(try BuiltKernels.request(for: "6.1-mutant-b-panic", lock: lock, repositoryRoot: root))
        #expect(one.patches.map(\.report) == ["b-panic"])
        let missing = #expect(throws: KernelNotFound.self) { try BuiltKernels.request(for: "6.1-mutant-no-mutant", lock: lock, repositoryRoot: root) }
        #expect(missing?.description.contains("mutants of 6.1: a-bug, b-panic, c-bug") == true)
        #expect(try BuiltKernels.request(for: "6.12-mutant", lock: lock, repositoryRoot: root) == nil)
        #expect(try BuiltKernels.request(for: "6.1", lock: lock, repositoryRoot: root) == nil)
    }

    @Test("switching patches reverts only those that differ, with the text they were applied with, and says which one does not apply")
    func switchingPatches() throws {
        let dir = try scratch("patches")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = dir + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        for f in ["a.c", "b.c", "c.c"] { try Data("old\n".utf8).write(to: URL(fileURLWithPath: "\(source)/\(f)")) }
        let builder = KernelBuilder(cache: KernelCache(root: dir))
        let a = KernelBuilder.Patch(name: "a", report: "ra", text: patch("a.c", "old", "new"))
        let b = KernelBuilder.Patch(name: "b", report: "rb", text: patch("b.c", "old", "new"))
        let c = KernelBuilder.Patch(name: "c", report: nil, text: patch("c.c", "old", "new"))
        func read(_ f: String) -> String { (try? String(contentsOfFile: "\(source)/\(f)", encoding: .utf8)) ?? "?" }
        try builder.switchPatches(to: [a, b], source: source, state: dir + "/applied.json")
        #expect([read("a.c"), read("b.c"), read("c.c")] == ["new\n", "new\n", "old\n"])
        let aTime = try FileManager.default.attributesOfItem(atPath: source + "/a.c")[.modificationDate] as? Date
        Thread.sleep(forTimeInterval: 0.02)
        try builder.switchPatches(to: [a, c], source: source, state: dir + "/applied.json")
        #expect([read("a.c"), read("b.c"), read("c.c")] == ["new\n", "old\n", "new\n"])
        #expect(try FileManager.default.attributesOfItem(atPath: source + "/a.c")[.modificationDate] as? Date == aTime,
                "a patch kept is not touched, so make does not recompile its file")
        try builder.switchPatches(to: [], source: source, state: dir + "/applied.json")
        #expect([read("a.c"), read("b.c"), read("c.c")] == ["old\n", "old\n", "old\n"])
        let broken = KernelBuilder.Patch(name: "Fixtures/reports/x/mutant-6.1.patch", report: "x", text: patch("a.c", "gone", "new"))
        let e = #expect(throws: KernelBuildError.self) { try builder.switchPatches(to: [a, broken], source: source, state: dir + "/applied.json") }
        #expect(e?.description.hasPrefix("Fixtures/reports/x/mutant-6.1.patch: does not apply to \(source) on top of 1 other patches") == true)
        #expect(read("a.c") == "new\n", "the patches before the one that failed stay applied, and the state file says so")
        try builder.switchPatches(to: [], source: source, state: dir + "/applied.json")
        #expect(read("a.c") == "old\n")
    }

    @Test("a mutant kernel expects REPRODUCES of the reports whose fix it undoes; the score counts detectors that fired, and one that never ran fails")
    func mutationScore() throws {
        var k = kernel("6.1-mutant", release: "6.1.192-xfrmlab-mutant")
        k.mutations = ["a-bug", "b-bug"]
        var mutant = emptyResult(k, version: "6.1.192")
        mutant.cells = [
            "LabTests.BugReportTests/a()": Cell(verdict: .pass, report: ReportCell(id: "a-bug", verdict: "REPRODUCES", expected: "REPRODUCES", evidence: "EINVAL missing")),
            "LabTests.BugReportTests/b()": Cell(verdict: .fail, report: ReportCell(id: "b-bug", verdict: "FIXED", expected: "REPRODUCES", evidence: "refused")),
        ]
        let report = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t", kernels: [mutant])
        #expect(report.mutationScore.map { "\($0.kernel) \($0.fired)/\($0.of)" } == ["6.1-mutant 1/2"])
        #expect(report.text().contains("6.1-mutant: detectors that fired on their mutant: 1 of 2"))
        #expect(report.text().contains("SILENT b-bug"))
        #expect(!report.ok, "the silent detector's test failed")

        var unran = mutant
        unran.cells.removeValue(forKey: "LabTests.BugReportTests/b()")
        let partial = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t", kernels: [unran])
        #expect(!partial.ok, "a mutant whose detector never ran fails the matrix, though no test failed")
        #expect(partial.text().contains("1 mutant whose detector never ran: b-bug"))
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        #expect(try decoder.decode(MatrixReport.self, from: report.json()).mutants?.count == 2)
    }
}
