import Daemons
import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// strongSwan and libreswan, each with the other and with itself, in every connection style,
/// over IPv4 and IPv6, with the kernel's ESP: these run in a VM (`make test` boots Debian's
/// kernels) and skip, with the probed reason, on a kernel without ESP.
///
/// Each case: both daemons up (timed), UDP between the private subnets answered, ESP (not the
/// UDP) on the wire, the daemons' SAs and policies read back over the harness's own netlink with
/// the style's mark or if_id, and nothing left in the kernel once the daemons are stopped.
@Suite("IKE daemons with each other (kernel ESP)", .serialized, .tags(.privileged, .daemons, .vm),
       .needsNamespaces, .needsDaemon(.strongSwan), .needsDaemon(.libreswan), .requires(.esp))
struct DaemonInteropTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var pair: DaemonPair
        var family: IPAddress.Family
        var testDescription: String { "\(pair) \(family)" }
    }

    /// Every pair over both families; libreswan's VTI is IPv4 only (its updown script makes the
    /// device with `ip tunnel add … mode vti`).
    static func cases(ipv6VTI: Bool = true) -> [Case] {
        DaemonPair.all.flatMap { pair in
            [IPAddress.Family.ipv4, .ipv6].compactMap { family in
                if !ipv6VTI && family == .ipv6 && (pair.initiator == .libreswan || pair.responder == .libreswan) { return nil }
                return Case(pair: pair, family: family)
            }
        }
    }

    @Test("policy-based tunnel between the private subnets", arguments: cases())
    func policy(_ c: Case) async throws {
        try await run(c, style: .policy)
    }

    @Test("policy-based tunnel with a mark: marked traffic is encrypted, unmarked is not let through",
          .requires(.policyMark), arguments: cases())
    func markedPolicy(_ c: Case) async throws {
        try await run(c, style: .markedPolicy(mark: 0x10))
    }

    @Test("route-based tunnel through VTI devices", .requires(.vti), .requires(.vti6), arguments: cases(ipv6VTI: false))
    func vti(_ c: Case) async throws {
        try await run(c, style: .vti(key: 0x20))
    }

    /// The xfrm-interface, certificate, rekey and topology-file cases: `DaemonInteropMoreTests`
    /// runs them beside this suite (each suite one pair at a time, so two pairs at once: under
    /// TCG the cases wait on the daemons more than they use the CPU).
    func fromTopologyFile() async throws {
        let topology = try Topology.load(path: topologyFile("west-east-ike"))
        try await topology.withLab { lab in
            // Nothing static was installed: the kernel has no SA until the daemons negotiate one.
            #expect(try kernelXfrm(lab.namespace("west")).states.isEmpty)
            try await lab.withIKETunnels { tunnels in
                let tunnel = try #require(tunnels.tunnel("west-east"))
                recordTiming("topology west-east-ike (strongSwan→libreswan xfrmi certificates)", tunnel)
                let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
                let westLAN = try lab.address(of: "west", interface: "eth0").bytes
                let eastLAN = try lab.address(of: "east", interface: "eth0").bytes
                let (trip, sent) = try wire(lab, hosts: ["west"]) {
                    try Echo.udp(from: west, to: east, destination: eastLAN, source: westLAN, timeout: 5)
                }
                #expect(trip.answered, "\(trip)")
                #expect(sent["west"]?.contains { $0.esp != nil } == true, "west sent no ESP: \(sent["west"] ?? [])")
                #expect(sent["west"]?.contains { $0.udpPorts?.destination == 7000 } == false, "the datagram left in the clear")
                for ns in [west, east] {
                    let states = try kernelXfrm(ns).states.filter { $0.proto == .esp }
                    #expect(states.count >= 2 && states.allSatisfy { $0.interfaceID == 7 }, "\(ns.name): \(states)")
                }
            }
            for ns in [try lab.namespace("west"), try lab.namespace("east")] {
                #expect(try kernelXfrm(ns).states.isEmpty, "\(ns.name) kept SAs after the daemons stopped")
            }
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]) == [])
        }
    }

    func run(_ c: Case, style: ConnectionStyle, certificates: Bool = false, rekey: Bool = false) async throws {
        try await daemonTopology().withLab { lab in
            var ca: CertificateAuthority?
            defer { ca?.remove() }
            var authentication = Authentication.psk(.random())
            if certificates {
                ca = try CertificateAuthority(name: lab.run.prefix + "ca")
                authentication = .certificates(ca!)
            }
            var config = try IKEConfiguration.between(lab, "west", "east", family: c.family, subnets: true, style: style,
                                                      authentication: authentication)
            if certificates {
                config.local.identity = "west.xfrmlab.test"
                config.remote.identity = "east.xfrmlab.test"
            }
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            let westLAN = try lab.address(of: "west", interface: "eth0", family: c.family).bytes
            let eastLAN = try lab.address(of: "east", interface: "eth0", family: c.family).bytes
            let (westOuter, eastOuter) = (config.local.address.bytes, config.remote.address.bytes)
            let mark: UInt32? = { if case .markedPolicy(let m) = style { return m } else { return nil } }()

            try await lab.withIKETunnel(DaemonSpec(c.pair.initiator, host: "west", configuration: config, installation: c.pair.initiatorFrom),
                                        DaemonSpec(c.pair.responder, host: "east", configuration: config.mirrored, installation: c.pair.responderFrom),
                                        timeout: 60) { tunnel in
                recordTiming("\(c.pair) \(style.name) \(c.family)\(certificates ? " certificates" : "")", tunnel)
                var child = try #require(tunnel.initiatorSA.children.first { $0.installed })
                if rekey { child = try tunnel.rekey(timeout: 40).after }

                let ((trip, trace), sent) = try wire(lab, hosts: ["west", "east"]) {
                    try lab.trace(hosts: ["west", "east"]) {
                        try Echo.udp(from: west, to: east, destination: eastLAN, source: westLAN, mark: mark, replyMark: mark, timeout: 5)
                    }
                }
                #expect(trip.answered, "\(trip)")
                // The kernel's path: the datagram (marked, for a marked policy) leaves west's stack,
                // ESP with the daemon's SPI goes out of eth1, east decrypts it and delivers it.
                var path = PathExpectation("\(c.pair) \(style): west's LAN → east's LAN in ESP")
                if let mark { path = path.then(.on("west", .output).udp(to: eastLAN, port: 7000).mark(mark)) }
                path = path
                    .then(HopPattern.on("west", .postrouting).esp(spi: child.outboundSPI, from: westOuter, to: eastOuter).out("eth1"))
                    .then(.on("east", .prerouting).esp(spi: child.outboundSPI, from: westOuter, to: eastOuter).in("eth1"))
                    .then(.on("east", .input).udp(from: westLAN, to: eastLAN, port: 7000))
                let verdict = path.evaluate(trace)
                #expect(verdict.passed, "\(verdict.report)")
                // The wire: what west and east sent is ESP between the outer addresses, never the
                // datagram or its answer.
                for (host, packets) in sent {
                    let cleartext = packets.filter { $0.udpPorts?.source == 7000 || $0.udpPorts?.destination == 7000 }
                    #expect(cleartext.isEmpty, "\(host) sent the datagram in the clear: \(cleartext)")
                    #expect(packets.contains { $0.esp != nil }, "\(host) sent no ESP: \(packets)")
                }
                #expect(sent["west"]?.contains { $0.esp?.spi == child.outboundSPI } == true,
                        "no ESP with west's outbound SPI \(child.outboundSPI.map { String($0, radix: 16) } ?? "?") on the wire: \(sent["west"] ?? [])")

                // The daemons' SAs and policies, read back from the kernel over netlink.
                try expectKernelState(west, daemon: c.pair.initiator, from: c.pair.initiatorFrom, style: style, outbound: eastOuter,
                                      inbound: westOuter, who: "west (\(DaemonRelease.name(c.pair.initiator, c.pair.initiatorFrom)))")
                try expectKernelState(east, daemon: c.pair.responder, from: c.pair.responderFrom, style: style, outbound: westOuter,
                                      inbound: eastOuter, who: "east (\(DaemonRelease.name(c.pair.responder, c.pair.responderFrom)))")
                for d in [tunnel.initiator, tunnel.responder] {
                    if let pluto = d as? Libreswan { print("\(pluto.host) whack --showstates:\n\(try pluto.whack(["--showstates"]).standardOutput)") }
                }

                if mark != nil {
                    // Unmarked, the same datagram takes no policy out and leaves in the clear, and
                    // east's inbound policy (which wants ESP from west's LAN) drops it.
                    let (plain, plainSent) = try wire(lab, hosts: ["west"]) {
                        try Echo.udp(from: west, to: east, destination: eastLAN, port: 7001, source: westLAN, timeout: 1)
                    }
                    #expect(!plain.delivered, "unmarked traffic must not pass: \(plain)")
                    #expect(plainSent["west"]?.contains { $0.udpPorts?.destination == 7001 && $0.esp == nil } == true,
                            "the unmarked datagram should leave west in the clear: \(plainSent["west"] ?? [])")
                }
            }
            // Stopped daemons leave the kernel as they found it, but libreswan 4.x, which leaves
            // its six IPv6 neighbour-discovery bypass policies (5.2 removes them): pinned both ways.
            for (ns, kind, from) in [(west, c.pair.initiator, c.pair.initiatorFrom), (east, c.pair.responder, c.pair.responderFrom)] {
                let kernel = try kernelXfrm(ns)
                let bypass = kernel.policies.filter(isNeighbourDiscoveryBypass)
                let expected = DaemonInteropTests.leavesBypassPolicies(kind, from) ? 6 : 0
                #expect(bypass.count == expected,
                        "\(ns.name): \(DaemonRelease.name(kind, from)) (\(style.name)) left \(bypass.count) IPv6 neighbour-discovery bypass policies, expected \(expected)")
                let left = kernel.policies.filter { p in !bypass.contains(p) }
                #expect(kernel.states.isEmpty && left.isEmpty, "\(ns.name) after the daemons stopped: \(kernel.states) \(left)")
            }
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]) == [])
        }
    }

    /// Whether the release leaves its IPv6 neighbour-discovery bypass policies behind at stop:
    /// libreswan 4.x does (4.10: six, every style and family), 5.2 does not.
    static func leavesBypassPolicies(_ kind: IKEDaemonKind, _ from: String?) -> Bool {
        kind == .libreswan && DaemonRelease.major(kind, from) < 5
    }

    /// Whether the release puts a marked style's mark on its outbound SA (see below).
    static func marksOutboundSA(_ kind: IKEDaemonKind, _ from: String?) -> Bool {
        kind == .strongSwan
    }

    /// Both SAs of the tunnel on `ns`, the outbound policy to the peer, and the style's mark or
    /// if_id where each daemon puts it; the outbound SA has carried the test's packets.
    ///
    /// Where the marks go differs between the daemons, and is pinned here so a change shows:
    /// - policies: both put the mark on the outbound policy (and, for VTI, the inbound ones);
    /// - the outbound SA: strongSwan marks it (`mark_out` is for SA and policy; 5.9.8 and 6.0.1),
    ///   libreswan does not (its `mark=`/`mark-out=` go on policies only; 4.10 and 5.2);
    /// - the inbound SA: neither (strongSwan only with `mark_in_sa = yes`; an unmarked SA matches
    ///   whatever mark the VTI device's ikey gives the packet);
    /// - xfrm interfaces: the if_id on every SA and policy, both daemons.
    func expectKernelState(_ ns: Namespace, daemon: IKEDaemonKind, from: String? = nil, style: ConnectionStyle, outbound peer: [UInt8],
                           inbound own: [UInt8], who: String) throws {
        let kernel = try kernelXfrm(ns)
        let out = kernel.states.filter { $0.destination == peer && $0.proto == .esp }
        let inbound = kernel.states.filter { $0.destination == own && $0.proto == .esp }
        try #require(out.count >= 1 && inbound.count >= 1, "\(who): SAs \(kernel.states)")
        #expect(out.contains { $0.counters.packets >= 1 }, "\(who): no outbound SA counted the packet: \(out)")
        let outPolicies = kernel.policies.filter { $0.direction == .out && $0.templates.contains { $0.destination == peer } }
        let inPolicies = kernel.policies.filter { $0.direction == .in && $0.templates.contains { $0.source == peer } }
        #expect(!outPolicies.isEmpty, "\(who): no outbound policy to the peer: \(kernel.policies)")
        func expectMarks(_ mark: UInt32, inboundPolicies: Bool) {
            #expect(outPolicies.allSatisfy { $0.mark == XfrmMark(mark) }, "\(who): outbound policy mark: \(outPolicies)")
            if inboundPolicies {
                #expect(!inPolicies.isEmpty && inPolicies.allSatisfy { $0.mark == XfrmMark(mark) }, "\(who): inbound policy mark: \(inPolicies)")
            }
            let outSAMark: XfrmMark? = DaemonInteropTests.marksOutboundSA(daemon, from) ? XfrmMark(mark) : nil
            #expect(out.allSatisfy { $0.mark == outSAMark }, "\(who): outbound SA mark, expected \(outSAMark.map { "\($0)" } ?? "none"): \(out)")
            #expect(inbound.allSatisfy { $0.mark == nil }, "\(who): inbound SA mark, expected none: \(inbound)")
        }
        switch style {
        case .policy:
            #expect((out + inbound).allSatisfy { $0.mark == nil && $0.interfaceID == nil }, "\(who): \(out + inbound)")
        case .markedPolicy(let mark):
            expectMarks(mark, inboundPolicies: false)
        case .vti(let key, _):
            expectMarks(key, inboundPolicies: true)
        case .xfrmInterface(let id):
            #expect((out + inbound).allSatisfy { $0.interfaceID == id }, "\(who): SA if_ids: \(out + inbound)")
            #expect((outPolicies + inPolicies).allSatisfy { $0.interfaceID == id }, "\(who): policy if_ids: \(outPolicies + inPolicies)")
        }
    }
}

/// The second half of the interop cases, run beside `DaemonInteropTests`.
@Suite("IKE daemons with each other (kernel ESP): xfrm interfaces, certificates, rekey, topology files", .serialized,
       .tags(.privileged, .daemons, .vm), .needsNamespaces, .needsDaemon(.strongSwan), .needsDaemon(.libreswan), .requires(.esp))
struct DaemonInteropMoreTests {
    typealias Case = DaemonInteropTests.Case
    let interop = DaemonInteropTests()

    @Test("route-based tunnel through xfrm interfaces", .requires(.xfrmInterface), arguments: DaemonInteropTests.cases())
    func xfrmInterface(_ c: Case) async throws {
        try await interop.run(c, style: .xfrmInterface(id: 7))
    }

    @Test("certificates from a per-run CA instead of a PSK", arguments: DaemonPair.all)
    func certificates(_ pair: DaemonPair) async throws {
        try await interop.run(Case(pair: pair, family: .ipv4), style: .policy, certificates: true)
    }

    @Test("a rekey on demand replaces the child SA in the kernel, and traffic follows it", arguments: DaemonPair.all)
    func rekey(_ pair: DaemonPair) async throws {
        try await interop.run(Case(pair: pair, family: .ipv4), style: .policy, rekey: true)
    }

    @Test("a topology file's `ike:` tunnel: the lab leaves it to the daemons, which bring it up with certificates",
          .requires(.xfrmInterface))
    func fromTopologyFile() async throws {
        try await interop.fromTopologyFile()
    }
}
