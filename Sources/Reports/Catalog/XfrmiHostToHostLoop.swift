import CNetlink
import Foundation
import Glibc
import Lab
import Netlink
import Probes
import Xfrm

/// libreswan's XFRM-interface notes: a host-to-host (/32-to-/32) tunnel over an xfrm interface
/// routes the peer's address into the interface, and so also the ESP packets to that address:
/// the kernel finds its own device again ("Local routing loop detected!") and drops. The notes'
/// remedy: the SA marks what it emits (output mark) and the route into the interface sits in its
/// own table, looked up only for packets without that mark. Both are shown: the loop with the
/// plain route, traffic answered with the mark and the rule. Every kernel loops (REPRODUCES).
enum XfrmiHostToHostLoop {
    struct Side { var host: String; var me: [UInt8]; var peer: [UInt8] }

    static let reproduction = Reproduction("xfrmi-host-to-host-loop") { lab in
        let west = Side(host: "west", me: [192, 1, 2, 45], peer: [192, 1, 2, 23])
        let east = Side(host: "east", me: [192, 1, 2, 23], peer: [192, 1, 2, 45])
        let keyWE = XfrmKey.random(bits: 160), keyEW = XfrmKey.random(bits: 160)
        let mark = XfrmMark(0x9)
        func sa(from: [UInt8], to: [UInt8], spi: UInt32, key: XfrmKey, outputMark: XfrmMark?) -> XfrmState {
            XfrmState(source: from, destination: to, spi: spi, reqid: 9, algorithms: [.aesGCM(key: key)], outputMark: outputMark, interfaceID: 9)
        }
        func states(_ s: Side, outputMark: XfrmMark?) -> [XfrmState] {
            let we = sa(from: west.me, to: east.me, spi: 0x901, key: keyWE, outputMark: s.host == "west" ? outputMark : nil)
            let ew = sa(from: east.me, to: west.me, spi: 0x902, key: keyEW, outputMark: s.host == "east" ? outputMark : nil)
            return [we, ew]
        }
        let hostRoute = { (s: Side) in XfrmSelector(source: s.me, sourcePrefixLength: 32, destination: s.peer, destinationPrefixLength: 32) }

        // Each side: ipsec9 (if_id 9) on eth1, both SAs, policies out and in with if_id 9.
        for s in [west, east] {
            let ns = try lab.namespace(s.host)
            guard let eth1 = try ns.route.link(named: "eth1") else { throw Inconclusive("no eth1 on \(s.host)") }
            try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec9", interfaceID: 9, link: eth1.index, linkName: "eth1"))
            let xfrm = try ns.xfrmSocket()
            defer { xfrm.close() }
            for state in states(s, outputMark: nil) { try xfrm.request(XfrmStateRequest.add(namespace: ns.name, state)) }
            let back = XfrmSelector(source: s.peer, sourcePrefixLength: 32, destination: s.me, destinationPrefixLength: 32)
            try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: hostRoute(s), direction: .out, interfaceID: 9,
                templates: [XfrmTemplate(source: s.me, destination: s.peer, reqid: 9)])))
            try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: back, direction: .in, interfaceID: 9,
                templates: [XfrmTemplate(source: s.peer, destination: s.me, reqid: 9)])))
        }
        func ipsec9(_ s: Side) throws -> LinkInfo {
            guard let l = try lab.namespace(s.host).route.link(named: "ipsec9") else { throw Inconclusive("no ipsec9 on \(s.host)") }
            return l
        }

        // 1. The plain route: the peer's /32 into ipsec9, in the main table.
        for s in [west, east] {
            let ns = try lab.namespace(s.host)
            try ns.route.request(RouteRequest.add(namespace: ns.name, destination: s.peer, prefixLength: 32, outputInterface: try ipsec9(s).index, interfaceName: "ipsec9"))
        }
        let before = try ipsec9(west).statistics
        let looped = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: east.me, port: 7130, timeout: 2)
        let after = try ipsec9(west).statistics
        // Where the loss shows differs by kernel (6.1 counts it as tx dropped; Debian's 5.10 moves
        // none of these counters), so the counters are evidence, not the verdict.
        func delta(_ field: KeyPath<LinkInfo.Statistics, UInt64>) -> UInt64 {
            (after?[keyPath: field] ?? 0) &- (before?[keyPath: field] ?? 0)
        }
        let counters = "tx dropped +\(delta(\.txDropped)), tx errors +\(delta(\.txErrors)), collisions +\(delta(\.collisions))"

        // 2. libreswan's remedy: the SA marks its ESP 0x9, the /32 route moves to table 50, and
        //    `ip rule add prio 100 to PEER/32 not fwmark 0x9 lookup 50` keeps the ESP out of it.
        for s in [west, east] {
            let ns = try lab.namespace(s.host)
            let xfrm = try ns.xfrmSocket()
            defer { xfrm.close() }
            let out = states(s, outputMark: mark).first { $0.source == s.me }!
            try xfrm.request(XfrmStateRequest.delete(namespace: ns.name, destination: out.destination, spi: out.spi))
            try xfrm.request(XfrmStateRequest.add(namespace: ns.name, out))
            let index = try ipsec9(s).index
            try ns.route.request(RouteRequest.add(namespace: ns.name, destination: s.peer, prefixLength: 32, outputInterface: index, interfaceName: "ipsec9", table: 50))
            try ns.route.request(Request(type: UInt16(RTM_DELROUTE), flags: .modify, header: {
                var h = rtmsg(); h.rtm_family = UInt8(AF_INET); h.rtm_dst_len = 32; h.rtm_scope = UInt8(RT_SCOPE_NOWHERE.rawValue); h.rtm_table = UInt8(RT_TABLE_MAIN.rawValue); return h
            }(), attributes: [Attribute(UInt16(RTA_DST.rawValue), bytes: s.peer)], summary: "ip -n \(ns.name) route del \(formatAddress(s.peer))/32"))
            try ns.route.request(RuleRequest.add(namespace: ns.name, family: UInt8(AF_INET), priority: 100, invert: true,
                                                 destination: (s.peer, 32), fwmark: 0x9, fwmask: 0xffffffff, table: 50,
                                                 summary: "rule add prio 100 to \(formatAddress(s.peer))/32 not fwmark 0x9 lookup 50"))
        }
        let fixed = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: east.me, port: 7131, timeout: 5)
        guard fixed.answered else { throw Inconclusive("the remedy did not carry the traffic either: \(fixed)") }
        let xfrm = try lab.namespace("west").xfrmSocket()
        defer { xfrm.close() }
        let used = try xfrm.xfrmStates().first { $0.spi == 0x901 }?.counters.packets ?? 0
        // The loop: the datagram is lost with the plain route and carried once the only change is
        // the remedy's mark and rule.
        return Observation(bugPresent: !looped.delivered && used > 0, evidence: [
            "route 192.1.2.23/32 dev ipsec9 (main): \(looped); west ipsec9 \(counters)",
            "with output-mark 0x9, the route in table 50 and `not fwmark 0x9 lookup 50`: \(fixed); west's SA 0x901 carried \(used) packet(s)",
        ])
    }
}
