/// One observed fact and whether it is what was expected.
public struct Check: Sendable, CustomStringConvertible {
    public var name: String
    public var passed: Bool
    /// What was seen (and, on failure, what was expected).
    public var detail: String

    public init(_ name: String, passed: Bool, detail: String) {
        self.name = name
        self.passed = passed
        self.detail = detail
    }

    public var description: String { "\(passed ? "PASS" : "FAIL")  \(name): \(detail)" }
}

/// A scenario's outcome.
public struct ScenarioReport: Sendable, CustomStringConvertible {
    public var scenario: String
    public var topology: String
    public var kernel: String
    public var checks: [Check]
    public var notes: [String]
    /// Why the scenario could not run on this kernel (the capability probed and its answer).
    public var skipped: String?

    public init(scenario: String, topology: String, kernel: String, checks: [Check], notes: [String], skipped: String? = nil) {
        self.scenario = scenario
        self.topology = topology
        self.kernel = kernel
        self.checks = checks
        self.notes = notes
        self.skipped = skipped
    }

    /// Passed: ran and every check held. A skipped scenario has not passed.
    public var passed: Bool { skipped == nil && checks.allSatisfy(\.passed) }

    public var description: String {
        var s = "scenario \(scenario) on \(topology), kernel \(kernel)\n"
        for n in notes { s += "  \(n)\n" }
        if let skipped { return s + "  SKIPPED: \(skipped)\n" }
        for c in checks { s += "  \(c)\n" }
        s += "  \(checks.filter(\.passed).count) passed, \(checks.filter { !$0.passed }.count) failed\n"
        return s
    }
}
