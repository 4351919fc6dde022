import Foundation
import Glibc
@testable import Matrix
import Testing
import XfrmLabTesting

/// A CI system fans the matrix out (`--shard I/N`) and joins the shares (`matrix merge`).
@Suite("The matrix split into shares and joined again", .tags(.privileged), .needsNamespaces, .serialized)
struct MatrixShardTests {
    static let underMatrix = ProcessInfo.processInfo.environment["XFRMLAB_VERDICTS"] != nil

    @Test("three shares of a host matrix, merged, give the verdicts of one unsharded run; the joined report reads as KTAP too",
          .disabled(if: underMatrix, "runs `xfrmlab matrix` itself; under the matrix it would nest one (make test runs it on the host)"))
    func threeShares() throws {
        let dir = NSTemporaryDirectory() + "xfrmlab-shards-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Quick suites, with tests that pass and tests that skip here (no ESP on most hosts).
        let common = ["matrix", "--kernel", "host", "--filter", "TraceGraphTests|ValueTests|XfrmStateTests|XfrmErrorTests", "--no-retry"]
        let whole = try xfrmlab(common + ["--output", dir + "/whole"], timeout: 600)
        try #require(whole.succeeded, "\(whole)")
        var shares: [String] = []
        for i in 1...3 {
            let share = try xfrmlab(common + ["--shard", "\(i)/3", "--output", dir + "/share\(i)"], timeout: 600)
            try #require(share.succeeded, "\(share)")
            #expect(share.standardError.contains("shard \(i)/3: host "), "\(share)")
            shares.append(dir + "/share\(i)")
        }
        let merged = try xfrmlab(["matrix", "merge"] + shares + ["--output", dir + "/merged"])
        try #require(merged.succeeded, "\(merged)")

        func load(_ d: String) throws -> MatrixReport { try MatrixReport.load(directory: d) }
        let one = try load(dir + "/whole"), joined = try load(dir + "/merged")
        let parts = try shares.map(load)
        func verdicts(_ r: MatrixReport) -> [String: String] {
            Dictionary(uniqueKeysWithValues: r.kernels.flatMap { k in k.cells.map { ("\(k.kernel.label) \($0.key)", $0.value.verdict.rawValue) } })
        }
        #expect(verdicts(one).count > 10, "\(verdicts(one))")
        #expect(Set(verdicts(one).values).isSuperset(of: ["pass", "skip"]) || Set(verdicts(one).values) == ["pass"], "\(verdicts(one))")
        #expect(verdicts(joined) == verdicts(one))
        // Rows in any order (a run lists them as its tests finished), each named as the whole run named it.
        func names(_ r: MatrixReport) -> [String: String] { Dictionary(uniqueKeysWithValues: r.rows.map { ($0.id, $0.name) }) }
        #expect(names(joined) == names(one))
        #expect(joined.ok == one.ok)
        // Each share ran about a third, and none ran what another did.
        let ran = parts.map { p in p.kernels.flatMap { $0.cells.filter { $0.value.verdict != .notSelected }.keys } }
        #expect(ran.allSatisfy { abs($0.count - verdicts(one).count / 3) <= 1 }, "\(ran.map(\.count))")
        #expect(Set(ran.flatMap { $0 }).count == ran.reduce(0) { $0 + $1.count })
        let ktap = try String(contentsOfFile: dir + "/merged/report.ktap", encoding: .utf8)
        #expect(ktap.hasPrefix("KTAP version 1\n1..1\n"))
        #expect(ktap.components(separatedBy: "\n    ok ").count - 1 + ktap.components(separatedBy: "\n    not ok ").count - 1 == verdicts(one).count)
        #expect(ktap.contains("# SKIP") == verdicts(one).values.contains("skip"))
    }

    @Test("a share is I/N with 1 ≤ I ≤ N; anything else is refused with what was expected")
    func shareSyntax() throws {
        let share = try MatrixShard(parsing: "2/3")
        #expect(share.index == 2 && share.count == 3 && share.description == "2/3")
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            #expect(throws: MatrixShard.Problem.self) { try MatrixShard(parsing: bad) }
        }
    }

    @Test("merged, a share's MISSING test stays missing unless another share ran it")
    func mergeKeepsMissing() throws {
        func share(_ cells: [String: Cell]) -> MatrixReport {
            var k = kernelResult("6.1", version: "6.1.192", cells: cells)
            k.only = Array(cells.keys)
            return MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t", kernels: [k])
        }
        let lost = try MatrixReport.merge([share(["T/a()": Cell(verdict: .pass)]), share(["T/b()": Cell(verdict: .missing, detail: "never ran")])])
        #expect(lost.kernels[0].cells["T/b()"]?.verdict == .missing && !lost.ok, "\(lost.kernels[0].cells)")
        let found = try MatrixReport.merge([share(["T/b()": Cell(verdict: .missing)]), share(["T/b()": Cell(verdict: .pass)])])
        #expect(found.kernels[0].cells["T/b()"]?.verdict == .pass)
    }

    @Test("a test left out of one kernel's run (--except) is not selected there, not missing; one lost by accident is missing")
    func exceptIsNotMissing() throws {
        var left = kernelResult("6.1", version: "6.1.192", cells: ["T/a()": Cell(verdict: .pass)])
        left.except = ["DaemonVersion|T/b"]
        let other = kernelResult("6.12", version: "6.12.117", cells: ["T/a()": Cell(verdict: .pass), "T/b()": Cell(verdict: .pass)])
        let r = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t",
                             kernels: [left, other])
        let cell = try #require(r.kernels[0].cells["T/b()"])
        #expect(cell.verdict == .notSelected && cell.detail?.contains("--except") == true && r.ok, "\(cell)")
        var lost = left
        lost.except = nil
        let r2 = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t",
                              kernels: [lost, other])
        #expect(r2.kernels[0].cells["T/b()"]?.verdict == .missing && !r2.ok)
    }
}
