import Foundation
import Matrix

/// Docs/Findings.md's tables, written from a matrix's report.json so that they say what was
/// measured and nothing else. The page keeps its prose; each table stands between markers
///
///     <!-- findings: reports -->              every bug report's verdict per kernel
///     <!-- findings: suite LabTests.XTests --> every test of that suite, per kernel
///     <!-- /findings -->
///
/// and `xfrmlab findings` rewrites what is between them (`--check`: says whether the page
/// already is what the results say). The columns are the catalogue's Debian kernels of the
/// run: pinned, so the same lock gives the same page on any machine; the host (whatever kernel
/// the machine has) and the kernels built here (Docs/Mutant-kernels.md) are left out.
public enum FindingsPage {
    public struct Problem: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    static let open = "<!-- findings: "
    static let close = "<!-- /findings -->"

    /// The kernels a page shows: Debian's, oldest first.
    public static func kernels(_ report: MatrixReport) -> [KernelResult] {
        report.kernels.filter { $0.kernel.source == .image && $0.kernel.built == nil && $0.status == .ok }
            .sorted { (KernelVersion(parsing: $0.version ?? "") ?? KernelVersion([])) < (KernelVersion(parsing: $1.version ?? "") ?? KernelVersion([])) }
    }

    /// `page` with every marked table written from `report`; throws when a marker names a suite
    /// the results do not have, or when they have no catalogue kernel.
    public static func render(page: String, report: MatrixReport, reports: [BugReport], pageName: String) throws -> String {
        let kernels = kernels(report)
        guard !kernels.isEmpty else { throw Problem(description: "the results have no catalogue kernel that ran: nothing to write into \(pageName)") }
        var out: [Substring] = []
        var lines = page.split(separator: "\n", omittingEmptySubsequences: false)[...]
        var number = 0
        while let line = lines.popFirst() {
            number += 1
            out.append(line)
            guard line.hasPrefix(open), line.hasSuffix("-->") else { continue }
            let key = line.dropFirst(open.count).dropLast(3).trimmingCharacters(in: .whitespaces)
            // Skip the old table up to the closing marker.
            let start = number
            while let old = lines.first, old != close { lines.removeFirst(); number += 1 }
            guard lines.popFirst() != nil else { throw Problem(description: "\(pageName):\(start): `\(line)` has no `\(close)` after it") }
            number += 1
            let table: String
            if key == "reports" {
                table = reportsTable(report, kernels: kernels, reports: reports)
            } else if key.hasPrefix("suite ") {
                let suite = String(key.dropFirst("suite ".count))
                guard report.rows.contains(where: { $0.suite == suite }) else {
                    throw Problem(description: "\(pageName):\(start): the results have no suite \(suite)")
                }
                table = suiteTable(report, suite: suite, kernels: kernels)
            } else {
                throw Problem(description: "\(pageName):\(start): unknown table `\(key)` (reports, or suite MODULE.SUITE)")
            }
            out.append(Substring(table))
            out.append(Substring(close))
        }
        return out.joined(separator: "\n")
    }

    /// The lines that differ between the page and what the results say (empty: none).
    public static func differences(_ page: String, _ written: String) -> [String] {
        let a = page.split(separator: "\n", omittingEmptySubsequences: false)
        let b = written.split(separator: "\n", omittingEmptySubsequences: false)
        var out: [String] = []
        for i in 0..<max(a.count, b.count) where (i < a.count ? a[i] : nil) != (i < b.count ? b[i] : nil) {
            out.append("line \(i + 1):\n  page:    \(i < a.count ? String(a[i]) : "(none)")\n  results: \(i < b.count ? String(b[i]) : "(none)")")
            if out.count == 10 { out.append("…"); break }
        }
        return out
    }

    static func header(_ kernels: [KernelResult]) -> String {
        kernels.map { k in
            let version = k.version ?? k.release ?? "?"
            return k.kernel.label == version ? version : "\(k.kernel.label) (\(version))"
        }.joined(separator: " | ")
    }

    static func reportsTable(_ report: MatrixReport, kernels: [KernelResult], reports: [BugReport]) -> String {
        var rows = ["| report | source / fix | \(header(kernels)) |", "|---|---|" + String(repeating: "---|", count: kernels.count)]
        // A report's cell: the one that names it, or its test's (results written before cells
        // named their report).
        func cell(_ r: BugReport, _ k: KernelResult) -> ReportCell? {
            k.cells.values.first { $0.report?.id == r.id }?.report
                ?? k.cells.first { $0.key.hasSuffix("BugReportTests/\(ReportScaffold.testName(r.id))()") }?.value.report
        }
        for r in reports.sorted(by: { $0.id < $1.id }) where kernels.contains(where: { cell(r, $0) != nil }) {
            var name = r.id
            if r.kind == .behaviour { name += " (behaviour)" }
            if r.destructive { name += " (destructive)" }
            let cells = kernels.map { k -> String in
                guard let shown = cell(r, k)?.short else { return "—" }
                // A bug that reproduces stands out; a behaviour reproduces everywhere by nature.
                return shown == "REPRODUCES" && r.kind == .bug ? "**REPRODUCES**" : shown
            }
            rows.append("| \(name) | \(escape(source(r))) | " + cells.joined(separator: " | ") + " |")
        }
        return rows.joined(separator: "\n")
    }

    /// The fix (commit, first release, stable backports; each commit of a fix in several), or
    /// the report's first source for a behaviour.
    static func source(_ r: BugReport) -> String {
        guard !r.fixes.isEmpty else { return r.sources.first ?? "" }
        return r.fixes.map { fix in
            var s = (fix.part.map { "\($0): " } ?? "") + String(fix.commit.prefix(12))
            if let release = fix.release { s += ", \(release)" } else { s += ", mainline release unknown" }
            if !fix.backports.isEmpty { s += " (" + fix.backports.map(\.description).joined(separator: ", ") + ")" }
            return s
        }.joined(separator: "; ")
    }

    static func suiteTable(_ report: MatrixReport, suite: String, kernels: [KernelResult]) -> String {
        var rows = ["| test | \(header(kernels)) |", "|---|" + String(repeating: "---|", count: kernels.count)]
        for row in report.rows where row.suite == suite {
            let cells = kernels.map { k -> String in
                guard let cell = k.cells[row.id] else { return "—" }
                switch cell.verdict {
                case .pass, .flaky, .xpass: return "holds"
                case .skip, .unexpectedSkip: return "skipped: " + escape(cell.detail.map { String($0.prefix(80)) } ?? "no reason")
                case .notSelected, .missing: return "—"
                case .xfail, .fail, .warning, .didNotFinish: return "**fails**"
                }
            }
            rows.append("| \(escape(row.name)) | " + cells.joined(separator: " | ") + " |")
        }
        return rows.joined(separator: "\n")
    }

    static func escape(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ") }
}
