import Foundation
import Lab
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology
import Xfrm

extension SharedMark.Case: CustomTestStringConvertible {
    public var testDescription: String { description }
}

/// Scenario 6 (`xfrmlab run shared-mark`): IPsec owns mark bits 0xff00 (policy marks, SA output
/// marks on both directions), the firewall 0x00ff (nft `meta mark set meta mark & 0xffffff00 | N`);
/// a UDP exchange through the tunnel is traced at all five hooks of west and east, and each hop's
/// bits must be what their owner last set.
/// A lab per case: they run side by side.
@Suite("Scenario shared-mark: IPsec and the firewall share the mark field, a mask each", .tags(.privileged), .needsNamespaces)
struct SharedMarkScenarioTests {
    static func cases(_ style: TunnelStyle) -> [SharedMark.Case] { ScenarioFamily.allCases.map { SharedMark.Case(style: style, family: $0) } }

    static func check(_ c: SharedMark.Case) async throws {
        try await Topology.load(path: topologyFile("shared-mark")).withLab { lab in
            let o = try SharedMark.observe(lab, c, port: 7601)
            print("shared-mark \(o)\n  " + o.table.joined(separator: "\n  "))
            #expect(o.trip.answered, "\(o)")
            #expect(o.evaluation.passed, "\(o.evaluation.report)")
            #expect(o.clobbered.isEmpty, "\(o)")
            // Both directions at all the hooks the exchange passes: 7 on each host.
            #expect(o.table.count >= 14, "\(o.table)")
            #expect(o.westOutPackets >= 1 && o.eastInPackets >= 1, "\(o)")
        }
    }

    @Test("policy style: neither the firewall nor IPsec clobbers the other's bits, at every hook",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.nftables), arguments: cases(.policy))
    func policyStyle(_ c: SharedMark.Case) async throws { try await Self.check(c) }

    @Test("xfrmi style: the same with an xfrm interface (if_id 7) and marked policies",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.xfrmInterface), .requires(.nftables), arguments: cases(.xfrmi))
    func xfrmiStyle(_ c: SharedMark.Case) async throws { try await Self.check(c) }

    @Test("broken: a firewall that sets the whole mark, or SAs whose output marks have no mask, fail with the trace shown",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.nftables),
          arguments: [SharedMark.Breakage.firewallClobbers, .ipsecClobbers])
    func broken(_ breakage: SharedMark.Breakage) async throws {
        try await Topology.load(path: topologyFile("shared-mark")).withLab { lab in
            let o = try SharedMark.observe(lab, .init(style: .policy, family: .ipv4, breakage: breakage), port: 7602)
            print("shared-mark broken \(o)")
            #expect(!o.evaluation.passed)
            #expect(!o.clobbered.isEmpty, "\(o)")
            #expect(o.evaluation.report.contains("actual trace:"))
            #expect(o.evaluation.report.contains("west output: udp"), "\(o.evaluation.report)")
            switch breakage {
            case .firewallClobbers:
                // IPsec's bits gone, the out policy no longer matches: the request leaves in clear.
                #expect(o.clobbered.contains { $0.hasPrefix("west output udp: 0x1 ") }, "\(o.clobbered)")
                #expect(!o.trace.hops(on: "west").contains { $0.packet.spi == o.tunnel.leftToRightSPI }, "\(o.trace)")
            case .ipsecClobbers:
                // The firewall's bit gone from west's ESP: 0x200, not 0x201.
                #expect(o.clobbered.contains { $0.hasPrefix("west output esp: 0x200 ") }, "\(o.clobbered)")
            case .none:
                break
            }
        }
    }

    @Test("xfrmlab run shared-mark: every case the kernel has passes, and both broken variants are caught",
          .tags(.vm), .requires(.esp), .requires(.outputMarkMask), .requires(.nftables))
    func scenarioRun() throws {
        let report = try SharedMark.definition.run(topologyPath: topologyFile("shared-mark"))
        print(report, terminator: "")
        #expect(report.passed, "\(report)")
    }

    /// The half that needs no ESP: the firewall's rule keeps IPsec's bits on cleartext at
    /// every hook (and the clobbering rule does not), traced on a plain exchange.
    @Test("without IPsec: the firewall adds its bit 0x1 and keeps 0x100 at every hook of west; `meta mark set 0x1` loses it",
          .requires(.nftables), .requires(.nflog))
    func firewallAlone() async throws {
        try await Topology.load(path: topologyFile("shared-mark")).withLab { lab in
            let west = try lab.namespace("west"), east = try lab.namespace("east")
            let target = try WestEast(lab, family: .ipv4).eastOuter
            for (clobber, expected) in [(false, UInt32(0x101)), (true, 0x1)] {
                try west.check(["nft", "-f", "-"], input: SharedMark.firewall("west", clobber: clobber))
                let (trip, trace) = try lab.trace(hosts: ["west"]) {
                    try Echo.udp(from: west, to: east, destination: target, port: 7603, mark: SharedMark.selectTunnel)
                }
                #expect(trip.answered, "\(trip)")
                let verdict = PathExpectation("firewall \(clobber ? "clobbering" : "masked")")
                    .then(.on("west", .output).udp(to: target, port: 7603).mark(expected))
                    .then(.on("west", .postrouting).udp(to: target, port: 7603).mark(expected).out("eth1"))
                    .evaluate(trace)
                #expect(verdict.passed, "\(verdict.report)")
                _ = try west.execute(["nft", "delete", "table", "inet", "firewall"])
            }
        }
    }
}
