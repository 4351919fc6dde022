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
    public var passed: Bool { checks.allSatisfy(\.passed) }

    public var description: String {
        var s = "scenario \(scenario) on \(topology), kernel \(kernel)\n"
        for n in notes { s += "  \(n)\n" }
        for c in checks { s += "  \(c)\n" }
        s += "  \(checks.filter(\.passed).count) passed, \(checks.filter { !$0.passed }.count) failed\n"
        return s
    }
}
