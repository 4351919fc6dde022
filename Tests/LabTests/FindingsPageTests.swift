import Foundation
@testable import Matrix
import Reports
import Testing
import XfrmLabTesting

/// Docs/Findings.md's tables come from a matrix's results, never from a hand.
@Suite("Docs/Findings.md written from report.json")
struct FindingsPageTests {
    func matrix() -> MatrixReport {
        let report = "LabTests.BugReportTests/saPrefixlenUnspec()", scenario = "LabTests.SScenarioTests/a()", other = "LabTests.SScenarioTests/b()"
        func reportCell(_ verdict: String) -> Cell {
            Cell(verdict: .pass, report: ReportCell(id: "sa-prefixlen-unspec", verdict: verdict, expected: verdict, evidence: "e"))
        }
        var m = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e", testBinary: "t", kernels: [
            kernelResult("host", version: "6.18.44", source: .host, cells: [report: reportCell("FIXED"), scenario: Cell(verdict: .skip, detail: "no ESP")]),
            kernelResult("6.1", version: "6.1.192", cells: [report: reportCell("FIXED"), scenario: Cell(verdict: .flaky), other: Cell(verdict: .pass)]),
            kernelResult("6.1-mutant", version: "6.1.192", built: "linux-source-6.1 + m", cells: [report: reportCell("REPRODUCES")]),
            kernelResult("5.10.218", version: "5.10.218", cells: [report: reportCell("REPRODUCES"), scenario: Cell(verdict: .skip, detail: "no xfrmi | here")]),
        ])
        m.rows = [MatrixReport.Row(id: report, name: "r", suite: "LabTests.BugReportTests", suiteName: "Reports"),
                  MatrixReport.Row(id: scenario, name: "a scenario holds", suite: "LabTests.SScenarioTests", suiteName: "S"),
                  MatrixReport.Row(id: other, name: "only on 6.1", suite: "LabTests.SScenarioTests", suiteName: "S")]
        return m
    }

    let page = """
        # Findings
        prose stays
        <!-- findings: suite LabTests.SScenarioTests -->
        | an old table typed by hand |
        <!-- /findings -->
        more prose
        <!-- findings: reports -->
        <!-- /findings -->
        """

    @Test("the Debian kernels, oldest first, are the columns; host and built kernels are not; every cell says what the results say")
    func render() throws {
        let reports = try BugReport.loadAll(directory: repositoryRoot + "/Fixtures/reports")
        let written = try FindingsPage.render(page: page, report: matrix(), reports: reports, pageName: "F.md")
        let lines = written.split(separator: "\n").map(String.init)
        #expect(lines.contains("| test | 5.10.218 | 6.1 (6.1.192) |"), "\(written)")
        #expect(lines.contains("| a scenario holds | skipped: no xfrmi \\| here | holds |"), "flaky counts as holding; | is escaped: \(written)")
        #expect(lines.contains("| only on 6.1 | — | holds |"), "\(written)")
        #expect(lines.contains { $0.hasPrefix("| sa-prefixlen-unspec | 3f0ab59e6537, 6.12 (") && $0.hasSuffix(" | **REPRODUCES** | FIXED |") }, "\(written)")
        #expect(!written.contains("an old table typed by hand") && written.contains("prose stays") && written.contains("more prose"))
        // Written again from the same results: the same page, and --check finds nothing.
        #expect(try FindingsPage.render(page: written, report: matrix(), reports: reports, pageName: "F.md") == written)
        #expect(FindingsPage.differences(written, written).isEmpty)
        #expect(FindingsPage.differences(page, written).count > 0)
    }

    @Test("a marker the results cannot fill, or one never closed, is refused with the page's line")
    func refusals() throws {
        let reports = try BugReport.loadAll(directory: repositoryRoot + "/Fixtures/reports")
        #expect(throws: FindingsPage.Problem.self) {
            try FindingsPage.render(page: "a\n<!-- findings: suite LabTests.NoSuchTests -->\n<!-- /findings -->", report: matrix(), reports: reports, pageName: "F.md")
        }
        do {
            _ = try FindingsPage.render(page: "a\n<!-- findings: reports -->\nno end", report: matrix(), reports: reports, pageName: "F.md")
            Issue.record("an unclosed marker was accepted")
        } catch let p as FindingsPage.Problem {
            #expect(p.description.hasPrefix("F.md:2:"), "\(p)")
        }
    }
}

/// A kernel's results as a matrix report holds them, for tests of reports built from results.
func kernelResult(_ label: String, version: String, source: Kernel.Source = .image, built: String? = nil, cells: [String: Cell]) -> KernelResult {
    var k = Kernel(label: label, source: source, image: nil, modules: nil, release: version, banner: nil)
    k.built = built
    var r = KernelResult(kernel: k, status: .ok, statusDetail: nil, accelerator: "tcg", release: version, version: version, procVersion: nil,
                         configSource: nil, config: [:], capabilities: nil, probeNote: nil, timings: Timings(), cells: [:], warnings: [],
                         notes: [], directory: "/nowhere", consoleTail: nil)
    r.cells = cells
    return r
}
