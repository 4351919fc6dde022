import Foundation
import Glibc
import Kmsg

/// A test's verdict on one kernel, after the retry and the expectations.
public enum Verdict: String, Codable, Sendable, CaseIterable {
    case pass
    /// Failed, then passed on its one retry: reported, never hidden, not a failure of the run.
    case flaky
    /// Failed where a rule says it fails (a known bug before its fix).
    case xfail
    /// Skipped for a reason a rule names for this kernel.
    case skip
    case fail
    /// Passed where a rule says it fails: the rule is stale or the kernel is not what we think.
    case xpass
    case unexpectedSkip = "unexpected-skip"
    /// The kernel logged a warning (WARN, BUG, refcount, leaked device …) while this test ran.
    case warning
    /// Started and never ended: the test binary crashed, hung or was killed during it.
    case didNotFinish = "did-not-finish"
    /// Never started (the run ended early), or absent from this kernel's run.
    case missing
    /// Not asked of this kernel: its run was limited to some tests (`--only KERNEL=REGEX`).
    case notSelected = "not-selected"

    public var isProblem: Bool {
        switch self {
        case .pass, .flaky, .xfail, .skip, .notSelected: return false
        default: return true
        }
    }

    /// The word in the matrix table; capitals are problems.
    public var cell: String {
        switch self {
        case .pass: return "pass"
        case .flaky: return "flaky"
        case .xfail: return "xfail"
        case .skip: return "skip"
        case .fail: return "FAIL"
        case .xpass: return "XPASS"
        case .unexpectedSkip: return "SKIP!"
        case .warning: return "WARN"
        case .didNotFinish: return "HUNG"
        case .missing: return "MISSING"
        case .notSelected: return "-"
        }
    }

    /// What "differs between kernels" compares: whether the test ran, was skipped, or failed.
    var behaviour: String {
        switch self {
        case .pass, .flaky, .xpass: return "pass"
        case .skip, .unexpectedSkip: return "skip"
        case .xfail, .fail, .warning, .didNotFinish: return "fail"
        case .missing: return "missing"
        case .notSelected: return "not-selected"
        }
    }
}

public struct Cell: Codable, Sendable {
    public var verdict: Verdict
    /// The skip reason, the issues, or the warning's first line.
    public var detail: String? = nil
    /// The expectation that applied (`kernel host: skip … reason …`).
    public var expectation: String? = nil
    public var seconds: Double? = nil
    /// A bug report's own verdict on this kernel (REPRODUCES, FIXED, NOT APPLICABLE), beside
    /// the test's pass or fail (which says whether that verdict is the one its history expects).
    public var report: ReportCell? = nil

    /// The table's word: the test's verdict, and the report's where there is one.
    public var shown: String { verdict.cell + (report.map { " " + $0.short } ?? "") }
}

/// What a bug report's test said on one kernel.
public struct ReportCell: Codable, Sendable, Equatable {
    /// The report's ID (absent in results written before it was recorded).
    public var id: String? = nil
    /// REPRODUCES, FIXED or NOT APPLICABLE.
    public var verdict: String
    /// What its fix history expects here (absent when it did not run).
    public var expected: String?
    /// The evidence, or why it did not apply.
    public var evidence: String

    public var short: String { verdict == "NOT APPLICABLE" ? "N/A" : verdict }
}

/// One report's verdict as the test that reproduced it writes it: a JSON line appended to the file
/// `XFRMLAB_VERDICTS` names (the matrix sets it beside each kernel's results).
public struct VerdictRecord: Codable, Sendable {
    public var report: String
    public var verdict: String
    public var expected: String
    public var evidence: String

    public init(report: String, verdict: String, expected: String, evidence: String) {
        self.report = report
        self.verdict = verdict
        self.expected = expected
        self.evidence = evidence
    }

    public static let environmentKey = "XFRMLAB_VERDICTS"

    /// Appends to the file the environment names; nothing without one.
    public func append() {
        guard let path = ProcessInfo.processInfo.environment[VerdictRecord.environmentKey],
              var line = try? JSONEncoder().encode(self) else { return }
        line.append(0x0A)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Every record in a file, the last one per report winning (a retry's).
    public static func load(path: String) -> [String: VerdictRecord] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        var out: [String: VerdictRecord] = [:]
        for line in text.split(separator: "\n") {
            if let r = try? JSONDecoder().decode(VerdictRecord.self, from: Data(line.utf8)) { out[r.report] = r }
        }
        return out
    }

    /// The report a test is about: bug-report tests are named `REPORT-ID: …`.
    public static func reportID(ofTest test: TestRecord) -> String? {
        guard test.id.contains("BugReportTests/"), let colon = test.name.firstIndex(of: ":") else { return nil }
        let id = String(test.name[..<colon])
        return id.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" } ? id : nil
    }
}

/// How the kernel's run as a whole went.
public enum KernelStatus: String, Codable, Sendable {
    case ok
    /// Could not be run at all (no image, no 9p/virtiofs to share the root …).
    case unavailable
    /// The guest never started the suite: a hang or a panic before user space.
    case bootTimeout = "boot-timeout"
    /// The guest went away before the suite finished (a panic; qemu exited).
    case guestDied = "guest-died"
    /// The suite did not finish in time; the VM was stopped.
    case suiteTimeout = "suite-timeout"
    case error

    public var isProblem: Bool { self != .ok }
}

/// A kernel warning and the test it is blamed on.
public struct AttributedWarning: Codable, Sendable {
    public var warning: KernelWarning
    /// The one test that ran when it was logged; nil when none or several did.
    public var test: String?
    /// Tests that ran at that instant (several when the suite ran in parallel).
    public var candidates: [String]
}

/// One row of the capability table (`xfrmlab probe --json`, whatever shape it has).
public struct Capability: Codable, Sendable, Equatable {
    public var name: String
    public var value: String
    public var detail: String? = nil
}

public struct Timings: Codable, Sendable {
    /// From launching the VM (or the driver, on the host) to the first test starting.
    public var bootToFirstTest: Double?
    /// From the first test starting to the last ending (the retry included).
    public var suite: Double?
    /// Everything: launch to the VM gone.
    public var wall: Double?
}

public struct KernelResult: Codable, Sendable {
    public var kernel: Kernel
    public var status: KernelStatus
    public var statusDetail: String?
    public var accelerator: String
    public var release: String?
    /// The upstream version (Debian's 6.1.0-56 is 6.1.192).
    public var version: String?
    public var procVersion: String?
    public var configSource: String?
    public var config: [String: String]
    public var capabilities: [Capability]?
    public var probeNote: String?
    /// The counters of /proc/net/xfrm_stat (as seen by the suite).
    public var xfrmStatCounters: [String]? = nil
    public var timings: Timings
    public var cells: [String: Cell]
    /// The test filters this kernel's run was limited to (`--only`); nil: the whole suite.
    public var only: [String]? = nil
    /// The run's own `--filter`s, when it had any: a mutant's detector left out by them did not
    /// fail to run.
    public var filters: [String]? = nil
    /// The tests left out of this kernel's run (`--except`); nil: none.
    public var except: [String]? = nil
    public var warnings: [AttributedWarning]
    /// Oopses, BUGs and panics among the warnings, with their fingerprints and the rules that know them.
    @EmptyWhenAbsent public var crashes: [KernelCrash] = []
    /// Expectation notes of the rules that applied, and anything else worth a line.
    public var notes: [String]
    /// Directory with the raw results.
    public var directory: String
    /// The last console lines when the guest died or hung (the console is unreliable: a hint only).
    public var consoleTail: [String]?

    /// Failures of this kernel's run. A crash a rule names is not one (nor is its warning, nor
    /// the guest's death it caused); one no rule names is.
    public var problems: Int {
        // (The judge keeps a known crash's warning out of `warnings`.)
        let diedOfKnownCrash = status == .guestDied && !crashes.isEmpty && crashes.allSatisfy { $0.known != nil }
        return cells.values.filter { $0.verdict.isProblem }.count + warnings.filter { $0.test == nil }.count
            + (status.isProblem && !diedOfKnownCrash ? 1 : 0) + crashes.filter { $0.known == nil }.count
    }

    public var facts: Expectations.KernelFacts {
        Expectations.KernelFacts(label: kernel.label, isHost: kernel.source == .host, release: release ?? kernel.release ?? "",
                                 version: version.flatMap { KernelVersion(parsing: $0) })
    }

    public func count(_ verdict: Verdict) -> Int { cells.values.filter { $0.verdict == verdict }.count }
}

/// Turns what a run left behind into verdicts.
public struct Judge {
    public var expectations: Expectations

    public init(expectations: Expectations) { self.expectations = expectations }

    public func judge(_ result: inout KernelResult, first: SuiteRun?, retry: SuiteRun?, log: [KernelLogRecord], kernelLogOffset: Double?,
                      reports: [String: VerdictRecord] = [:]) {
        let facts = result.facts
        let rules = expectations.rules(for: facts)
        result.notes += rules.compactMap { rule in rule.note.map { "\(rule.kernel): \($0)" } }
        guard let first else { return }

        // Kernel warnings, each blamed on the one test that ran when it was logged.
        let ignored = expectations.ignoredKernelLog(on: facts)
        let runs = [first] + (retry.map { [$0] } ?? [])
        for warning in KernelLog.warnings(in: log, ignoring: ignored) {
            var candidates: [String] = []
            if let offset = kernelLogOffset {
                let t = warning.at + offset
                for run in runs {
                    for test in run.tests {
                        guard let s = test.started else { continue }
                        // A test's teardown can log just after its end event: allow half a second.
                        if s <= t && t <= (test.ended ?? .infinity) + 0.5 && !candidates.contains(test.id) { candidates.append(test.id) }
                    }
                }
            }
            let attributed = AttributedWarning(warning: warning, test: candidates.count == 1 ? candidates[0] : nil, candidates: candidates)
            if warning.isCrash {
                var crash = KernelCrash(attributed)
                if let (rule, known) = expectations.knownCrash(crash, on: facts) {
                    crash.known = "kernel \(rule.kernel): \(known.stack.joined(separator: " ← ")): \(known.why)"
                    result.crashes.append(crash)
                    continue  // named by a rule: its warning is no test's failure
                }
                result.crashes.append(crash)
            }
            result.warnings.append(attributed)
        }

        for test in first.tests {
            var record = test
            var flakyDetail: String?
            if (test.outcome == .failed || test.outcome == .didNotFinish), let again = retry?[test.id] {
                switch again.outcome {
                case .passed:
                    flakyDetail = "failed, then passed on retry: " + (test.issues.isEmpty ? "did not finish" : test.issues.joined(separator: "; "))
                    record = again
                case .failed, .skipped:
                    record = again
                    record.issues = test.issues + again.issues.map { "retry: " + $0 }
                    if test.outcome == .didNotFinish { record.issues.insert("did not finish the first time", at: 0) }
                case .didNotFinish, .notRun:
                    // The retry was cut short (the deadline): the first verdict stands.
                    record.issues.append(again.outcome == .notRun ? "retry: not reached before the deadline" : "retry: did not finish")
                }
            }
            var cell = Cell(verdict: .pass, detail: nil, expectation: nil, seconds: record.seconds)
            let expectedFailure = expectations.expectedFailure(test: test, on: facts)
            switch record.outcome {
            case .passed:
                if let flakyDetail {
                    cell.verdict = .flaky
                    cell.detail = flakyDetail
                } else if let (rule, fail) = expectedFailure {
                    cell.verdict = .xpass
                    cell.detail = "passes, but expected to fail here: \(fail.why)"
                    cell.expectation = "kernel \(rule.kernel): fail \(fail.test)"
                }
                if record.knownIssues > 0 { cell.detail = (cell.detail.map { $0 + "; " } ?? "") + "\(record.knownIssues) known issue(s)" }
            case .failed:
                cell.detail = record.issues.joined(separator: "; ")
                if let (rule, fail) = expectedFailure {
                    cell.verdict = .xfail
                    cell.detail = fail.why + " — " + (cell.detail ?? "")
                    cell.expectation = "kernel \(rule.kernel): fail \(fail.test)"
                } else {
                    cell.verdict = .fail
                }
            case .skipped:
                let reason = record.reason ?? ""
                cell.detail = reason
                if let (rule, skip) = expectations.expectedSkip(test: test, reason: reason, on: facts) {
                    cell.verdict = .skip
                    cell.expectation = "kernel \(rule.kernel): skip \(skip.test) for \(skip.reason)"
                } else {
                    cell.verdict = .unexpectedSkip
                }
            case .didNotFinish:
                cell.verdict = .didNotFinish
                cell.detail = (["never ended: the test binary crashed, hung or was stopped during it"] + record.issues).joined(separator: "; ")
            case .notRun:
                cell.verdict = .missing
                cell.detail = "never started: the run ended before it"
            }
            // A report folder's test (`xfrmlab reproduce PATH --kernel`) runs one report, whatever its ID.
            let folderReport = test.id.contains(GuestDriver.reportFolderTest + "/") && reports.count == 1 ? reports.keys.first : nil
            if let id = VerdictRecord.reportID(ofTest: test) ?? folderReport {
                if let r = reports[id] {
                    cell.report = ReportCell(id: id, verdict: r.verdict, expected: r.expected, evidence: r.evidence)
                } else if record.outcome == .skipped {
                    cell.report = ReportCell(id: id, verdict: "NOT APPLICABLE", expected: nil, evidence: record.reason ?? "skipped")
                }
            }
            if let blamed = result.warnings.first(where: { $0.test == test.id }) {
                cell.verdict = .warning
                cell.detail = "kernel: " + blamed.warning.headline + (cell.detail.map { " (test: \($0))" } ?? "")
            }
            result.cells[test.id] = cell
        }
        for issue in first.strayIssues { result.notes.append("issue outside any test: \(issue)") }
    }
}

public enum ProbeTable {
    static let nameKeys = ["name", "capability", "id", "probe", "feature", "key"]
    static let valueKeys = ["available", "supported", "ok", "present", "works", "enabled", "status", "result", "value", "state"]
    static let detailKeys = ["reason", "answer", "kernelAnswer", "kernel_answer", "detail", "details", "message", "error", "why", "note"]

    /// Reads `xfrmlab probe --json` without knowing its exact shape: a list of objects, or an
    /// object of objects or scalars, possibly under `entries` (xfrmlab's own), `capabilities`, `probes`, `results`.
    public static func parse(_ text: String) -> [Capability]? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(text.utf8)) else { return nil }
        return rows(json)
    }

    static func rows(_ json: Any) -> [Capability]? {
        if let list = json as? [Any] {
            return list.enumerated().compactMap { i, item -> Capability? in
                guard let object = item as? [String: Any] else { return Capability(name: "#\(i)", value: scalar(item), detail: nil) }
                let name = nameKeys.lazy.compactMap { object[$0].map(scalar) }.first ?? "#\(i)"
                return row(name: name, object)
            }
        }
        guard let object = json as? [String: Any] else { return nil }
        for key in ["entries", "capabilities", "probes", "results", "table"] {
            if let inner = object[key], inner is [Any] || inner is [String: Any] { return rows(inner) }
        }
        return object.keys.sorted().map { key in
            if let inner = object[key] as? [String: Any] { return row(name: key, inner) }
            return Capability(name: key, value: scalar(object[key]!), detail: nil)
        }
    }

    static func row(name: String, _ object: [String: Any]) -> Capability {
        let value = valueKeys.lazy.compactMap { object[$0].map(scalar) }.first ?? "?"
        let detail = detailKeys.lazy.compactMap { object[$0].map(scalar) }.first
        return Capability(name: name, value: value, detail: detail?.isEmpty == true ? nil : detail)
    }

    static func scalar(_ value: Any) -> String {
        // JSONSerialization gives every number as NSNumber, and `as? Bool` accepts 0 and 1:
        // only the boolean subclass's name tells true from 1 (swift-corelibs-foundation).
        if let n = value as? NSNumber {
            if String(describing: type(of: value)).contains("Boolean") { return n.boolValue ? "yes" : "no" }
            return n.stringValue
        }
        if let s = value as? String { return s }
        if value is NSNull { return "null" }
        if let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys]) { return String(decoding: data, as: UTF8.self) }
        return "\(value)"
    }
}

/// A list that decodes as empty when its key is missing, so that a report.json written before the
/// list existed still reads (`xfrmlab matrix --html` over an old run).
@propertyWrapper
public struct EmptyWhenAbsent<Element: Codable & Sendable>: Codable, Sendable {
    public var wrappedValue: [Element]
    public init(wrappedValue: [Element]) { self.wrappedValue = wrappedValue }
    public init(from decoder: Decoder) throws { wrappedValue = try decoder.singleValueContainer().decode([Element].self) }
    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(wrappedValue)
    }
}

extension KeyedDecodingContainer {
    public func decode<E>(_ type: EmptyWhenAbsent<E>.Type, forKey key: Key) throws -> EmptyWhenAbsent<E> {
        EmptyWhenAbsent(wrappedValue: try decodeIfPresent([E].self, forKey: key) ?? [])
    }
}
