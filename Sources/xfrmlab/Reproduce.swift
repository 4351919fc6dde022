import ArgumentParser
import Foundation
import Matrix
import Reports

struct Reproduce: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reproduce",
        abstract: "Reproduce a public bug report (Fixtures/reports/ID, or a folder anywhere) on this kernel, or in a VM with --kernel.",
        discussion: """
            Prints the report's symptom and sources, the evidence, the verdict (REPRODUCES, FIXED, NOT APPLICABLE \
            with the probed reason) and the verdict its fix history expects on this kernel. Exits 0 when they agree, \
            1 when they do not, 2 when the report cannot run here. With --kernel the report's test runs in a VM \
            through the kernel matrix (same as `xfrmlab matrix --kernel K --filter <its test>`).
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The report ID (see --list), or the path of a report folder anywhere (./my-report).")
    var id: String?

    @Flag(help: "List the reports with their fixes.")
    var list = false

    @Option(name: .customLong("kernel"), help: "Run in a VM on this kernel (6.1, 6.12, a release in /boot or a bzImage path; repeatable).")
    var kernels: [String] = []

    func validate() throws {
        if !list && id == nil { throw ValidationError("name a report ID, or --list") }
    }

    func run() async throws {
        let root = packageRoot()
        let reports = try BugReport.loadAll(directory: root + "/Fixtures/reports")
        if list {
            for r in reports {
                let fix = r.fixes.isEmpty ? r.kind.rawValue
                    : r.fixes.map { "\($0.commit.prefix(12)) \($0.release.map { "v\($0)" } ?? "release unknown")" }.joined(separator: ", ")
                print("\(r.id)\t\(fix)\t\(r.destructive ? "destructive\t" : "")\(r.title)")
            }
            return
        }
        // A folder anywhere (a path), or a report of the catalogue (an ID).
        let report: BugReport
        let outside = id.map { $0.contains("/") || $0 == "." || $0 == ".." } ?? false
        if let id, outside {
            let path = URL(fileURLWithPath: id, relativeTo: URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/")).standardized.path
            report = try BugReport.load(directory: path, repositoryRoot: root)
        } else if let id, let found = reports.first(where: { $0.id == id }) {
            report = found
        } else {
            throw ValidationError("unknown report \(id ?? ""); known: \(reports.map(\.id).joined(separator: ", ")) (or a report folder's path)")
        }
        if !kernels.isEmpty {
            // The report's own test, in the matrix machinery (VM per kernel, expectations, report).
            var arguments = kernels.flatMap { ["--kernel", $0] }
            // The report lands in a folder of its own, read back for the verdicts.
            let output = root + "/.build/matrix/reproduce-\(report.id)-\(getpid())-\(Int(Date().timeIntervalSince1970))"
            let test: String
            if outside {
                // The guest sees the repository, not necessarily the folder (its /tmp is its own):
                // a copy goes beside the results, and the guest's folder test runs it.
                let copy = output + "/report/" + report.id
                try FileManager.default.createDirectory(atPath: output + "/report", withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: report.directory, toPath: copy)
                setenv(GuestDriver.reportFolderKey, copy, 1)
                test = GuestDriver.reportFolderTest + "/"
                arguments += ["--filter", GuestDriver.reportFolderTest]
            } else {
                test = "BugReportTests/\(ReportScaffold.testName(report.id))("
                arguments += ["--filter", "BugReportTests/\(ReportScaffold.testName(report.id))\\("]
            }
            if global.verbose { arguments.append("--verbose") }
            arguments += ["--output", output]
            // The matrix command sets the logging up itself (once per process).
            let matrix = try MatrixCommand.parse(arguments)
            var failure: Error?
            do { try matrix.run() } catch { failure = error }
            if let results = try? MatrixReport.load(directory: output) {
                print(Self.verdicts(of: report, test: test, in: results))
            }
            if let failure { throw failure }
            return
        }
        global.bootstrap()
        try requireRoot()
        let outcome = try await ReportRunner.run(report, repositoryRoot: root)
        if global.json {
            let object: [String: Any] = [
                "id": report.id, "kernel": outcome.kernel.release, "version": outcome.kernel.version?.description ?? "",
                "verdict": outcome.verdict.kind.rawValue, "evidence": outcome.verdict.reason,
                "expected": outcome.expected.rawValue, "expectedWhy": outcome.expectedWhy, "matches": outcome.matches,
                "parts": outcome.parts.map { ["name": $0.part.name, "verdict": $0.part.state.rawValue, "evidence": $0.part.evidence.joined(separator: "; "),
                                              "expected": $0.expected.title, "expectedWhy": $0.expectedWhy, "matches": $0.matches] as [String: Any] },
            ]
            print(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys]), as: UTF8.self))
        } else {
            print(outcome)
        }
        if outcome.verdict.kind == .notApplicable { throw ExitCode(2) }
        if !outcome.matches { throw ExitCode(1) }
    }
}

extension Reproduce {
    /// Each kernel's verdict on the report, its evidence and what the history expected there.
    static func verdicts(of report: BugReport, test: String, in results: MatrixReport) -> String {
        var lines = ["", "\(report.id), per kernel:"]
        for k in results.kernels {
            let name = "  \(k.kernel.label) (\(k.version ?? k.release ?? "?"))"
            guard let cell = k.cells.first(where: { $0.key.contains(test) })?.value else {
                lines.append("\(name): did not run — \(k.statusDetail ?? k.status.rawValue)")
                continue
            }
            guard let verdict = cell.report else {
                lines.append("\(name): no verdict — the test \(cell.verdict.rawValue): \(cell.detail ?? "")")
                continue
            }
            let judged = verdict.expected.map { $0 == verdict.verdict ? "as expected" : "NOT AS EXPECTED (expected \($0))" } ?? ""
            lines.append("\(name): \(verdict.verdict)\(judged.isEmpty ? "" : ", " + judged)")
            lines.append("    evidence: \(verdict.evidence)")
        }
        return lines.joined(separator: "\n")
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Work with bug reports.",
        subcommands: [New.self])

    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "new",
            abstract: "Lay out a new report: Fixtures/reports/ID/{report.yaml,topology.yaml} and Sources/Reports/Catalog/<Id>.swift.")

        @Argument(help: "The report ID: lower-case words and digits joined by dashes (xfrmi-changelink-eexist).")
        var id: String

        @Option(name: .customLong("from-script"), help: "A reporter's shell script: its namespaces become hosts, its `ip -n X …` / `ip netns exec X …` lines steps on X (see Docs/Bug-reports.md).")
        var script: String?

        @Option(help: "Where the report's folder goes with --from-script (default: Fixtures/reports).")
        var directory: String?

        func run() throws {
            if let script {
                let parent = directory ?? packageRoot() + "/Fixtures/reports"
                let made = try ScriptImport.create(id: id, script: script, into: parent)
                for f in made.files { print("created \(f)") }
                if !made.unmapped.isEmpty {
                    print("not mapped (left out of the steps):")
                    for u in made.unmapped { print("  \(u)") }
                }
                if !made.missing.isEmpty {
                    print("still to write in report.yaml (placeholders now): \(made.missing.joined(separator: ", "))")
                }
                print("next: xfrmlab reproduce \(made.folder)   (add --kernel 6.1 for a VM)")
                return
            }
            if directory != nil { throw ValidationError("--directory goes with --from-script") }
            let created = try ReportScaffold.create(id: id, repositoryRoot: packageRoot())
            for f in created.files { print("created \(f)") }
            print("next:")
            for (i, s) in created.nextSteps.enumerated() { print("  \(i + 1). \(s)") }
        }
    }
}

/// The repository: the working directory if it has Package.swift, else above this binary.
func packageRoot() -> String {
    let cwd = FileManager.default.currentDirectoryPath
    if FileManager.default.fileExists(atPath: cwd + "/Package.swift") { return cwd }
    var url = URL(fileURLWithPath: selfPath())
    for _ in 0..<5 {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
    }
    return cwd
}
