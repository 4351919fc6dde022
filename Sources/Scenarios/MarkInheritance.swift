import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Topology
import Xfrm

/// Scenario 2: multihoming and mark inheritance. gw has two upstreams; the usual recipe marks
/// incoming ESP by the upstream it came in on and saves the mark in the connection
///
///     iptables -t mangle -A PREROUTING -i up1 -p esp -j MARK --set-mark 0x1
///     iptables -t mangle -A PREROUTING -i up2 -p esp -j MARK --set-mark 0x2
///     iptables -t mangle -A PREROUTING -j CONNMARK --save-mark
///     iptables -t mangle -A OUTPUT -j CONNMARK --restore-mark
///
/// (loaded here as the same rules in nftables), with `fwmark 0x2 lookup 2` sending marked
/// packets out through up2. The questions, asked of the kernel for VTI and for xfrm interfaces:
/// does the decrypted packet keep the mark? does the reply get it (restored from its own
/// connection, which only has it if the decrypted packet kept it)? does the reply's ESP carry it
/// and leave through the upstream the request came in on? The answers are read from NFLOG traces
/// on gw; none is written in here.
///
/// A second recipe restores the mark on ESP only (`-p esp -j CONNMARK --restore-mark`): the
/// reply then leaves the tunnel unmarked and its ESP gets the mark from the ESP connection in
/// OUTPUT, where a changed mark makes netfilter route the packet again.
public enum MarkInheritance {
    public static let vti = definition(.vti)
    public static let xfrmi = definition(.xfrmi)

    public static func name(_ style: Tunnel.Style) -> String { "mark-inheritance-\(style.rawValue)" }

    static func definition(_ style: Tunnel.Style) -> ScenarioDefinition {
        ScenarioDefinition(
            name: name(style),
            summary: "ESP marked per upstream on a multihomed gw (MARK + CONNMARK): does the decrypted packet keep the mark, does the reply get it, does the reply's ESP leave through the upstream it came in on? (\(style == .vti ? "VTI" : "xfrm interface"))",
            topology: "multihomed-\(style.rawValue)",
            unmetRequirement: { unmetRequirement(style) },
            checks: { lab in try checks(lab, style: style) })
    }

    /// Why this kernel cannot run the scenario for `style` (the capability and its answer), or nil.
    public static func unmetRequirement(_ style: Tunnel.Style) -> String? {
        let needed: [Capability.Name] = [.esp, style == .vti ? .vti : .xfrmInterface, .nftables, .conntrackMark]
        return needed.map(Capabilities.capability).first { !$0.available }?.skipReason
    }

    static let peerPublic: [UInt8] = [192, 1, 2, 45]
    static let gwPublic: [UInt8] = [192, 0, 2, 1]

    /// How gw restores the saved mark in OUTPUT.
    public enum Restore: String, Sendable, CaseIterable, CustomStringConvertible {
        /// `-A OUTPUT -j CONNMARK --restore-mark`: every packet (the recipe as usually written).
        case all
        /// `-A OUTPUT -p esp -j CONNMARK --restore-mark`: ESP only.
        case espOnly = "esp-only"
        /// No restore at all: the deliberately broken variant.
        case none
        public var description: String { rawValue }
    }

    /// The recipe on gw, as nftables rules.
    public static func gwRules(restore: Restore = .all) -> String {
        let output: String
        switch restore {
        case .all: output = "meta mark set ct mark"
        case .espOnly: output = "meta l4proto esp meta mark set ct mark"
        case .none: output = ""
        }
        return """
        table inet multihome
        delete table inet multihome
        table inet multihome {
          chain prerouting {
            type filter hook prerouting priority mangle; policy accept;
            meta l4proto esp iifname "up1" meta mark set 0x1
            meta l4proto esp iifname "up2" meta mark set 0x2
            ct mark set meta mark
          }
          chain output {
            type route hook output priority mangle; policy accept;
            \(output)
          }
        }
        """
    }

    /// inet sends peer's ESP to gw through upstream `n` (1 or 2): it marks it 0x2 for up2.
    public static func chooseUpstream(_ lab: Lab, _ n: Int) throws {
        _ = try lab.namespace("inet").check(["nft", "-f", "-"], input: """
        table ip upstream
        delete table ip upstream
        table ip upstream {
          chain prerouting {
            type filter hook prerouting priority mangle; policy accept;
            ip protocol esp ip daddr \(formatAddress(gwPublic)) meta mark set \(n)
          }
        }
        """)
    }

    /// What one exchange (peer's subnet → gw's subnet, answered by gw) showed on gw.
    public struct Observation: Sendable, CustomStringConvertible {
        public var style: Tunnel.Style
        public var family: IPAddress.Family
        /// The upstream inet sent the request's ESP through (1 or 2), and its mark.
        public var upstream: Int
        public var trip: RoundTrip
        public var trace: Trace
        /// gw's sightings: the request's ESP coming in, the decrypted request, the reply before
        /// encryption (in OUTPUT, after the restore), the reply's ESP going out.
        public var incomingESP: Hop?
        public var decrypted: Hop?
        public var reply: Hop?
        public var outgoingESP: Hop?

        var markValue: UInt32 { UInt32(upstream) }

        /// The kernel's answers (nil: the packet was not seen, no answer).
        public var decryptedKeepsMark: Bool? { decrypted.map { $0.mark & 0xff == markValue } }
        public var replyGetsMark: Bool? { reply.map { $0.mark & 0xff == markValue } }
        public var replyESPKeepsMark: Bool? { outgoingESP.map { $0.mark & 0xff == markValue } }
        public var replyESPLeavesWhereItCameIn: Bool? { outgoingESP.map { $0.outInterface == "up\(upstream)" } }

        static func word(_ b: Bool?) -> String { b.map { $0 ? "yes" : "no" } ?? "not seen" }

        public var description: String {
            "\(style) \(family) via up\(upstream): decrypted keeps mark: \(Self.word(decryptedKeepsMark)) (\(decrypted.map { "mark 0x\(String($0.mark, radix: 16)) in \($0.inInterface ?? "?")" } ?? "-")); "
                + "reply gets it: \(Self.word(replyGetsMark)) (\(reply.map { "mark 0x\(String($0.mark, radix: 16))" } ?? "-")); "
                + "reply's ESP keeps it: \(Self.word(replyESPKeepsMark)), leaves via up\(upstream): \(Self.word(replyESPLeavesWhereItCameIn)) (\(outgoingESP.map { "mark 0x\(String($0.mark, radix: 16)) out \($0.outInterface ?? "?")" } ?? "-"))"
        }
    }

    static func inner(_ host: String, _ family: IPAddress.Family) -> [UInt8] {
        switch (host, family) {
        case ("peer", .ipv4): return [10, 1, 0, 1]
        case ("gw", .ipv4): return [10, 2, 0, 1]
        case ("peer", _): return parseAddress("2001:db8:1::1")!
        default: return parseAddress("2001:db8:2::1")!
        }
    }

    /// Sends UDP from peer's subnet to gw's, with inet steering the ESP through upstream `n`,
    /// traced on gw and inet; reads gw's four sightings out of the trace.
    public static func observe(_ lab: Lab, style: Tunnel.Style, family: IPAddress.Family, upstream n: Int, port: UInt16) throws -> Observation {
        try chooseUpstream(lab, n)
        let peer = inner("peer", family), gw = inner("gw", family)
        let (trip, trace) = try lab.trace(hosts: ["gw", "inet"]) {
            try Echo.udp(from: lab.namespace("peer"), to: lab.namespace("gw"), destination: gw, port: port, source: peer, timeout: 3)
        }
        let device = style == .vti ? "vti-peer-gw" : "xfrm-peer-gw"
        let onGW = trace.hops(on: "gw")
        let incoming = onGW.first { $0.hook == .prerouting && HopPattern.on("gw").esp(from: peerPublic, to: gwPublic).matches($0) }
        let decrypted = onGW.first { $0.hook == .prerouting && $0.inInterface == device
            && HopPattern.on("gw").udp(from: peer, to: gw, port: port).matches($0) }
        let reply = onGW.first { $0.hook == .output && HopPattern.on("gw").udp(from: gw, to: peer).matches($0) }
        let outgoing = onGW.first { $0.hook == .postrouting && HopPattern.on("gw").esp(from: gwPublic, to: peerPublic).matches($0) }
        return Observation(style: style, family: family, upstream: n, trip: trip, trace: trace, incomingESP: incoming,
                           decrypted: decrypted, reply: reply, outgoingESP: outgoing)
    }

    /// What the recipe does on any kernel (measured on 6.1 and 6.12): ESP through up`n` is marked
    /// `n`, the request is decrypted and answered, and the reply's ESP carries mark `n` out of
    /// gw. Where that ESP leaves is one of the questions, not part of this.
    public static func recipeExpectation(style: Tunnel.Style, family: IPAddress.Family, upstream n: Int, port: UInt16) -> PathExpectation {
        let peer = inner("peer", family), gw = inner("gw", family)
        return PathExpectation("ESP in through up\(n) is marked 0x\(n), answered, and its answer's ESP carries 0x\(n) (\(style), \(family))")
            .then(.on("inet", .forward).esp(from: peerPublic, to: gwPublic).out("isp\(n)"))
            .then(.on("gw", .prerouting).esp(from: peerPublic, to: gwPublic).in("up\(n)").mark(UInt32(n), mask: 0xff))
            .then(.on("gw", .input).udp(from: peer, to: gw, port: port))
            .then(.on("gw", .output).udp(from: gw, to: peer))
            .then(.on("gw", .postrouting).esp(from: gwPublic, to: peerPublic).mark(UInt32(n), mask: 0xff))
    }

    public static func checks(_ lab: Lab, style: Tunnel.Style) throws -> [Check] {
        var out: [Check] = []
        var port: UInt16 = 7700
        for restore in [Restore.all, .espOnly] {
            _ = try lab.namespace("gw").check(["nft", "-f", "-"], input: gwRules(restore: restore))
            for family in [IPAddress.Family.ipv4, .ipv6] {
                for n in [1, 2] {
                    port += 1
                    let o = try observe(lab, style: style, family: family, upstream: n, port: port)
                    let verdict = recipeExpectation(style: style, family: family, upstream: n, port: port).evaluate(o.trace)
                    out.append(Check("restore \(restore), \(family), ESP in through up\(n): marked, answered, the answer's ESP marked 0x\(n)",
                                     passed: o.trip.answered && verdict.passed, detail: "\(o.trip); \(verdict.report)"))
                    // The answers are what the trace shows; the check is that each was seen and
                    // they hang together: the reply's own connection can only give back a mark
                    // the decrypted request kept (restore all), and gets none with restore esp-only.
                    let seen = o.decryptedKeepsMark != nil && o.replyGetsMark != nil && o.replyESPLeavesWhereItCameIn != nil
                    let consistent = restore == .all ? o.decryptedKeepsMark == o.replyGetsMark : o.replyGetsMark == false
                    out.append(Check("restore \(restore), \(family), via up\(n): the kernel's answers", passed: seen && consistent, detail: o.description))
                }
            }
        }
        return out
    }
}
