import Daemons
import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology

/// Scenario 4, the routing half (needs no ESP; runs on any kernel): sockets marked 0x42, like
/// charon's with socket-default `fwmark = 0x42`, bypass table 220 under the rule
/// `not fwmark 0x42 lookup 220`; unmarked traffic takes it. tun0 stands in for charon's TUN device.
@Suite("Scenario daemon-fwmark: a daemon's marked sockets bypass the tunnel's table", .tags(.privileged), .needsNamespaces)
struct DaemonFwmarkTests {
    static func topology() throws -> Topology { try Topology.load(path: topologyFile("daemon-fwmark")) }

    @Test("marked 0x42 goes out eth1 both ways, unmarked into table 220's tun0 both ways; route get agrees",
          arguments: [IPAddress.Family.ipv4, .ipv6])
    func routing(family: IPAddress.Family) async throws {
        try await Self.topology().withLab { lab in
            let o = try DaemonFwmark.observe(lab, family: family)
            let tun0 = try lab.index(of: "tun0", on: "west"), eth1 = try lab.index(of: "eth1", on: "west")
            #expect(o.unmarkedRoute.table == 220 && o.unmarkedRoute.outputInterface == tun0, "\(o.unmarkedRoute)")
            #expect(o.markedRoute.table == RouteRequest.mainTable && o.markedRoute.outputInterface == eth1, "\(o.markedRoute)")
            let east = try lab.namespace("east").name
            #expect(o.daemonTrip.answered && o.daemonTrip.reply == east, "\(o.daemonTrip)")
            #expect(o.trafficTrip.answered, "\(o.trafficTrip)")
            let bypass = try DaemonFwmark.bypassExpectation(lab, family: family).evaluate(o.daemonTrace)
            #expect(bypass.passed, "\(bypass.report)")
            let tunnel = try DaemonFwmark.tunnelExpectation(lab, family: family).evaluate(o.trafficTrace)
            #expect(tunnel.passed, "\(tunnel.report)")
        }
    }

    @Test("broken: the rule without its `not` (`fwmark 0x42 lookup 220`) sends the daemon's own packets into the tunnel, and the trace shows it")
    func ruleWithoutNot() async throws {
        var t = try Self.topology()
        for h in t.hosts.indices { for r in t.hosts[h].rules.indices { t.hosts[h].rules[r].invert = false } }
        try await t.withLab { lab in
            let o = try DaemonFwmark.observe(lab, family: .ipv4)
            #expect(o.markedRoute.table == 220, "\(o.markedRoute)")
            let verdict = try DaemonFwmark.bypassExpectation(lab, family: .ipv4).evaluate(o.daemonTrace)
            #expect(!verdict.passed)
            #expect(verdict.report.contains("missing: west postrouting: udp to 192.1.2.23 port 500 mark 0x42 out eth1"), "\(verdict.report)")
            #expect(verdict.report.contains("actual trace:"))
            // The actual hop, beside the expected one: the marked packet went into tun0.
            #expect(verdict.report.contains("west postrouting: udp 192.1.2.45:") && verdict.report.contains("mark 0x42 out tun0"), "\(verdict.report)")
        }
    }

    @Test("why rp_filter 2: with strict filtering (1) east refuses the daemon's marked exchange on eth1 (even its ARP), since table 220 routes west through tun0")
    func strictReversePath() async throws {
        try await Self.topology().withLab { lab in
            // The kernel uses the larger of all and the device's value: both go to 1.
            try lab.namespace("east").setSysctls([("net.ipv4.conf.all.rp_filter", "1"), ("net.ipv4.conf.eth1.rp_filter", "1")])
            let o = try DaemonFwmark.observe(lab, family: .ipv4)
            #expect(!o.daemonTrip.delivered, "\(o.daemonTrip)")
            let verdict = try DaemonFwmark.bypassExpectation(lab, family: .ipv4).evaluate(o.daemonTrace)
            #expect(!verdict.passed)
            #expect(verdict.report.contains("missing: east input: udp to 192.1.2.23 port 500 in eth1"), "\(verdict.report)")
            // Strict filtering refuses west's ARP requests on eth1 too (their sender's way back is
            // tun0), so nothing of the exchange reaches east's IP layer.
            #expect(!o.daemonTrace.hops.contains { $0.host == "east" && $0.packet.destinationPort == 500 }, "\(o.daemonTrace)")
            #expect(o.daemonTrace.hops.contains { $0.host == "west" && $0.hook == .postrouting && $0.outInterface == "eth1" && $0.mark == 0x42 },
                    "\(o.daemonTrace)")
        }
    }

    @Test("xfrmlab run daemon-fwmark: every check passes")
    func scenario() throws {
        let report = try DaemonFwmark.definition.run(topologyPath: topologyFile("daemon-fwmark"))
        print(report)
        #expect(report.passed, "\(report)")
        #expect(report.checks.count == 9, "\(report)")
    }
}

/// Scenario 4 with daemon-made SAs: charon with kernel-libipsec (ESP in user space, this host's
/// kernel has none) installs the rule and table 220 itself; its own IKE and ESP are marked 0x42
/// and leave through eth1, while the traffic it protects is routed into its TUN device.
@Suite("Scenario daemon-fwmark with charon's own rule and table (kernel-libipsec)", .serialized,
       .tags(.privileged, .daemons), .needsNamespaces, .needsDaemon(.strongSwan), .needsLibIPsec)
struct DaemonFwmarkCharonTests {
    @Test("charon's rule `not fwmark 0x42 lookup 220`: route get, its IKE (a rekey) and ESP out eth1 marked 0x42, the protected datagram into the TUN device")
    func charonMarks() async throws {
        try await daemonTopology().withLab { lab in
            try DaemonLibIPsecTests.prepare(lab)
            let c = try IKEConfiguration.between(lab, "west", "east")
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            let eastAddress = c.remote.address.bytes, westAddress = c.local.address.bytes
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: DaemonLibIPsecTests.libipsec),
                                        DaemonSpec(.strongSwan, host: "east", configuration: c.mirrored, strongSwan: DaemonLibIPsecTests.libipsec)) { tunnel in
                // The rule is charon's, read back from the kernel.
                let rules = try west.route.rules(namespace: west.name)
                #expect(rules.contains { $0.invert && $0.fwmark == DaemonFwmark.daemonMark && $0.table == 220 }, "\(rules)")
                let eth1 = try lab.index(of: "eth1", on: "west")
                let unmarked = try lab.routeGet(on: "west", to: c.remote.address)
                let marked = try lab.routeGet(on: "west", to: c.remote.address, mark: DaemonFwmark.daemonMark)
                #expect(unmarked.table == 220 && unmarked.outputInterface != eth1, "\(unmarked)")
                #expect(marked.table == RouteRequest.mainTable && marked.outputInterface == eth1, "\(marked)")

                let (trip, trace) = try lab.trace(hosts: ["west"]) {
                    try Echo.udp(from: west, to: east, destination: eastAddress, port: 7000)
                }
                #expect(trip.answered, "\(trip)")
                let verdict = PathExpectation("the protected datagram into charon's TUN device, its ESP out eth1 marked 0x42")
                    .then(.on("west", .postrouting).udp(from: westAddress, to: eastAddress, port: 7000).mark(0))
                    .then(.on("west", .postrouting).esp(from: westAddress, to: eastAddress).mark(DaemonFwmark.daemonMark).out("eth1"))
                    .never(.on("west", .postrouting).udp(to: eastAddress, port: 7000).out("eth1"))
                    .evaluate(trace)
                #expect(verdict.passed, "\(verdict.report)")

                // A rekey is IKE traffic from charon's sockets: every packet west sends to east's
                // IKE ports leaves eth1 marked 0x42.
                let (_, ikeTrace) = try lab.trace(hosts: ["west"]) { try tunnel.rekey() }
                let ike = ikeTrace.hops.filter { $0.hook == .postrouting && $0.packet.destination == eastAddress
                    && [500, 4500].contains($0.packet.destinationPort ?? 0) }
                #expect(!ike.isEmpty, "no IKE seen during the rekey: \(ikeTrace)")
                #expect(ike.allSatisfy { $0.mark == DaemonFwmark.daemonMark && $0.outInterface == "eth1" }, "\(ikeTrace)")
                print("charon: \(unmarked) / \(marked); IKE during the rekey: \(ike.count) packets, all marked 0x42 out eth1")
            }
        }
    }
}
