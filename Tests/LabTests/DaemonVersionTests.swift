import Daemons
import Foundation
import Glibc
import Lab
import Netlink
import Probes
import Topology
import Testing
import XfrmLabTesting

/// The daemon releases people run, with each other: this machine's (bookworm: strongSwan 5.9.8,
/// libreswan 4.10) and trixie's (strongSwan 6.0.1, libreswan 5.2, from the cached roots
/// `make daemon-roots` builds), each initiating to each, in every connection style, IPv4, with the
/// kernel's ESP. Each case is `DaemonInteropTests.run`: the tunnel up, UDP answered through it,
/// ESP with the daemons' SPI on the wire, the SAs and policies read back with the marks and if_id
/// each release sets, nothing left after stop.
///
/// `make test` runs these on Debian's 6.12 (trixie's own kernel) and leaves them out of 6.1's
/// whole suite (`--except`), which runs bookworm's pairs in both families.
@Suite("IKE daemons of two releases with each other (kernel ESP)", .tags(.privileged, .daemons, .vm),
       .needsNamespaces, .needsDaemon(.strongSwan), .needsDaemon(.libreswan),
       .needsDaemon(.strongSwan, from: trixieStrongSwanRoot), .needsDaemon(.libreswan, from: trixieLibreswanRoot),
       .requires(.esp))
struct DaemonVersionTests {
    typealias Case = DaemonInteropTests.Case
    let interop = DaemonInteropTests()

    /// strongSwan ↔ libreswan where at least one end is trixie's, both directions.
    static let crossPairs: [Case] = {
        let (sw6, ls5) = (trixieStrongSwanRoot, trixieLibreswanRoot)
        let pairs = [
            DaemonPair(initiator: .strongSwan, responder: .libreswan, initiatorFrom: sw6, responderFrom: ls5),
            DaemonPair(initiator: .libreswan, responder: .strongSwan, initiatorFrom: ls5, responderFrom: sw6),
            DaemonPair(initiator: .strongSwan, responder: .libreswan, initiatorFrom: sw6),
            DaemonPair(initiator: .libreswan, responder: .strongSwan, responderFrom: sw6),
            DaemonPair(initiator: .strongSwan, responder: .libreswan, responderFrom: ls5),
            DaemonPair(initiator: .libreswan, responder: .strongSwan, initiatorFrom: ls5),
        ]
        return pairs.map { Case(pair: $0, family: .ipv4) }
    }()

    /// The same daemon, the two releases, both directions.
    static let samePairs: [Case] = {
        let (sw6, ls5) = (trixieStrongSwanRoot, trixieLibreswanRoot)
        return [
            DaemonPair(initiator: .strongSwan, responder: .strongSwan, initiatorFrom: sw6),
            DaemonPair(initiator: .strongSwan, responder: .strongSwan, responderFrom: sw6),
            DaemonPair(initiator: .libreswan, responder: .libreswan, initiatorFrom: ls5),
            DaemonPair(initiator: .libreswan, responder: .libreswan, responderFrom: ls5),
        ].map { Case(pair: $0, family: .ipv4) }
    }()

    @Test("policy-based tunnel", arguments: crossPairs)
    func policy(_ c: Case) async throws {
        try await interop.run(c, style: .policy)
    }

    @Test("policy-based tunnel with a mark", .requires(.policyMark), arguments: crossPairs)
    func markedPolicy(_ c: Case) async throws {
        try await interop.run(c, style: .markedPolicy(mark: 0x10))
    }

    @Test("route-based tunnel through VTI devices", .requires(.vti), arguments: crossPairs)
    func vti(_ c: Case) async throws {
        try await interop.run(c, style: .vti(key: 0x20))
    }

    @Test("route-based tunnel through xfrm interfaces", .requires(.xfrmInterface), arguments: crossPairs + samePairs)
    func xfrmInterface(_ c: Case) async throws {
        try await interop.run(c, style: .xfrmInterface(id: 7))
    }
}

/// The output mark set through the daemon: charon's `set_mark_out` puts XFRMA_SET_MARK (with its
/// mask) on the outbound SA it negotiates, and the ESP leaving west carries it — seen by NFLOG at
/// west's postrouting and steered by west's rule `fwmark 0x100/0xff00 lookup 50` through nic, as in
/// the output-mark scenario (Topologies/output-mark.yaml), whose SAs the harness installs itself.
/// Both charon releases; the responder is this machine's charon. A value the rule does not want
/// (0x200) must fail the same path: the check is shown to fire.
@Suite("IKE daemons: an output mark set through the daemon (kernel ESP)", .tags(.privileged, .daemons, .vm),
       .needsNamespaces, .needsDaemon(.strongSwan), .needsDaemon(.strongSwan, from: trixieStrongSwanRoot), .requires(.esp),
       .requires(.outputMarkMask), .requires(.nflog))
struct DaemonOutputMarkTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var from: String?
        var value: UInt32
        var testDescription: String {
            "\(DaemonRelease.name(.strongSwan, from)) set_mark_out=0x\(String(value, radix: 16))/0xff00"
        }
    }

    static let cases = [nil, trixieStrongSwanRoot].flatMap { from in [Case(from: from, value: 0x100), Case(from: from, value: 0x200)] }

    @Test("charon's set_mark_out is on the SA and on the ESP leaving west; the rule's mark goes through nic, another does not",
          arguments: cases)
    func setMarkOut(_ c: Case) async throws {
        let topology = try Topology.load(path: repositoryRoot + "/Topologies/output-mark.yaml")
        try await topology.withLab { lab in
            var config = try IKEConfiguration.between(lab, "west", "east", subnets: true)
            config.outputMark = Mark(c.value, mask: 0xff00)
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            let westLAN = try lab.address(of: "west", interface: "eth0").bytes
            let eastLAN = try lab.address(of: "east", interface: "eth0").bytes
            var peer = config.mirrored
            peer.outputMark = nil
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: config, installation: c.from),
                                        DaemonSpec(.strongSwan, host: "east", configuration: peer), timeout: 60) { tunnel in
                recordTiming("\(c.testDescription)", tunnel)
                let child = try #require(tunnel.initiatorSA.children.first { $0.installed })
                let spi = try #require(child.outboundSPI)
                // Read back: the daemon put the output mark, with its mask, on its outbound SA only.
                let states = try kernelXfrm(west).states.filter { $0.proto == .esp }
                let out = try #require(states.first { $0.spi == spi }, "west's SAs: \(states)")
                #expect(out.outputMark == XfrmMark(c.value, mask: 0xff00), "west's outbound SA: \(out)")
                #expect(states.filter { $0.spi != spi }.allSatisfy { $0.outputMark == nil }, "west's inbound SA: \(states)")

                // The cleartext carries the system's bit 0x1; the ESP gets (0x1 & ~0xff00) | value.
                let (trip, trace) = try lab.trace(hosts: ["west", "nic", "east"]) {
                    try Echo.udp(from: west, to: east, destination: eastLAN, port: 7100, source: westLAN, mark: 0x1, timeout: 3)
                }
                let path = PathExpectation("ESP of \(c.testDescription) marked 0x\(String(c.value | 1, radix: 16)), through nic")
                    .then(.on("west", .output).udp(to: eastLAN, port: 7100).mark(0x1))
                    .then(.on("west", .postrouting).esp(spi: spi).mark(c.value | 1).out("eth1"))
                    .then(.on("nic", .forward).esp(spi: spi).in("eth1").out("eth1"))
                    .then(.on("east", .input).udp(to: eastLAN, port: 7100))
                let verdict = path.evaluate(trace)
                if c.value == 0x100 {
                    #expect(trip.answered, "\(trip)")
                    #expect(verdict.passed, "\(verdict.report)")
                } else {
                    // 0x200 is not the rule's: the ESP goes straight to east, and the path says so.
                    #expect(!verdict.passed, "a mark the rule does not want went through nic: \(verdict.report)")
                    #expect(!trace.hops(on: "nic").contains { $0.hook == .forward && $0.packet.spi == spi }, "nic forwarded it")
                    #expect(trace.hops(on: "west").contains { $0.hook == .postrouting && $0.packet.spi == spi && $0.mark == 0x201 },
                            "west's ESP without the daemon's mark 0x201")
                }
            }
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]) == [])
        }
    }
}

/// The xfrmi road warrior with SAs charon negotiates: west routes everything but what carries
/// 0x42 into its xfrm interface (`not fwmark 0x42 lookup 50`, table 50: east's public address
/// into ipsec7), charon marks its IKE 0x42 (socket-default `fwmark`) and puts 0x42 on its
/// outbound SA (`set_mark_out`), so the ESP leaves through eth1 instead of looping back into
/// ipsec7 — the xfrmi-road-warrior scenario's not-fwmark design (Topologies/xfrmi-road-warrior.yaml),
/// /32-to-/32, negotiated instead of installed. Without the SA's mark the same design loops: the
/// datagram is not answered and no ESP of the SA leaves west (the scenario's verdict on every kernel).
@Suite("IKE daemons: the xfrmi road warrior with the output mark set through charon (kernel ESP)",
       .tags(.privileged, .daemons, .vm), .needsNamespaces, .needsDaemon(.strongSwan),
       .needsDaemon(.strongSwan, from: trixieStrongSwanRoot), .requires(.esp), .requires(.xfrmInterface),
       .requires(.outputMarkMask), .requires(.nflog))
struct DaemonRoadWarriorTests {
    static let exempt: UInt32 = 0x42, table: UInt32 = 50

    struct Case: Sendable, CustomTestStringConvertible {
        var from: String?
        /// The SA's output mark: 0x42, or none (the broken variant).
        var value: UInt32
        var testDescription: String {
            "\(DaemonRelease.name(.strongSwan, from)) " + (value == 0 ? "without set_mark_out" : "set_mark_out=0x\(String(value, radix: 16))")
        }
    }

    static let cases = [nil, trixieStrongSwanRoot].flatMap { from in [Case(from: from, value: exempt), Case(from: from, value: 0)] }

    @Test("with set_mark_out 0x42 the cleartext goes into ipsec7 and the ESP out of eth1, answered; without it, it loops",
          arguments: cases)
    func roadWarrior(_ c: Case) async throws {
        let topology = try Topology.load(path: repositoryRoot + "/Topologies/xfrmi-road-warrior.yaml")
        try await topology.withLab { lab in
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            let westOuter = try lab.address(of: "west", interface: "eth1"), eastOuter = try lab.address(of: "east", interface: "eth1")
            // /32 to /32: the traffic selectors are the outer addresses themselves.
            var config = try IKEConfiguration.between(lab, "west", "east", style: .xfrmInterface(id: 7))
            config.local.subnets = [CIDR(address: westOuter, prefixLength: 32)]
            config.remote.subnets = [CIDR(address: eastOuter, prefixLength: 32)]
            config.outputMark = c.value == 0 ? nil : Mark(c.value)
            var gateway = config.mirrored
            gateway.style = .policy
            gateway.outputMark = nil
            // The design: everything not marked 0x42 looks up table 50, where the harness puts
            // east's address into ipsec7 when it makes the device for charon.
            try west.route.request(RuleRequest.add(namespace: west.name, family: UInt8(AF_INET), priority: 100, invert: true,
                                                   fwmark: Self.exempt, fwmask: .max, table: Self.table,
                                                   summary: "not fwmark 0x42 lookup 50"))
            let options = StrongSwan.Options(installation: c.from, ikeFwmark: Self.exempt, deviceRouteTable: Self.table)
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: config, strongSwan: options),
                                        DaemonSpec(.strongSwan, host: "east", configuration: gateway), timeout: 60) { tunnel in
                recordTiming("road warrior \(c.testDescription)", tunnel)
                let spi = try #require(tunnel.initiatorSA.children.first { $0.installed }?.outboundSPI)
                let out = try #require(try kernelXfrm(west).states.first { $0.spi == spi })
                #expect(out.interfaceID == 7 && out.outputMark == (c.value == 0 ? nil : XfrmMark(c.value)), "west's outbound SA: \(out)")

                let (trip, trace) = try lab.trace(hosts: ["west", "east"]) {
                    try Echo.udp(from: west, to: east, destination: eastOuter.bytes, port: 7200, source: westOuter.bytes, timeout: 3)
                }
                let path = PathExpectation("road warrior \(c.testDescription): cleartext into ipsec7, ESP marked 0x42 out of eth1")
                    .then(.on("west", .output).udp(to: eastOuter.bytes, port: 7200).out("ipsec7"))
                    .then(.on("west", .postrouting).esp(spi: spi).mark(Self.exempt).out("eth1"))
                    .then(.on("east", .input).udp(to: eastOuter.bytes, port: 7200))
                let verdict = path.evaluate(trace)
                if c.value != 0 {
                    #expect(trip.answered, "\(trip)")
                    #expect(verdict.passed, "\(verdict.report)")
                } else {
                    #expect(!trip.answered, "answered without the SA's mark: \(trip)")
                    #expect(!verdict.passed, "\(verdict.report)")
                    #expect(!trace.hops(on: "west").contains { $0.packet.spi == spi && $0.outInterface == "eth1" },
                            "ESP of the SA left through eth1 without the mark that keeps it out of table 50")
                }
            }
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]) == [])
        }
    }
}
