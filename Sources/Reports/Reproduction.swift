import Foundation
import Lab
import Matrix
import Topology

/// What a reproduction saw: whether the bug showed, and the evidence in words a kernel
/// developer can check (requests with the kernel's answers, counters, traces).
public struct Observation: Sendable, CustomStringConvertible {
    public var bugPresent: Bool
    public var evidence: [String]

    public init(bugPresent: Bool, evidence: [String]) {
        self.bugPresent = bugPresent
        self.evidence = evidence
    }

    public var description: String { evidence.joined(separator: "; ") }
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
        XfrmiPhydevOptional.reproduction,
        XfrmiChangelinkEEXIST.reproduction,
        XfrmiCrossNetnsDelete.reproduction,
        XfrmiIfIDZero.reproduction,
        XfrmiExternalMode.reproduction,
        VtiDuplicateEndpoints.reproduction,
        PolicyMarkMaskIdentity.reproduction,
        PolicyIfIDZero.reproduction,
        SAPrefixLengthUnspec.reproduction,
        MigrateDirection.reproduction,
        VtiMarkPreserved.reproduction,
        OutputMarkInbound.reproduction,
        XfrmiHostToHostLoop.reproduction,
        LibIPsecHostToHost.reproduction,
        ConnmarkInboundSA.reproduction,
        PolicyOptionalTunnelTemplate.reproduction,
        SADirection.reproduction,
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
    public var seconds: Double

    /// The verdict is what the report's history says this kernel should show.
    public var matches: Bool { verdict.kind == expected }

    public var description: String {
        var lines = [
            "report \(report.id): \(report.title)",
            "  kernel    \(kernel)",
            "  symptom   \(report.symptom)",
        ]
        lines += report.sources.map { "  source    \($0)" }
        if let fix = report.fix {
            lines.append("  fix       \(fix.commit.prefix(12)) (\"\(fix.subject)\")\(fix.release.map { ", first in \($0)" } ?? "")\(fix.backports.isEmpty ? "" : ", backported to " + fix.backports.map(\.description).joined(separator: ", "))")
        }
        lines.append("  observable \(report.observable)")
        lines.append("  verdict   \(verdict.kind.title) — \(verdict.reason)")
        lines.append("  expected  \(expected.title) — \(expectedWhy)")
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
        guard let reproduction = ReproductionCatalog.reproduction(report.id) else {
            throw ReportError(file: report.directory + "/report.yaml", line: 0, column: 0, field: "id",
                              message: "no reproduction registered for \"\(report.id)\" (Sources/Reports/Catalog)")
        }
        let topology = try Topology.load(path: report.topologyPath(repositoryRoot: repositoryRoot))
        // A bug can leave the kernel unable to tear the lab down (a leaked reference, a namespace
        // never released): once the steps have seen the bug, that failure is more of its evidence,
        // not a reason to lose the verdict. Without the bug, a failed teardown stays an error.
        var seen: Observation?
        var observation: Observation
        do {
            observation = try await topology.withLab { lab in
                let o = try await reproduction.steps(lab)
                seen = o
                return o
            }
        } catch {
            guard var o = seen, o.bugPresent else { throw error }
            o.evidence.append("teardown afterwards: \(error)")
            observation = o
        }
        let result = outcome(ReportVerdict(kind: observation.bugPresent ? .reproduces : .fixed, reason: observation.description))
        // For the matrix's cells (when it asked for them).
        VerdictRecord(report: report.id, verdict: result.verdict.kind.title, expected: expected.kind.title, evidence: observation.description).append()
        return result
    }
}
