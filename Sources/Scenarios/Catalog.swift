import Foundation
import Lab
import Namespaces
import Topology

/// A scenario: a question about marks and routing asked of the running kernel, with the
/// topology it needs and the checks that answer it.
public struct ScenarioDefinition: Sendable {
    public var name: String
    /// The question, in a sentence.
    public var summary: String
    /// The topology file (a name in Topologies/ or a path).
    public var topology: String
    /// What the kernel must have: returns why the scenario cannot run here (the capability
    /// and the kernel's answer), or nil.
    public var unmetRequirement: @Sendable () -> String?
    /// The checks, run on the live lab.
    public var checks: @Sendable (Lab) throws -> [Check]

    public init(name: String, summary: String, topology: String, unmetRequirement: @escaping @Sendable () -> String? = { nil },
                checks: @escaping @Sendable (Lab) throws -> [Check]) {
        self.name = name
        self.summary = summary
        self.topology = topology
        self.unmetRequirement = unmetRequirement
        self.checks = checks
    }

    /// Brings the topology up, runs the checks, tears down; the report says what was seen.
    public func run(topologyPath: String) throws -> ScenarioReport {
        let topology = try Topology.load(path: topologyPath)
        var report = ScenarioReport(scenario: name, topology: topology.name, kernel: kernelRelease(), checks: [], notes: [summary])
        if let reason = unmetRequirement() {
            report.skipped = reason
            return report
        }
        let started = Date()
        let lab = try Lab.up(topology)
        report.notes.append(String(format: "up in %.2f ms (run %@)", Date().timeIntervalSince(started) * 1000, lab.run.id))
        do {
            report.checks += try checks(lab)
        } catch {
            report.checks.append(Check("scenario ran", passed: false, detail: "\(error)"))
        }
        let release = try lab.down()
        report.checks.append(Check("teardown released every namespace", passed: release?.complete ?? false,
                                   detail: release?.description ?? "not verified"))
        if !lab.kernelWarnings.isEmpty {
            report.checks.append(Check("the kernel logged no warning", passed: false, detail: lab.kernelWarnings.joined(separator: " | ")))
        }
        return report
    }
}

/// Every scenario `xfrmlab run` knows.
public enum ScenarioCatalog {
    public static var all: [ScenarioDefinition] {
        [Connectivity.definition,
         OutputMark.definition,
         MarkInheritance.vti,
         MarkInheritance.xfrmi,
         XfrmiRoadWarrior.definition,
         DaemonFwmark.definition,
         OverlappingSubnets.definition,
         SharedMark.definition]
    }

    public static func named(_ name: String) -> ScenarioDefinition? { all.first { $0.name == name } }
}
