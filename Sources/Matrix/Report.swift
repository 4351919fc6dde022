import Foundation

/// Tests × kernels: what passes where, and what differs between kernels.
public struct MatrixReport: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var id: String
        public var name: String
        public var suite: String
        public var suiteName: String
    }

    /// A test, a config option or a capability whose value is not the same on every kernel.
    public struct Difference: Codable, Sendable {
        public var kind: String  // "test", "capability", "config"
        public var name: String
        /// Kernel label → value (a verdict with its reason, an option's value).
        public var values: [String: String]
    }

    public var created: Date
    public var host: String
    public var accelerator: String
    public var acceleratorReason: String
    public var expectations: String
    public var testBinary: String
    public var kernels: [KernelResult]
    public var rows: [Row]
    public var differences: [Difference]
    /// Each mutant kernel's mutations and whether their detectors fired (the mutation score).
    public var mutants: [MutantResult]? = nil
    public var ok: Bool

    /// One report's detector on a kernel built without its fix.
    public struct MutantResult: Codable, Sendable {
        public var kernel: String
        public var report: String
        /// The report's verdict there (REPRODUCES when it fired), or the test's when it gave none.
        public var verdict: String
        public var fired: Bool
        public var evidence: String
    }

    public init(created: Date, host: String, accelerator: String, acceleratorReason: String, expectations: String,
                testBinary: String, kernels: [KernelResult]) {
        self.created = created
        self.host = host
        self.accelerator = accelerator
        self.acceleratorReason = acceleratorReason
        self.expectations = expectations
        self.testBinary = testBinary
        self.kernels = kernels
        self.rows = []
        self.differences = []
        self.ok = false
        complete()
    }

    /// Rows from every kernel's tests (a test one kernel lacks is `missing` there), the
    /// differences, and the overall verdict.
    mutating func complete() {
        var seen = Set<String>()
        rows = []
        for k in kernels {
            for (id, _) in k.cells.sorted(by: { $0.key < $1.key }) where !seen.contains(id) {
                seen.insert(id)
                rows.append(Row(id: id, name: id, suite: "", suiteName: ""))
            }
        }
        for i in kernels.indices where !kernels[i].cells.isEmpty {
            let leftOut = (kernels[i].except ?? []).compactMap { try? NSRegularExpression(pattern: $0) }
            for row in rows where kernels[i].cells[row.id] == nil {
                // A kernel asked only some tests, or asked to leave some out, lacks them by design,
                // not by accident.
                if let only = kernels[i].only {
                    kernels[i].cells[row.id] = Cell(verdict: .notSelected, detail: "this kernel ran only tests matching \(only.joined(separator: " or "))")
                } else if let rule = leftOut.first(where: { $0.firstMatch(in: row.id, range: NSRange(row.id.startIndex..., in: row.id)) != nil }) {
                    kernels[i].cells[row.id] = Cell(verdict: .notSelected, detail: "left out of this kernel's run (--except \(rule.pattern))")
                } else {
                    kernels[i].cells[row.id] = Cell(verdict: .missing, detail: "not in this kernel's run", expectation: nil, seconds: nil)
                }
            }
        }
        // After the filling-in above: every kernel that ran has a cell in every row.
        let ran = kernels.filter { !$0.cells.isEmpty }
        differences = []
        if ran.count > 1 {
            for row in rows {
                let asked = ran.map { ($0, $0.cells[row.id]!) }.filter { $0.1.verdict != .notSelected }
                guard asked.count > 1 else { continue }
                // A report's verdict that differs (REPRODUCES on one kernel, FIXED on another) is a
                // difference even where every test passed: it is what the matrix is for.
                if Set(asked.map { $0.1.verdict.behaviour }).count > 1 || Set(asked.compactMap { $0.1.report?.verdict }).count > 1 {
                    var values: [String: String] = [:]
                    for (k, c) in asked {
                        values[k.kernel.label] = c.shown + (c.report.map { ": \($0.evidence)" } ?? c.detail.map { ": \($0)" } ?? "")
                    }
                    differences.append(Difference(kind: "test", name: row.id, values: values))
                }
            }
        }
        let probed = kernels.filter { $0.capabilities != nil }
        if probed.count > 1 {
            var names: [String] = []
            for k in probed { for c in k.capabilities! where !names.contains(c.name) { names.append(c.name) } }
            for name in names {
                // The kernel's answer counts too: "28 counters" against "30 counters" is a difference.
                let answers = probed.map { k in k.capabilities!.first { $0.name == name }.map { $0.value + ($0.detail.map { " (\($0))" } ?? "") } ?? "—" }
                if Set(answers).count > 1 {
                    differences.append(Difference(kind: "capability", name: name,
                                                  values: Dictionary(uniqueKeysWithValues: zip(probed.map(\.kernel.label), answers))))
                }
            }
        }
        let counted = kernels.filter { $0.xfrmStatCounters != nil }
        if counted.count > 1, Set(counted.map { $0.xfrmStatCounters! }).count > 1 {
            let common = counted.map { Set($0.xfrmStatCounters!) }.reduce(Set(counted[0].xfrmStatCounters!)) { $0.intersection($1) }
            var values: [String: String] = [:]
            for k in counted {
                let extra = k.xfrmStatCounters!.filter { !common.contains($0) }
                values[k.kernel.label] = "\(k.xfrmStatCounters!.count)" + (extra.isEmpty ? "" : ", also " + extra.joined(separator: " "))
            }
            differences.append(Difference(kind: "counters", name: "/proc/net/xfrm_stat", values: values))
        }
        let configured = kernels.filter { !$0.config.isEmpty }
        if configured.count > 1 {
            for option in highlightedConfigOptions {
                // Built in or a module is the same to the suite: only present against absent differs.
                let present = configured.map { ($0.config[option] ?? "n") != "n" }
                if Set(present).count > 1 {
                    differences.append(Difference(kind: "config", name: option,
                                                  values: Dictionary(uniqueKeysWithValues: configured.map { ($0.kernel.label, $0.config[option] ?? "n") })))
                }
            }
        }
        // The mutation score: on a kernel built without a fix, that report's detector must fire;
        // one that stays silent fails its test (its history expects REPRODUCES there), and one
        // that never ran fails the matrix here.
        var scored: [MutantResult] = []
        // (A run limited by --filter, `xfrmlab reproduce ID --kernel 6.1-mutant`, scores only what it ran.)
        for k in kernels where !(k.kernel.mutations ?? []).isEmpty {
            for id in k.kernel.mutations! {
                let cell = k.cells.values.first { $0.report?.id == id }
                if cell == nil && k.filters != nil { continue }
                let verdict = cell?.report?.verdict ?? cell.map { $0.verdict.rawValue } ?? "not run"
                scored.append(MutantResult(kernel: k.kernel.label, report: id, verdict: verdict, fired: verdict == "REPRODUCES",
                                           evidence: cell?.report?.evidence ?? cell?.detail ?? "its test did not run on this kernel"))
            }
        }
        mutants = scored.isEmpty ? nil : scored
        ok = !kernels.isEmpty && kernels.allSatisfy { $0.problems == 0 } && unranMutants.isEmpty
    }

    /// Mutations whose report's test never ran on their mutant kernel.
    public var unranMutants: [MutantResult] {
        (mutants ?? []).filter { $0.verdict == "not run" || $0.verdict == Verdict.notSelected.rawValue || $0.verdict == Verdict.missing.rawValue }
    }

    /// "detectors that fired on their mutant: N of M", per mutant kernel.
    public var mutationScore: [(kernel: String, fired: Int, of: Int)] {
        var order: [String] = []
        for m in mutants ?? [] where !order.contains(m.kernel) { order.append(m.kernel) }
        return order.map { k in
            let here = (mutants ?? []).filter { $0.kernel == k }
            return (k, here.filter(\.fired).count, here.count)
        }
    }

    mutating func name(tests: [TestRecord]) {
        for i in rows.indices {
            if let t = tests.first(where: { $0.id == rows[i].id }) {
                rows[i].name = t.name
                rows[i].suite = t.suite
                rows[i].suiteName = t.suiteName
            }
        }
        // Suites together, in the binary's order of first appearance.
        let order = Dictionary(tests.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
        rows.sort { (order[$0.id] ?? Int.max, $0.id) < (order[$1.id] ?? Int.max, $1.id) }
    }

    // MARK: Text

    public func text(width: Int = 120) -> String {
        var out: [String] = []
        let labels = kernels.map(\.kernel.label)
        let hasReports = kernels.contains { $0.cells.values.contains { $0.report != nil } }
        let column = max(hasReports ? 17 : 8, (labels.map(\.count).max() ?? 0) + 2)
        let nameWidth = max(30, min(72, width - 4 - column * kernels.count))
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? String(s.prefix(n - 1)) + "…" : s + String(repeating: " ", count: n - s.count) }
        func cells(_ values: [String]) -> String { values.map { pad($0, column) }.joined() }
        /// One line, at most `limit` characters: the full text is in report.json.
        func line(_ s: String, _ limit: Int = 240) -> String {
            let flat = s.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ⏎ ")
            return flat.count <= limit ? flat : String(flat.prefix(limit - 1)) + "…"
        }

        let formatter = ISO8601DateFormatter()
        let vms = kernels.contains { $0.kernel.source == .image && $0.status != .unavailable }
        out.append("XfrmLab kernel matrix, \(formatter.string(from: created)) on \(host)" + (vms ? "; VMs under \(accelerator.uppercased()) (\(acceleratorReason))" : "; no VMs"))
        out.append("")
        out.append(pad("", nameWidth + 4) + cells(labels))
        out.append(pad("", nameWidth + 4) + cells(kernels.map { $0.version ?? $0.release ?? "?" }))
        if kernels.contains(where: { $0.status != .ok }) {
            out.append(pad("", nameWidth + 4) + cells(kernels.map { $0.status == .ok ? "" : $0.status.rawValue }))
        }
        var suite: String?
        for row in rows {
            if row.suite != suite {
                suite = row.suite
                out.append(row.suiteName.isEmpty ? row.suite : row.suiteName)
            }
            let values = kernels.map { $0.cells[row.id]?.shown ?? "—" }
            out.append("  " + pad(row.name, nameWidth) + "  " + cells(values))
        }
        out.append("")
        out.append("pass/flaky/xfail/skip: as expected (skip and xfail by a rule in \(expectations)); FAIL, XPASS, SKIP! (a skip no rule names), WARN (kernel warning during the test), HUNG, MISSING: failures")
        if hasReports {
            out.append("Bug reports: REPRODUCES (the bug shows), FIXED, N/A (not applicable: the probed reason); pass means it is the verdict the report's fix history expects on that kernel")
        }

        let tests = differences.filter { $0.kind == "test" }
        out.append("")
        out.append("Differs between kernels (\(tests.count) test\(tests.count == 1 ? "" : "s")):")
        if tests.isEmpty { out.append("  none") }
        for d in tests {
            out.append("  \(rows.first { $0.id == d.name }?.name ?? d.name)  [\(d.name)]")
            for label in labels { if let v = d.values[label] { out.append("    \(pad(label, column)) \(line(v))") } }
        }
        let capabilities = differences.filter { $0.kind == "capability" || $0.kind == "counters" }
        if !capabilities.isEmpty {
            out.append("")
            out.append("Capabilities that differ (xfrmlab probe, /proc/net/xfrm_stat):")
            for d in capabilities {
                out.append("  \(d.name)")
                for label in labels { if let v = d.values[label] { out.append("    \(pad(label, column)) \(line(v))") } }
            }
        }
        let config = differences.filter { $0.kind == "config" }
        if !config.isEmpty {
            out.append("")
            out.append("Config that differs:")
            out.append("  " + pad("", 34) + cells(labels))
            for d in config { out.append("  " + pad(d.name, 34) + cells(labels.map { d.values[$0] ?? "" })) }
        }

        out.append("")
        out.append("Kernels:")
        for k in kernels {
            let t = k.timings
            func s(_ v: Double?) -> String { v.map { String(format: "%.1f s", $0) } ?? "—" }
            out.append("  \(k.kernel.label): \(k.status == .ok ? "ran" : k.status.rawValue.uppercased())"
                       + (k.statusDetail.map { " — \($0)" } ?? ""))
            out.append("    \(k.procVersion ?? k.kernel.banner ?? k.release ?? "")")
            out.append("    \(k.kernel.source == .host ? "on the host, no VM" : "VM, \(k.accelerator.uppercased())"); boot to first test \(s(t.bootToFirstTest)), suite \(s(t.suite)), wall \(s(t.wall))")
            let counts = Verdict.allCases.compactMap { v -> String? in
                let n = k.count(v)
                return n == 0 ? nil : "\(n) \(v.rawValue)"
            }
            out.append("    " + (counts.isEmpty ? "no test results" : counts.joined(separator: ", ")))
            if let built = k.kernel.built {
                out.append("    built here from \(built)")
            }
            if let pinned = k.kernel.pinned {
                out.append("    pinned by the catalogue as \(pinned): \((k.kernel.packages ?? []).joined(separator: ", "))")
            }
            if let probeNote = k.probeNote { out.append("    probe: \(probeNote)") }
            for note in k.notes { out.append("    note: \(line(note, 400))") }
            for c in k.crashes { out.append("    CRASH: \(line(c.summary, 400))") }
            for w in k.warnings {
                let blame = w.test.map { "during \($0)" } ?? (w.candidates.isEmpty ? "outside any test" : "while \(w.candidates.count) tests ran: \(w.candidates.joined(separator: ", "))")
                out.append("    kernel warning \(blame):")
                for line in w.warning.lines { out.append("      \(line)") }
            }
            let problems = k.cells.filter { $0.value.verdict.isProblem || $0.value.verdict == .flaky }.sorted { $0.key < $1.key }
            for (id, c) in problems {
                out.append("    \(c.verdict.cell) \(id): \(line(c.detail ?? ""))")
            }
            if let tail = k.consoleTail, !tail.isEmpty {
                out.append("    last console lines (unreliable under TCG):")
                for line in tail { out.append("      \(line)") }
            }
            out.append("    results: \(k.directory)")
        }
        if let mutants, !mutants.isEmpty {
            out.append("")
            out.append("Mutant kernels (built without a fix each; its detector must say REPRODUCES):")
            for (kernel, fired, of) in mutationScore {
                out.append("  \(kernel): detectors that fired on their mutant: \(fired) of \(of)")
                for m in mutants where m.kernel == kernel {
                    out.append("    \(m.fired ? "fired " : "SILENT") \(pad(m.report, 34)) \(m.verdict)\(m.fired ? "" : " — " + line(m.evidence, 300))")
                }
            }
        }
        out.append("")
        let problems = kernels.map(\.problems).reduce(0, +)
        let flaky = kernels.map { $0.count(.flaky) }.reduce(0, +)
        out.append(ok ? "MATRIX OK: every result as expected on \(kernels.count) kernel\(kernels.count == 1 ? "" : "s")" + (flaky > 0 ? " (\(flaky) flaky)" : "")
                      : "MATRIX FAILED: \(problems) unexpected result\(problems == 1 ? "" : "s")" + (flaky > 0 ? " (and \(flaky) flaky)" : "")
                        + (unranMutants.isEmpty ? "" : "; \(unranMutants.count) mutant\(unranMutants.count == 1 ? "" : "s") whose detector never ran: " + unranMutants.map(\.report).joined(separator: ", ")))
        // CI logs often keep only the tail: name what failed right under the verdict.
        if !ok {
            let failures = kernels.flatMap { k in
                k.cells.filter { $0.value.verdict.isProblem }.sorted { $0.key < $1.key }
                    .map { "  \(k.kernel.label): \($0.value.verdict.cell) \($0.key): \(line($0.value.detail ?? "", 200))" }
            }
            out.append(contentsOf: failures.prefix(20))
            if failures.count > 20 { out.append("  … and \(failures.count - 20) more (above, per kernel)") }
        }
        // The plain closing line CI systems read: results over every kernel.
        let passed = kernels.map { $0.count(.pass) + $0.count(.flaky) }.reduce(0, +)
        let skipped = kernels.map { $0.count(.skip) + $0.count(.xfail) }.reduce(0, +)
        out.append("matrix: \(passed) passed, \(problems) failed, \(skipped) skipped")
        return out.joined(separator: "\n") + "\n"
    }

    // MARK: JSON and JUnit

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(self)
    }

    /// One `<testsuite>` per kernel; an expected skip or xfail is `<skipped>` with its reason,
    /// a problem is `<failure>`, a flaky pass is a pass with the first failure in `<system-out>`.
    public func junit() -> String {
        let x = markupEscaped
        var out = ["<?xml version=\"1.0\" encoding=\"UTF-8\"?>", "<testsuites name=\"xfrmlab matrix\">"]
        for k in kernels {
            let failures = k.cells.values.filter { $0.verdict.isProblem }.count + (k.status.isProblem ? 1 : 0) + k.warnings.filter { $0.test == nil }.count
            let skipped = k.cells.values.filter { $0.verdict == .skip || $0.verdict == .xfail }.count
            out.append("  <testsuite name=\"\(x(k.kernel.label))\" tests=\"\(k.cells.count + 1)\" failures=\"\(failures)\" skipped=\"\(skipped)\" time=\"\(String(format: "%.3f", k.timings.wall ?? 0))\">")
            out.append("    <properties><property name=\"release\" value=\"\(x(k.release ?? ""))\"/><property name=\"version\" value=\"\(x(k.version ?? ""))\"/><property name=\"accelerator\" value=\"\(x(k.accelerator))\"/></properties>")
            // The kernel itself: booted, no stray warnings.
            out.append("    <testcase classname=\"\(x(k.kernel.label))\" name=\"kernel\" time=\"\(String(format: "%.3f", k.timings.bootToFirstTest ?? 0))\">")
            var kernelProblems: [String] = []
            if k.status.isProblem { kernelProblems.append("\(k.status.rawValue): \(k.statusDetail ?? "")") }
            for w in k.warnings where w.test == nil { kernelProblems.append("kernel warning: \(w.warning.lines.joined(separator: "\n"))") }
            if !kernelProblems.isEmpty {
                out.append("      <failure message=\"\(x(kernelProblems[0].split(separator: "\n").first.map(String.init) ?? ""))\">\(x(kernelProblems.joined(separator: "\n\n")))</failure>")
            }
            out.append("    </testcase>")
            for row in rows {
                guard let c = k.cells[row.id] else { continue }
                let time = c.seconds.map { " time=\"\(String(format: "%.3f", $0))\"" } ?? ""
                out.append("    <testcase classname=\"\(x(k.kernel.label + "." + (row.suite.isEmpty ? "tests" : row.suite)))\" name=\"\(x(row.name))\"\(time)>")
                switch c.verdict {
                case .pass: break
                case .flaky: out.append("      <system-out>flaky: \(x(c.detail ?? ""))</system-out>")
                case .skip, .xfail: out.append("      <skipped message=\"\(x(c.verdict.rawValue + ": " + (c.detail ?? "")))\"/>")
                default:
                    out.append("      <failure type=\"\(c.verdict.rawValue)\" message=\"\(x(c.verdict.cell + ": " + (c.detail ?? "")))\">\(x(c.detail ?? ""))</failure>")
                }
                out.append("    </testcase>")
            }
            out.append("  </testsuite>")
        }
        out.append("</testsuites>")
        return out.joined(separator: "\n") + "\n"
    }
}

/// Text for XML and HTML: the five markup characters as entities, control characters other
/// than newline and tab as spaces (XML 1.0 cannot carry them).
func markupEscaped(_ s: String) -> String {
    var r = ""
    for u in s.unicodeScalars {
        switch u {
        case "&": r += "&amp;"
        case "<": r += "&lt;"
        case ">": r += "&gt;"
        case "\"": r += "&quot;"
        case "'": r += "&apos;"
        default: r += u.value < 0x20 && u != "\n" && u != "\t" ? " " : String(u)
        }
    }
    return r
}
