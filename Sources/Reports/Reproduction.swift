import Foundation
import Lab
import Matrix
import Topology

/// What a reproduction saw: whether the bug showed, and the evidence in words a kernel
/// developer can check (requests with the kernel's answers, counters, traces). A report that
/// looks at several things (devices, directions, steps) gives each its own named part, so one
/// part's failure to show anything cannot hide behind another's REPRODUCES.
public struct Observation: Sendable, CustomStringConvertible {
    /// One thing the steps looked at, with its own verdict and evidence.
    public struct Part: Sendable, CustomStringConvertible {
        public enum State: String, Sendable, Codable {
            case reproduces = "REPRODUCES", fixed = "FIXED"
            /// The step did not get far enough to tell (an unrelated error, nothing observed).
            case inconclusive = "INCONCLUSIVE"
        }
        /// `xfrmi`, `vti6`, `transmit` …: a fix's `part` in report.yaml names the same.
        public var name: String
        public var state: State
        public var evidence: [String]

        /// `bugPresent` nil: inconclusive.
        public init(_ name: String, bugPresent: Bool?, evidence: [String]) {
            self.name = name
            self.state = bugPresent.map { $0 ? .reproduces : .fixed } ?? .inconclusive
            self.evidence = evidence
        }

        public var description: String { "\(name): \(state.rawValue) — " + evidence.joined(separator: "; ") }
    }

    /// Named parts; empty for a report that is one observation.
    public var parts: [Part]
    /// Evidence of the whole (for a one-part report, all of it).
    public var evidence: [String]
    var whole: Bool

    public init(bugPresent: Bool, evidence: [String]) {
        self.parts = []
        self.evidence = evidence
        self.whole = bugPresent
    }

    public init(parts: [Part], evidence: [String] = []) {
        self.parts = parts
        self.evidence = evidence
        self.whole = false
    }

    /// The bug showed: in the whole, or in any part.
    public var bugPresent: Bool { parts.isEmpty ? whole : parts.contains { $0.state == .reproduces } }

    /// REPRODUCES when any part reproduces; FIXED when every part is fixed; otherwise INCONCLUSIVE.
    public var state: Part.State {
        if parts.isEmpty { return whole ? .reproduces : .fixed }
        if parts.contains(where: { $0.state == .reproduces }) { return .reproduces }
        return parts.allSatisfy { $0.state == .fixed } ? .fixed : .inconclusive
    }

    public var description: String {
        (evidence + parts.map { "[\($0)]" }).joined(separator: "; ")
    }
}

/// A report's scenario in the harness's own vocabulary: given the lab built from the report's
/// topology, do the steps and say what was seen.
public struct Reproduction: Sendable {
    public var id: String
    public var steps: @Sendable (Lab) async throws -> Observation

    public init(_ id: String, steps: @escaping @Sendable (Lab) async throws -> Observation) {
        self.id = id
        self.steps = steps
    }
}

/// Every reproduction, registered by report ID (one file per report in Catalog/).
public enum ReproductionCatalog {
    public static let all: [Reproduction] = [
        XfrmiNetnsTeardown.reproduction,
        XfrmiCrossNetnsDelete.reproduction,
        PolicyIfIDZero.reproduction,
        SAPrefixLengthUnspec.reproduction,
        MigrateDirection.reproduction,
        VtiMarkPreserved.reproduction,
        OutputMarkInbound.reproduction,
        XfrmiHostToHostLoop.reproduction,
        LibIPsecHostToHost.reproduction,
        ConnmarkInboundSA.reproduction,
        SADirection.reproduction,
        NetlinkOpenerCredentials.reproduction,
    ]

    public static func reproduction(_ id: String) -> Reproduction? { all.first { $0.id == id } }
}

/// One report run on the running kernel.
public struct Outcome: Sendable, CustomStringConvertible {
    public var report: BugReport
    public var kernel: KernelSituation
    public var verdict: ReportVerdict
    public var expected: ReportVerdict.Kind
    public var expectedWhy: String
    /// Each named part: what it showed, what the history expects of it, and why.
    public var parts: [PartOutcome] = []
    public var seconds: Double

    public struct PartOutcome: Sendable, CustomStringConvertible {
        public var part: Observation.Part
        public var expected: ReportVerdict.Kind
        public var expectedWhy: String
        public var matches: Bool { part.state.rawValue == expected.title }
        public var description: String {
            "\(part.name): \(part.state.rawValue), expected \(expected.title)\(matches ? "" : " — NOT AS EXPECTED") (\(expectedWhy)); evidence: "
                + part.evidence.joined(separator: "; ")
        }
    }

    /// The verdict is what the report's history says this kernel should show, and so is every
    /// part's (an inconclusive part never is).
    public var matches: Bool { verdict.kind == expected && parts.allSatisfy(\.matches) }

    /// Parts whose verdict is not the one the history expects of them (a part that contradicts
    /// the others, a part that could not tell).
    public var partsNotAsExpected: [PartOutcome] { parts.filter { !$0.matches } }

    public var description: String {
        var lines = [
            "report \(report.id): \(report.title)",
            "  kernel    \(kernel)",
            "  symptom   \(report.symptom)",
        ]
        lines += report.sources.map { "  source    \($0)" }
        for fix in report.fixes {
            lines.append("  fix       \(fix.label), " + (fix.release.map { "first in \($0)" } ?? "mainline release unknown")
                         + (fix.backports.isEmpty ? "" : ", backported to " + fix.backports.map(\.description).joined(separator: ", ")))
        }
        lines.append("  observable \(report.observable)")
        lines.append("  verdict   \(verdict.kind.title) — \(verdict.reason)")
        lines.append("  expected  \(expected.title) — \(expectedWhy)")
        lines += parts.map { "  part      \($0)" }
        let result = verdict.kind == .notApplicable ? "NOT RUN HERE" : matches ? "AS EXPECTED" : "NOT AS EXPECTED"
        lines.append(String(format: "  %@ in %.2f s", result, seconds))
        return lines.joined(separator: "\n")
    }
}

public enum ReportRunner {
    /// Runs `report` here: not applicable when a need is missing or it is destructive on a
    /// kernel that must not break; otherwise builds its topology, does its steps, tears down.
    public static func run(_ report: BugReport, repositoryRoot: String, kernel: KernelSituation = .current) async throws -> Outcome {
        let started = Date()
        let kernel = undone(report, on: kernel, repositoryRoot: repositoryRoot)
        let expected = report.expectedVerdict(on: kernel)
        func outcome(_ v: ReportVerdict) -> Outcome {
            Outcome(report: report, kernel: kernel, verdict: v, expected: expected.kind, expectedWhy: expected.why,
                    seconds: Date().timeIntervalSince(started))
        }
        for need in report.needs {
            if let why = Requirement.missing(need) { return outcome(ReportVerdict(kind: .notApplicable, reason: why)) }
        }
        if report.destructive && !kernel.disposable {
            return outcome(ReportVerdict(kind: .notApplicable, reason: "destructive: runs only in a VM (\(kernel.disposableReason))"))
        }
        let steps: @Sendable (Lab) async throws -> Observation
        if let script = report.script {
            steps = { lab in try ScriptRunner.run(script, in: lab) }
        } else if let reproduction = ReproductionCatalog.reproduction(report.id) {
            steps = reproduction.steps
        } else {
            throw ReportError(file: report.directory + "/report.yaml", line: 0, column: 0, field: "steps",
                              message: "no steps: neither steps: in the file nor a reproduction registered for \"\(report.id)\" (Sources/Reports/Catalog)")
        }
        let topology = try Topology.load(path: report.topologyPath(repositoryRoot: repositoryRoot))
        // A bug can leave the kernel unable to tear the lab down (a leaked reference, a namespace
        // never released): once the steps have seen the bug, that failure is more of its evidence,
        // not a reason to lose the verdict. Without the bug, a failed teardown stays an error.
        var seen: Observation?
        var observation: Observation
        do {
            observation = try await topology.withLab { lab in
                let o = try await steps(lab)
                seen = o
                return o
            }
        } catch let e as NotApplicable {
            // The steps found the kernel unable to run the report, in its words.
            return outcome(ReportVerdict(kind: .notApplicable, reason: e.description))
        } catch {
            guard var o = seen, o.bugPresent else { throw error }
            o.evidence.append("teardown afterwards: \(error)")
            observation = o
        }
        var result = judge(report, kernel: kernel, observation: observation)
        result.seconds = Date().timeIntervalSince(started)
        // For the matrix's cells (when it asked for them).
        VerdictRecord(report: report.id, verdict: result.verdict.kind.title, expected: expected.kind.title,
                      evidence: result.verdict.reason + result.partsNotAsExpected.map { " | NOT AS EXPECTED \($0)" }.joined()).append()
        return result
    }

    /// A kernel built without some catalogue reports' fixes counts as mutated for a folder from
    /// outside the catalogue (imported from a script) that names one of those fix commits: the
    /// best a newcomer's folder can be told. Catalogue reports go by their own mutations only: a
    /// mutant patch undoes the smallest part of a commit that its report sees, not the whole
    /// commit (xfrmi-phydev-optional's mutant leaves xfrmi-netns-teardown's half of 22d6552f827e).
    public static func undone(_ report: BugReport, on kernel: KernelSituation, repositoryRoot: String) -> KernelSituation {
        guard !kernel.mutations.isEmpty, !kernel.mutations.contains(report.id), !report.fixes.isEmpty else { return kernel }
        let folder = repositoryRoot + "/Fixtures/reports"
        let parent = URL(fileURLWithPath: report.directory).deletingLastPathComponent().resolvingSymlinksInPath().path
        guard parent != URL(fileURLWithPath: folder).resolvingSymlinksInPath().path else { return kernel }
        let catalogue = (try? BugReport.loadAll(directory: folder)) ?? []
        let missing = Set(catalogue.filter { kernel.mutations.contains($0.id) }.flatMap(\.fixes).map { $0.commit.prefix(12) })
        guard report.fixes.contains(where: { missing.contains($0.commit.prefix(12)) }) else { return kernel }
        var k = kernel
        k.mutations.insert(report.id)
        return k
    }

    /// The verdict from what the steps observed, part by part, held against the history.
    public static func judge(_ report: BugReport, kernel: KernelSituation, observation: Observation) -> Outcome {
        let expected = report.expectedVerdict(on: kernel)
        let kind: ReportVerdict.Kind
        switch observation.state {
        case .reproduces: kind = .reproduces
        case .fixed: kind = .fixed
        case .inconclusive: kind = .inconclusive
        }
        let parts = observation.parts.map { part -> Outcome.PartOutcome in
            let e = report.expectedVerdict(on: kernel, part: part.name)
            return Outcome.PartOutcome(part: part, expected: e.kind, expectedWhy: e.why)
        }
        return Outcome(report: report, kernel: kernel, verdict: ReportVerdict(kind: kind, reason: observation.description),
                       expected: expected.kind, expectedWhy: expected.why, parts: parts, seconds: 0)
    }
}
