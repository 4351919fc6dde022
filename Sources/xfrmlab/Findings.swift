import ArgumentParser
import Foundation
import Matrix
import Reports

struct FindingsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "findings",
        abstract: "Write Docs/Findings.md's tables (every report's verdict, every marked suite's tests, per catalogue kernel) from a matrix's report.json.",
        discussion: """
            The page keeps its prose; the tables between `<!-- findings: … -->` and `<!-- /findings -->` are \
            rewritten from the results. With --check nothing is written: exit 1 and the differing lines when \
            the page is not what the results say (make test runs this after its matrix).
            """)

    @Option(help: "The matrix's results folder (its report.json).")
    var results: String = ".build/matrix/latest"

    @Option(help: "The page.")
    var page: String = "Docs/Findings.md"

    @Flag(help: "Compare only; write nothing.")
    var check = false

    func run() throws {
        let root = packageRoot()
        let json = results + "/report.json"
        let report = try MatrixReport.load(directory: results)
        guard let text = try? String(contentsOfFile: page, encoding: .utf8) else { throw ValidationError("\(page): cannot read it") }
        let reports = try BugReport.loadAll(directory: root + "/Fixtures/reports")
        let written = try FindingsPage.render(page: text, report: report, reports: reports, pageName: page)
        let kernels = FindingsPage.kernels(report).map(\.kernel.label).joined(separator: ", ")
        if check {
            let differences = FindingsPage.differences(text, written)
            guard differences.isEmpty else {
                print("\(page) is not what \(json) measured (\(kernels)); `xfrmlab findings --results \(results)` writes it:")
                differences.forEach { print($0) }
                throw ExitCode(1)
            }
            print("\(page): every table is what \(json) measured (\(kernels))")
            return
        }
        try written.write(toFile: page, atomically: false, encoding: .utf8)
        print("wrote \(page) from \(json) (\(kernels))")
    }
}
