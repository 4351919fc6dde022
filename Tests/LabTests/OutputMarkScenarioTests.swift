import Foundation
import Lab
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology
import Xfrm

extension OutputMark.Case: CustomTestStringConvertible {
    public var testDescription: String { description }
}

/// Scenario 1 (`xfrmlab run output-mark`): an SA's output mark, with and without a mask, steers
/// its ESP through west's rule `fwmark 0x100/0xff00 lookup 50` (through nic); the socket's mark
/// 0x1, outside the mask, survives only with a mask. Judged by NFLOG traces at west, nic and east,
/// `RTM_GETROUTE` with the ESP's mark, and the SA's counter. A lab per case: they run side by side.
@Suite("Scenario output-mark: an SA's output mark steers its ESP through an fwmark rule", .tags(.privileged), .needsNamespaces)
struct OutputMarkScenarioTests {
    static func cases(_ style: TunnelStyle, _ families: [ScenarioFamily] = ScenarioFamily.allCases) -> [OutputMark.Case] {
        families.flatMap { f in [OutputMark.Case(style: style, family: f, mask: OutputMark.ruleMask), OutputMark.Case(style: style, family: f, mask: nil)] }
    }

    static func check(_ c: OutputMark.Case, port: UInt16) async throws {
        try await Topology.load(path: topologyFile("output-mark")).withLab { lab in
            let o = try OutputMark.observe(lab, c, port: port)
            print("output-mark \(o)")
            #expect(o.trip.answered, "\(o)")
            #expect(o.evaluation.passed, "\(o.evaluation.report)")
            #expect(o.steeredThroughNic, "\(o)\n\(o.trace)")
            #expect(o.espMark == c.expectedESPMark, "\(o)")
            #expect(o.route?.table == 50 && o.route?.gateway == o.addresses.nic, "\(o)")
            // The mask decides whether the system's bit survives.
            #expect(o.systemBitsSurvive == (c.mask != nil), "\(o)")
            #expect(o.westOutPackets >= 1, "\(o)")
        }
    }

    @Test("policy style: ESP marked by the SA's output mark leaves through table 50 (nic); bit 0x1 survives only with the mask",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), arguments: cases(.policy))
    func policyStyle(_ c: OutputMark.Case) async throws { try await Self.check(c, port: 7501) }

    @Test("vti style (IPv4): the same through vti", .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.vti),
          arguments: cases(.vti, [.ipv4]))
    func vtiStyle(_ c: OutputMark.Case) async throws { try await Self.check(c, port: 7502) }

    @Test("vti6 style (IPv6): the same through vti6", .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.vti6),
          arguments: cases(.vti, [.ipv6]))
    func vti6Style(_ c: OutputMark.Case) async throws { try await Self.check(c, port: 7503) }

    @Test("xfrmi style: the same through an xfrm interface tied to eth1", .tags(.vm), .requires(.esp), .requires(.outputMarkMask),
          .requires(.xfrmInterface), arguments: cases(.xfrmi))
    func xfrmiStyle(_ c: OutputMark.Case) async throws { try await Self.check(c, port: 7504) }

    @Test("broken: an output mark the rule does not want (0x200/0xff00) fails, showing the ESP going straight to east",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), arguments: ScenarioFamily.allCases)
    func wrongOutputMark(_ family: ScenarioFamily) async throws {
        try await Topology.load(path: topologyFile("output-mark")).withLab { lab in
            let o = try OutputMark.observe(lab, .init(style: .policy, family: family, mask: OutputMark.ruleMask, value: 0x200), port: 7505)
            print("output-mark broken \(o)")
            #expect(!o.evaluation.passed)
            #expect(!o.steeredThroughNic, "\(o)")
            #expect(o.espMark == 0x201, "\(o)")
            #expect(o.route?.table == RouteRequest.mainTable, "\(o)")
            #expect(o.evaluation.report.contains("missing: nic forward: esp spi"), "\(o.evaluation.report)")
            #expect(o.evaluation.report.contains("actual trace:"))
            #expect(o.evaluation.report.contains("west postrouting: esp"), "\(o.evaluation.report)")
            // The exchange itself still works: only the path is wrong.
            #expect(o.trip.answered, "\(o)")
        }
    }

    @Test("xfrmlab run output-mark: every style and family the kernel has passes, and the broken variant is caught",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask))
    func scenarioRun() throws {
        let report = try OutputMark.definition.run(topologyPath: topologyFile("output-mark"))
        print(report, terminator: "")
        #expect(report.passed, "\(report)")
        #expect(report.checks.count >= 3 * 4 + 2, "\(report)")
    }

    /// The half that needs no ESP: the rule and table 50 as `RTM_GETROUTE` sees them for the
    /// marks an SA would set, with the system's low bits present or not.
    @Test("the rule takes 0x100 under mask 0xff00 whatever the low bits: route get with marks 0x1, 0x100, 0x101, 0x201",
          arguments: ScenarioFamily.allCases)
    func ruleByRouteQuery(_ family: ScenarioFamily) async throws {
        try await Topology.load(path: topologyFile("output-mark")).withLab { lab in
            let ns = try lab.namespace("west")
            let a = try WestEast(lab, family: family)
            for (mark, table50) in [(UInt32(0x1), false), (0x100, true), (0x101, true), (0x201, false), (0xff_0100, true)] {
                let r = try ns.route.routeGet(namespace: ns.name, destination: a.eastOuter, mark: mark)
                #expect((r.table == 50) == table50, "mark 0x\(String(mark, radix: 16)): \(r)")
                #expect((r.gateway == a.nic) == table50, "mark 0x\(String(mark, radix: 16)): \(r)")
            }
        }
    }
}
