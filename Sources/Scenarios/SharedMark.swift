import Foundation
import Glibc
import Lab
import Netlink
import Probes
import Topology
import Xfrm

/// Scenario 6, one mark field shared by IPsec and the firewall, a mask for each: IPsec owns
/// 0xff00 (policy marks 0x100/0xff00 pick the tunnel, the outbound SA's output mark
/// 0x200/0xff00 tags ESP, the inbound SA's 0x300/0xff00 tags what it decrypted, and the
/// inbound policies want that), the firewall owns 0x00ff (`meta mark set meta mark & 0xffffff00
/// | 0x1` in west, `| 0x2` in east, on cleartext leaving and ESP arriving). A UDP exchange between the
/// subnets is traced at every hook of both hosts: at each, the firewall's bits and IPsec's bits
/// must be what their owner last set.
///
/// Topology: Topologies/shared-mark.yaml; SAs, policies and firewall rules come from the scenario.
public enum SharedMark {
    public static let name = "shared-mark"
    public static let ipsecMask: UInt32 = 0xff00, firewallMask: UInt32 = 0x00ff
    /// The socket's mark: "this goes through the tunnel" (IPsec's bits only).
    public static let selectTunnel: UInt32 = 0x100
    public static let espTag: UInt32 = 0x200, decryptedTag: UInt32 = 0x300
    static func firewallBits(_ host: String) -> UInt32 { host == "west" ? 0x1 : 0x2 }

    /// How the case is (deliberately) broken.
    public enum Breakage: String, Sendable, CaseIterable, CustomStringConvertible {
        case none
        /// West's firewall sets the whole mark (`meta mark set 0x1`): IPsec's bits are lost.
        case firewallClobbers = "firewall-clobbers"
        /// The SAs' output marks have no mask: the firewall's bits are lost.
        case ipsecClobbers = "ipsec-clobbers"
        public var description: String { rawValue }
    }

    public struct Case: Sendable, CustomStringConvertible {
        public var style: TunnelStyle
        public var family: ScenarioFamily
        public var breakage: Breakage = .none
        public init(style: TunnelStyle, family: ScenarioFamily, breakage: Breakage = .none) {
            self.style = style
            self.family = family
            self.breakage = breakage
        }
        public var description: String { "\(style) \(family)" + (breakage == .none ? "" : " (\(breakage))") }
    }

    /// The firewall of `host`, as an nftables ruleset: it owns the low byte and stamps it once,
    /// on the cleartext the host sends and on the ESP it receives, so what happens to its bits
    /// afterwards (encryption, decryption) is IPsec's doing.
    public static func firewall(_ host: String, clobber: Bool = false) -> String {
        let set = clobber ? hex(firewallBits(host)) : "meta mark & 0xffffff00 | \(hex(firewallBits(host)))"
        return """
        table inet firewall {
          chain output { type route hook output priority mangle; policy accept;
            meta l4proto udp meta mark set \(set)
          }
          chain prerouting { type filter hook prerouting priority mangle; policy accept;
            meta l4proto esp meta mark set \(set)
          }
        }

        """
    }

    public struct Outcome: Sendable, CustomStringConvertible {
        public var testCase: Case
        public var tunnel: MarkTunnel
        public var trip: RoundTrip
        public var trace: Trace
        public var evaluation: (passed: Bool, report: String)
        /// Hops of the exchange whose firewall bits or IPsec bits are not what their owner set.
        public var clobbered: [String]
        /// Every hop of the exchange as `host hook proto: mark (firewall bits, IPsec bits)`.
        public var table: [String]
        /// Packets counted by west's outbound SA and east's inbound one.
        public var westOutPackets: UInt64
        public var eastInPackets: UInt64
        public var verdict: String {
            clobbered.isEmpty ? "neither clobbers the other at \(table.count) hook(s)" : "clobbered at \(clobbered.count) hook(s): " + clobbered.joined(separator: "; ")
        }
        public var description: String { "\(testCase): \(verdict); \(trip)" }
    }

    public static func observe(_ lab: Lab, _ c: Case, port: UInt16) throws -> Outcome {
        let f = try WestEast(lab, family: c.family)
        func end(_ host: String, outer: [UInt8], subnet: CIDR) -> MarkTunnelEnd {
            var e = MarkTunnelEnd(host: host, outer: outer, subnets: [subnet], style: c.style)
            e.lower = "eth1"
            e.outPolicyMark = XfrmMark(selectTunnel, mask: ipsecMask)
            e.inPolicyMark = XfrmMark(decryptedTag, mask: ipsecMask)
            let mask: UInt32 = c.breakage == .ipsecClobbers ? .max : ipsecMask
            e.outputMark = XfrmMark(espTag, mask: mask)
            e.inputMark = XfrmMark(decryptedTag, mask: mask)
            return e
        }
        for host in ["west", "east"] {
            try lab.namespace(host).check(["nft", "-f", "-"], input: firewall(host, clobber: c.breakage == .firewallClobbers && host == "west"))
        }
        defer { for host in ["west", "east"] { _ = try? lab.namespace(host).execute(["nft", "delete", "table", "inet", "firewall"]) } }
        let tunnel = try MarkTunnel.install(lab, left: end("west", outer: f.westOuter, subnet: f.westSubnet),
                                            right: end("east", outer: f.eastOuter, subnet: f.eastSubnet))
        defer { try? MarkTunnel.remove(lab, tunnel) }
        let (trip, trace) = try lab.traceNamed(hosts: ["west", "east"]) {
            try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: f.eastInner, port: port,
                         source: f.westInner, mark: selectTunnel, replyMark: selectTunnel, timeout: 3)
        }
        let a = tunnel.leftToRightSPI, b = tunnel.rightToLeftSPI
        // What each owner last set, hook by hook: request out of west, into east, reply back.
        let w = firewallBits("west"), e = firewallBits("east")
        let expected = PathExpectation("\(c): firewall bits 0x00ff and IPsec bits 0xff00 each as their owner set them")
            .then(.on("west", .output).udp(to: f.eastInner, port: port).mark(selectTunnel | w))
            .then(.on("west", .postrouting).udp(to: f.eastInner, port: port).mark(selectTunnel | w))
            .then(.on("west", .output).esp(spi: a).mark(espTag | w))
            .then(.on("west", .postrouting).esp(spi: a).mark(espTag | w).out("eth1"))
            .then(.on("east", .prerouting).esp(spi: a).mark(e).in("eth1"))
            .then(.on("east", .prerouting).udp(to: f.eastInner, port: port).mark(decryptedTag | e))
            .then(.on("east", .input).udp(to: f.eastInner, port: port).mark(decryptedTag | e))
            .then(.on("east", .output).udp(from: f.eastInner).mark(selectTunnel | e))
            .then(.on("east", .postrouting).udp(from: f.eastInner).mark(selectTunnel | e))
            .then(.on("east", .output).esp(spi: b).mark(espTag | e))
            .then(.on("east", .postrouting).esp(spi: b).mark(espTag | e).out("eth1"))
            .then(.on("west", .prerouting).esp(spi: b).mark(w).in("eth1"))
            .then(.on("west", .prerouting).udp(from: f.eastInner).mark(decryptedTag | w))
            .then(.on("west", .input).udp(from: f.eastInner).mark(decryptedTag | w))
        // The verdict from the hops themselves: the firewall's bits must always be the host's;
        // IPsec's bits one of the tags it sets (or none before it set any, on arriving ESP).
        var clobbered: [String] = [], table: [String] = []
        for hop in trace.hops where hop.packet.spi == a || hop.packet.spi == b
            || hop.packet.destinationPort == port || hop.packet.sourcePort == port {
            let fw = hop.mark & firewallMask, ipsec = hop.mark & ipsecMask
            let line = "\(hop.host) \(hop.hook.rawValue) \(hop.packet.proto.rawValue): \(hex(hop.mark)) (firewall \(hex(fw)), IPsec \(hex(ipsec)))"
            table.append(line)
            let isESP = hop.packet.spi != nil
            let wantedIPsec: Set<UInt32> = isESP ? [espTag, 0] : [selectTunnel, decryptedTag]
            if fw != firewallBits(hop.host) || !wantedIPsec.contains(ipsec) || hop.mark & ~(firewallMask | ipsecMask) != 0 {
                clobbered.append(line)
            }
        }
        return Outcome(testCase: c, tunnel: tunnel, trip: trip, trace: trace, evaluation: expected.evaluate(trace),
                       clobbered: clobbered, table: table,
                       westOutPackets: try MarkTunnel.state(lab, "west", spi: a)?.counters.packets ?? 0,
                       eastInPackets: try MarkTunnel.state(lab, "east", spi: a)?.counters.packets ?? 0)
    }

    public static func checks(_ o: Outcome) -> [Check] {
        [Check("\(o.testCase): \(o.verdict)", passed: o.evaluation.passed && o.trip.answered && o.clobbered.isEmpty,
               detail: o.evaluation.passed ? "\(o.trip); " + o.table.joined(separator: "; ") : o.evaluation.report)]
    }

    public static let definition = ScenarioDefinition(
        name: name,
        summary: "IPsec owns mark bits 0xff00 (policy marks, SA output marks), the firewall 0x00ff (nft): neither clobbers the other, at every hook",
        topology: "shared-mark",
        unmetRequirement: { unmet(TunnelStyle.policy.requirements(.ipv4) + [.nftables, .nflog]) },
        checks: { lab in
            var out: [Check] = []
            var port: UInt16 = 7600
            for style in [TunnelStyle.policy, .xfrmi] {
                for family in ScenarioFamily.allCases {
                    port += 1
                    let c = Case(style: style, family: family)
                    if let missing = unmet(style.requirements(family)) {
                        out.append(Check("\(c): not run", passed: true, detail: "skipped: \(missing)"))
                        continue
                    }
                    out += checks(try observe(lab, c, port: port))
                }
            }
            for breakage in [Breakage.firewallClobbers, .ipsecClobbers] {
                port += 1
                let o = try observe(lab, Case(style: .policy, family: .ipv4, breakage: breakage), port: port)
                out.append(Check("broken variant (\(breakage)) is caught", passed: !o.evaluation.passed,
                                 detail: o.evaluation.report.split(separator: "\n").prefix(3).joined(separator: " | ")))
            }
            return out
        })
}
