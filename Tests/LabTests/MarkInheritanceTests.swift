import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Scenarios
import Testing
import Topology

/// Scenario 2: a multihomed gw marks incoming ESP by upstream (MARK + CONNMARK --save-mark,
/// --restore-mark in OUTPUT). Does the decrypted packet keep the mark, does the reply get it,
/// does the reply's ESP leave through the upstream the request came in on? Asked for VTI and
/// for xfrm interfaces; the answers are the kernel's, read from NFLOG traces on gw.
@Suite("Scenario mark-inheritance: ESP marked per upstream on a multihomed gateway",
       .tags(.privileged, .vm), .needsNamespaces, .serialized, .requires(.esp), .requires(.nftables), .requires(.conntrackMark))
struct MarkInheritanceTests {
    static func topology(_ style: Tunnel.Style) throws -> Topology { try Topology.load(path: topologyFile("multihomed-\(style.rawValue)")) }

    /// Through each upstream in turn: the recipe's promise holds (the reply's ESP leaves marked
    /// through the upstream the request came in on), and the kernel's answers hang together.
    static func ask(_ style: Tunnel.Style, _ family: IPAddress.Family) async throws -> [MarkInheritance.Observation] {
        try await topology(style).withLab { lab in
            _ = try lab.namespace("gw").check(["nft", "-f", "-"], input: MarkInheritance.gwRules())
            var answers: [MarkInheritance.Observation] = []
            for n in [1, 2] {
                let port = UInt16(7800 + n)
                let o = try MarkInheritance.observe(lab, style: style, family: family, upstream: n, port: port)
                #expect(o.trip.answered, "\(o.trip)")
                let verdict = MarkInheritance.recipeExpectation(style: style, family: family, upstream: n, port: port).evaluate(o.trace)
                #expect(verdict.passed, "\(verdict.report)")
                // Every answer was observed, not assumed.
                #expect(o.decrypted != nil && o.reply != nil && o.outgoingESP != nil, "\(o)\n\(o.trace)")
                #expect(o.incomingESP?.inInterface == "up\(n)" && o.incomingESP.map { $0.mark & 0xff } == UInt32(n), "\(o.trace)")
                // The reply's connection can only restore a mark the decrypted request kept.
                #expect(o.decryptedKeepsMark == o.replyGetsMark, "\(o)")
                print("mark-inheritance answer: \(o)")
                answers.append(o)
            }
            return answers
        }
    }

    @Test("VTI: the kernel's answers, per upstream", .requires(.vti), arguments: [IPAddress.Family.ipv4, .ipv6])
    func vti(_ family: IPAddress.Family) async throws {
        _ = try await Self.ask(.vti, family)
    }

    @Test("xfrm interface: the kernel's answers, per upstream", .requires(.xfrmInterface), arguments: [IPAddress.Family.ipv4, .ipv6])
    func xfrmi(_ family: IPAddress.Family) async throws {
        _ = try await Self.ask(.xfrmi, family)
    }

    @Test("broken: without CONNMARK --restore-mark in OUTPUT, the answer to ESP that came in through up2 leaves through up1, and the trace shows it",
          .requires(.xfrmInterface))
    func withoutRestore() async throws {
        try await Self.topology(.xfrmi).withLab { lab in
            _ = try lab.namespace("gw").check(["nft", "-f", "-"], input: MarkInheritance.gwRules(restore: false))
            let o = try MarkInheritance.observe(lab, style: .xfrmi, family: .ipv4, upstream: 2, port: 7850)
            let verdict = MarkInheritance.recipeExpectation(style: .xfrmi, family: .ipv4, upstream: 2, port: 7850).evaluate(o.trace)
            #expect(!verdict.passed)
            #expect(verdict.report.contains("missing: gw postrouting: esp from 192.0.2.1 to 192.1.2.45 mark 0x2/0xff out up2"), "\(verdict.report)")
            #expect(verdict.report.contains("actual trace:"))
            #expect(verdict.report.contains("gw postrouting: esp spi") && verdict.report.contains("192.0.2.1 → 192.1.2.45 mark 0x0 out up1"), "\(verdict.report)")
        }
    }

    @Test("xfrmlab run mark-inheritance-vti and -xfrmi: every check passes", .requires(.vti), .requires(.xfrmInterface))
    func scenario() throws {
        for (definition, topology) in [(MarkInheritance.vti, "multihomed-vti"), (MarkInheritance.xfrmi, "multihomed-xfrmi")] {
            let report = try definition.run(topologyPath: topologyFile(topology))
            print(report)
            #expect(report.passed, "\(report)")
        }
    }
}
