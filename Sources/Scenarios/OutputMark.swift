import Foundation
import Glibc
import Lab
import Netlink
import Probes
import Xfrm

/// Scenario 1, the output mark: an SA with `XFRMA_SET_MARK` (with and without
/// `XFRMA_SET_MARK_MASK`) marks its ESP packets, and west's rule `fwmark 0x100/0xff00 lookup 50`
/// sends them through nic (table 50: east's public address via 192.1.2.254) instead of straight
/// to east. The cleartext's socket mark 0x1 stands for bits the rest of the system set: with a
/// mask they survive on the ESP packet, without one the SA overwrites them.
///
/// Topology: Topologies/output-mark.yaml (west, east and nic with table 50 in west); the SAs and
/// policies are installed by the scenario (Netlink XFRM API), per case.
public enum OutputMark {
    public static let name = "output-mark"
    /// The mark the rest of the system put on the cleartext (west's socket mark): outside the mask.
    public static let systemMark: UInt32 = 0x1
    /// West's rule: `fwmark 0x100/0xff00 lookup 50`.
    public static let ruleMark: UInt32 = 0x100, ruleMask: UInt32 = 0xff00

    public struct Case: Sendable, CustomStringConvertible {
        public var style: TunnelStyle
        public var family: ScenarioFamily
        /// `XFRMA_SET_MARK_MASK`; nil: `XFRMA_SET_MARK` alone (the kernel takes 0xffffffff).
        public var mask: UInt32?
        /// The SA's output mark; the broken variant uses 0x200, which the rule does not want.
        public var value: UInt32 = ruleMark

        public init(style: TunnelStyle, family: ScenarioFamily, mask: UInt32?, value: UInt32 = ruleMark) {
            self.style = style
            self.family = family
            self.mask = mask
            self.value = value
        }

        public var outputMark: XfrmMark { XfrmMark(value, mask: mask ?? .max) }
        /// What the kernel makes of the cleartext's mark: `(mark & ~mask) | (value & mask)`.
        public var expectedESPMark: UInt32 {
            let m = mask ?? .max
            return (systemMark & ~m) | (value & m)
        }
        public var description: String {
            "\(style) \(family) output-mark \(hex(value))" + (mask.map { "/\(hex($0))" } ?? " (no mask)")
        }
    }

    /// What one exchange showed, and the verdicts computed from it.
    public struct Outcome: Sendable, CustomStringConvertible {
        public var testCase: Case
        /// The addresses the case used, from the lab's topology.
        public var addresses: WestEast
        public var tunnel: MarkTunnel
        public var trip: RoundTrip
        public var trace: Trace
        /// The mark of west's ESP packet at postrouting, as NFLOG saw it.
        public var espMark: UInt32?
        /// nic forwarded west's ESP (table 50 took it).
        public var steeredThroughNic: Bool
        /// `ip route get EAST mark ESPMARK` in west.
        public var route: RouteInfo?
        public var westOutPackets: UInt64
        public var evaluation: (passed: Bool, report: String)

        /// The bits outside the mask that the system set (0x1) are still on the ESP packet.
        public var systemBitsSurvive: Bool? { espMark.map { $0 & OutputMark.systemMark == OutputMark.systemMark } }

        public var verdict: String {
            let mark = espMark.map(hex) ?? "no ESP seen"
            return "ESP mark \(mark): \(steeredThroughNic ? "steered through table 50 (nic)" : "not steered (straight to east)"), "
                + "system bit 0x1 \(systemBitsSurvive == true ? "survives" : "lost")"
        }
        public var description: String { "\(testCase): \(verdict); \(trip); route: \(route.map { "\($0)" } ?? "none")" }
    }

    /// Installs the case's tunnel (west's outbound SA with the output mark), sends UDP from
    /// west's subnet to east's marked 0x1, traces west, nic and east, and reads the SA counters
    /// and the route west's ESP would take.
    public static func observe(_ lab: Lab, _ c: Case, port: UInt16) throws -> Outcome {
        let f = try WestEast(lab, family: c.family)
        var west = MarkTunnelEnd(host: "west", outer: f.westOuter, subnets: [f.westSubnet], style: c.style)
        west.outputMark = c.outputMark
        west.lower = "eth1"
        let east = MarkTunnelEnd(host: "east", outer: f.eastOuter, subnets: [f.eastSubnet], style: c.style)
        let tunnel = try MarkTunnel.install(lab, left: west, right: east)
        defer { try? MarkTunnel.remove(lab, tunnel) }
        let (trip, trace) = try lab.traceNamed(hosts: ["west", "nic", "east"]) {
            try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: f.eastInner, port: port,
                         source: f.westInner, mark: systemMark, timeout: 3)
        }
        let espOut = trace.hops(on: "west").first { $0.hook == .postrouting && $0.packet.spi == tunnel.leftToRightSPI }
        let viaNic = trace.hops(on: "nic").contains { $0.hook == .forward && $0.packet.spi == tunnel.leftToRightSPI }
        let westNS = try lab.namespace("west")
        let route = try espOut.map { try westNS.route.routeGet(namespace: westNS.name, destination: f.eastOuter, mark: $0.mark) }
        let expected = PathExpectation("\(c): ESP marked \(hex(c.expectedESPMark)) through nic")
            .then(.on("west", .output).udp(to: f.eastInner, port: port).mark(systemMark))
            .then(.on("west", .postrouting).esp(spi: tunnel.leftToRightSPI).mark(c.expectedESPMark).out("eth1"))
            .then(.on("nic", .forward).esp(spi: tunnel.leftToRightSPI).in("eth1").out("eth1"))
            .then(.on("east", .input).udp(to: f.eastInner, port: port))
            .then(.on("east", .postrouting).esp(spi: tunnel.rightToLeftSPI).out("eth1"))
            .then(.on("west", .input).udp(from: f.eastInner))
            .never(.on("nic", .forward).udp(to: f.eastInner))
        return Outcome(testCase: c, addresses: f, tunnel: tunnel, trip: trip, trace: trace, espMark: espOut?.mark, steeredThroughNic: viaNic,
                       route: route, westOutPackets: try MarkTunnel.state(lab, "west", spi: tunnel.leftToRightSPI)?.counters.packets ?? 0,
                       evaluation: expected.evaluate(trace))
    }

    /// The checks of one case: the path, the route the ESP mark selects, the SA counter.
    public static func checks(_ o: Outcome) -> [Check] {
        let c = o.testCase
        let table50 = o.route.map { $0.table == 50 && $0.gateway == o.addresses.nic } ?? false
        return [
            Check("\(c): \(o.verdict)", passed: o.evaluation.passed && o.trip.answered,
                  detail: o.evaluation.passed ? "\(o.trip)" : o.evaluation.report),
            Check("\(c): route get for the ESP's mark says table 50 via nic", passed: table50,
                  detail: "ip -n west route get \(formatAddress(o.addresses.eastOuter)) mark \(o.espMark.map(hex) ?? "?"): \(o.route.map { "\($0)" } ?? "no ESP seen")"),
            Check("\(c): bits outside the mask are \(c.mask == nil ? "overwritten" : "kept")",
                  passed: o.systemBitsSurvive == (c.mask != nil), detail: "ESP mark \(o.espMark.map(hex) ?? "not seen"), west's SA counted \(o.westOutPackets) packet(s)"),
        ]
    }

    public static func cases(styles: [TunnelStyle] = TunnelStyle.allCases) -> [Case] {
        styles.flatMap { s in ScenarioFamily.allCases.flatMap { f in [Case(style: s, family: f, mask: ruleMask), Case(style: s, family: f, mask: nil)] } }
    }

    public static let definition = ScenarioDefinition(
        name: name,
        summary: "an SA's output mark (with and without a mask) steers its ESP through an fwmark rule to table 50; bits outside the mask survive",
        topology: "output-mark",
        unmetRequirement: { unmet(TunnelStyle.policy.requirements(.ipv4)) },
        checks: { lab in
            var out: [Check] = []
            var port: UInt16 = 7500
            // Every style and family the kernel has; the others are named, not hidden.
            for c in cases() {
                port += 1
                if let missing = unmet(c.style.requirements(c.family)) {
                    out.append(Check("\(c): not run", passed: true, detail: "skipped: \(missing)"))
                    continue
                }
                out += checks(try observe(lab, c, port: port))
            }
            // Deliberately broken: an output mark the rule does not want must show up as a failure.
            let broken = try observe(lab, Case(style: .policy, family: .ipv4, mask: ruleMask, value: 0x200), port: 7599)
            out.append(Check("broken variant (output mark 0x200/0xff00) is caught", passed: !broken.evaluation.passed && !broken.steeredThroughNic,
                             detail: broken.evaluation.report.split(separator: "\n").prefix(3).joined(separator: " | ")))
            return out
        })
}

extension MarkTunnel {
    /// Removes what `install` made: SAs, policies and devices (with their routes) on both ends.
    /// Equivalent to `ip xfrm state flush; ip xfrm policy flush; ip link del DEV`.
    public static func remove(_ lab: Lab, _ t: MarkTunnel) throws {
        for end in [t.left, t.right] {
            let ns = try lab.namespace(end.host)
            let xfrm = try ns.xfrmSocket()
            defer { xfrm.close() }
            try xfrm.batch([XfrmStateRequest.flush(namespace: ns.name), XfrmPolicyRequest.flush(namespace: ns.name)])
            if end.style != .policy {
                try ns.route.request(LinkRequest.delete(namespace: ns.name, name: end.device))
            }
        }
    }
}
