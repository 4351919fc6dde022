import Foundation
import Lab
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology
import Xfrm

extension XfrmiRoadWarrior.Case: CustomTestStringConvertible {
    public var testDescription: String { description }
}

/// Scenario 3 (`xfrmlab run xfrmi-road-warrior`): a road warrior's three rule designs for an
/// xfrm interface with /32-to-/32 and 0/0 policies. Each case's verdict (works / loops / leaks
/// clear text) is computed from east's wire (AF_PACKET), xfrm0's counters and the NFLOG trace.
/// Every case has a lab of its own, so the cases run side by side: one after another they were
/// the last chain of every guest (23 labs, about 200 s on 5.10 and 7.2 with the CPU half idle).
@Suite("Scenario xfrmi-road-warrior: which rule design routes cleartext into xfrm0 and keeps ESP out", .tags(.privileged, .vm),
       .needsNamespaces)
struct XfrmiRoadWarriorScenarioTests {
    static func observe(_ c: XfrmiRoadWarrior.Case, port: UInt16) async throws -> XfrmiRoadWarrior.Outcome {
        try await Topology.load(path: topologyFile("xfrmi-road-warrior")).withLab { lab in
            let o = try XfrmiRoadWarrior.observe(lab, c, port: port)
            print("xfrmi-road-warrior \(o)\n  rules: \(o.rules.joined(separator: "; "))")
            return o
        }
    }

    @Test("with the SAs' output mark set to the design's mark, every design works: cleartext into xfrm0, ESP out of eth1, answered",
          .requires(.esp), .requires(.xfrmInterface), .requires(.outputMarkMask), arguments: XfrmiRoadWarrior.cases())
    func designWithOutputMark(_ c: XfrmiRoadWarrior.Case) async throws {
        let o = try await Self.observe(c, port: 7701)
        #expect(o.verdict == .works, "\(o)\n\(o.evaluation.report)")
        #expect(o.evaluation.passed, "\(o.evaluation.report)")
    }

    @Test("broken: `not fwmark 0x42` without the SA's output mark routes the ESP back into xfrm0; the loop is caught and shown",
          .requires(.esp), .requires(.xfrmInterface), arguments: ScenarioFamily.allCases)
    func loopWithoutOutputMark(_ family: ScenarioFamily) async throws {
        let o = try await Self.observe(.init(design: .notFwmark, shape: .hostToHost, family: family, outputMark: false), port: 7702)
        #expect(o.verdict == .loops, "\(o)")
        #expect(!o.evaluation.passed)
        #expect(o.evaluation.report.contains("missing: west postrouting: esp spi"), "\(o.evaluation.report)")
        #expect(o.evaluation.report.contains("actual trace:"))
        #expect(o.evaluation.report.contains("out xfrm0"), "\(o.evaluation.report)")
    }

    /// The designs relying on the rule alone: the verdict is the kernel's answer, printed; what
    /// is asserted is that the verdict and the path expectation agree.
    @Test("without the output mark, each design's verdict (xfrm0 free or tied to eth1) agrees with its trace",
          .requires(.esp), .requires(.xfrmInterface), arguments: XfrmiRoadWarrior.unmarkedCases())
    func designWithoutOutputMark(_ c: XfrmiRoadWarrior.Case) async throws {
        let o = try await Self.observe(c, port: 7703)
        #expect(o.verdict != .fails, "\(o)\n\(o.evaluation.report)")
        #expect((o.verdict == .works) == o.evaluation.passed, "\(o)\n\(o.evaluation.report)")
        // Measured on Debian's 6.1 and 6.12: the rule alone never keeps the ESP out of xfrm0,
        // tied to eth1 or not; the kernel counts a collision and drops it.
        #expect(o.verdict == .loops, "\(o)")
    }

    @Test("cleartext that carries a design's exempt mark (0x42, or 1) bypasses xfrm0 and leaves in clear, in every design",
          .requires(.esp), .requires(.xfrmInterface), .requires(.outputMarkMask), arguments: XfrmiRoadWarrior.exemptMarkCases())
    func exemptMarkLeaks(_ c: XfrmiRoadWarrior.Case) async throws {
        let o = try await Self.observe(c, port: 7704)
        #expect(o.verdict == .leaksClearText, "\(o)")
        #expect(!o.evaluation.passed)
        #expect(o.evaluation.report.contains("missing: west postrouting: udp to 192.1.2.23 port 7704 out xfrm0"), "\(o.evaluation.report)")
        #expect(o.evaluation.report.contains("out eth1"), "\(o.evaluation.report)")
    }

    @Test("xfrmlab run xfrmi-road-warrior: with output marks every design works, and the unmarked verdicts agree with their traces",
          .requires(.esp), .requires(.xfrmInterface), .requires(.outputMarkMask))
    func scenarioRun() throws {
        let report = try XfrmiRoadWarrior.definition.run(topologyPath: topologyFile("xfrmi-road-warrior"))
        print(report, terminator: "")
        #expect(report.passed, "\(report)")
    }
}
