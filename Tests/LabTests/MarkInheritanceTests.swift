import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Reports
import Scenarios
import Testing
import XfrmLabTesting
import Topology

/// Scenario 2: a multihomed gw marks incoming ESP by upstream (MARK + CONNMARK --save-mark,
/// --restore-mark in OUTPUT). Does the decrypted packet keep the mark, does the reply get it,
/// does the reply's ESP leave through the upstream the request came in on? Asked for VTI and
/// for xfrm interfaces; the answers are the kernel's, read from NFLOG traces on gw. A lab per
/// case: they run side by side.
@Suite("Scenario mark-inheritance: ESP marked per upstream on a multihomed gateway",
       .tags(.privileged, .vm), .needsNamespaces, .requires(.esp), .requires(.nftables), .requires(.conntrackMark))
struct MarkInheritanceTests {
    static func topology(_ style: Tunnel.Style) throws -> Topology { try Topology.load(path: topologyFile("multihomed-\(style.rawValue)")) }

    /// The kernel's answers for one upstream: does the decrypted request keep the mark, does the
    /// reply get it, does the reply's ESP leave through the upstream the request came in on.
    struct Answers: Equatable, CustomStringConvertible {
        var decryptedKeepsMark: Bool?
        var replyGetsMark: Bool?
        var leavesWhereItCameIn: Bool?
        init(_ o: MarkInheritance.Observation) {
            decryptedKeepsMark = o.decryptedKeepsMark
            replyGetsMark = o.replyGetsMark
            leavesWhereItCameIn = o.replyESPLeavesWhereItCameIn
        }
        init(_ d: Bool, _ r: Bool, _ l: Bool) { (decryptedKeepsMark, replyGetsMark, leavesWhereItCameIn) = (d, r, l) }
        var description: String { "decrypted keeps: \(decryptedKeepsMark.map(String.init) ?? "-"), reply gets: \(replyGetsMark.map(String.init) ?? "-"), leaves where it came in: \(leavesWhereItCameIn.map(String.init) ?? "-")" }
    }

    /// What was measured, per kernel series (the catalogue pins one point release of each),
    /// restore, and upstream (1, 2); the same for VTI and xfrm interfaces and both inner families.
    /// On a series not listed the answers are printed, not compared.
    static let measured: [String: [MarkInheritance.Restore: [Answers]]] = [
        // Debian 6.1.0-56, 2026-11-24: the reply's ESP carries 0x2 but leaves through up1 — its
        // outer route was looked up without the packet's mark, and the restore in OUTPUT changes
        // nothing (the mark is already 0x2), so nothing routes it again.
        // Restored on ESP only, the mark changes in OUTPUT (0 → 0x2) and the ESP is routed
        // again, out through up2; the reply inside the tunnel stays unmarked.
        "6.1": [.all: [Answers(true, true, true), Answers(true, true, false)],
                      .espOnly: [Answers(true, false, true), Answers(true, false, true)]],
        // Debian 6.12.117, 2026-11-24: the same.
        "6.12": [.all: [Answers(true, true, true), Answers(true, true, false)],
                      .espOnly: [Answers(true, false, true), Answers(true, false, true)]],
    ]

    /// Through each upstream in turn: the recipe does what it does on any kernel, every answer is
    /// observed, and the answers hang together; where measured, they are the measured ones.
    static func ask(_ style: Tunnel.Style, _ family: IPAddress.Family, _ restore: MarkInheritance.Restore) async throws {
        try await topology(style).withLab { lab in
            _ = try lab.namespace("gw").check(["nft", "-f", "-"], input: MarkInheritance.gwRules(restore: restore))
            var answers: [Answers] = []
            for n in [1, 2] {
                let port = UInt16(7800 + n)
                let o = try MarkInheritance.observe(lab, style: style, family: family, upstream: n, port: port)
                #expect(o.trip.answered, "\(o.trip)")
                let verdict = MarkInheritance.recipeExpectation(style: style, family: family, upstream: n, port: port).evaluate(o.trace)
                #expect(verdict.passed, "\(verdict.report)")
                // Every answer was observed, not assumed.
                #expect(o.decrypted != nil && o.reply != nil && o.outgoingESP != nil, "\(o)\n\(o.trace)")
                #expect(["up1", "up2"].contains(o.outgoingESP?.outInterface ?? ""), "\(o)")
                if restore == .all {
                    // The reply's connection can only restore a mark the decrypted request kept.
                    #expect(o.decryptedKeepsMark == o.replyGetsMark, "\(o)")
                } else {
                    // Restored on ESP only: the reply leaves the tunnel unmarked.
                    #expect(o.replyGetsMark == false, "\(o)")
                }
                print("mark-inheritance answer (\(kernelRelease()), restore \(restore)): \(o)")
                answers.append(Answers(o))
            }
            let series = KernelSituation.current.version.map { $0.parts.prefix(2).map(String.init).joined(separator: ".") } ?? "?"
            if let pinned = measured[series]?[restore] {
                #expect(answers == pinned, "measured on \(kernelRelease()) before: \(pinned); now: \(answers)")
            }
        }
    }

    @Test("VTI: the kernel's answers, per upstream", .requires(.vti),
          arguments: [MarkInheritance.Restore.all, .espOnly], [IPAddress.Family.ipv4, .ipv6])
    func vti(_ restore: MarkInheritance.Restore, _ family: IPAddress.Family) async throws {
        try await Self.ask(.vti, family, restore)
    }

    @Test("xfrm interface: the kernel's answers, per upstream", .requires(.xfrmInterface),
          arguments: [MarkInheritance.Restore.all, .espOnly], [IPAddress.Family.ipv4, .ipv6])
    func xfrmi(_ restore: MarkInheritance.Restore, _ family: IPAddress.Family) async throws {
        try await Self.ask(.xfrmi, family, restore)
    }

    @Test("broken: without CONNMARK --restore-mark in OUTPUT, the answer to ESP that came in through up2 leaves unmarked, and the trace shows it",
          .requires(.xfrmInterface))
    func withoutRestore() async throws {
        try await Self.topology(.xfrmi).withLab { lab in
            _ = try lab.namespace("gw").check(["nft", "-f", "-"], input: MarkInheritance.gwRules(restore: .none))
            let o = try MarkInheritance.observe(lab, style: .xfrmi, family: .ipv4, upstream: 2, port: 7850)
            let verdict = MarkInheritance.recipeExpectation(style: .xfrmi, family: .ipv4, upstream: 2, port: 7850).evaluate(o.trace)
            #expect(!verdict.passed)
            #expect(verdict.report.contains("missing: gw postrouting: esp from 192.0.2.1 to 192.1.2.45 mark 0x2/0xff"), "\(verdict.report)")
            #expect(verdict.report.contains("actual trace:"))
            #expect(verdict.report.contains("gw postrouting: esp spi") && verdict.report.contains("192.0.2.1 → 192.1.2.45 mark 0x0"), "\(verdict.report)")
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
