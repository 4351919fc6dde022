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

/// strongSwan with kernel-libipsec between two namespaces: ESP in user space over a TUN device,
/// which works on a kernel without ESP (this host's). The host-to-host setup of the plugin's
/// documentation: kernel-netlink `fwmark = !0x42`, socket-default `fwmark = 0x42`,
/// kernel-libipsec `allow_peer_ts = yes`, rp_filter 2.
@Suite("strongSwan kernel-libipsec on this kernel", .serialized, .tags(.privileged, .daemons),
       .needsNamespaces, .needsDaemon(.strongSwan), .needsLibIPsec)
struct DaemonLibIPsecTests {
    static let libipsec = StrongSwan.Options(backend: .libipsec())

    /// Loose reverse-path filtering: decrypted packets come in on the TUN device, from an
    /// address whose route leaves through eth1.
    static func prepare(_ lab: Lab) throws {
        for host in ["west", "east"] {
            try lab.namespace(host).setSysctls([("net.ipv4.conf.all.rp_filter", "2"), ("net.ipv4.conf.default.rp_filter", "2")])
        }
    }

    @Test("charon with kernel-libipsec carries UDP encrypted between west and east: ESP in UDP on the wire, no SA in the kernel",
          arguments: [IPAddress.Family.ipv4, .ipv6])
    func encryptedTraffic(family: IPAddress.Family) async throws {
        try await daemonTopology().withLab { lab in
            try Self.prepare(lab)
            let c = try IKEConfiguration.between(lab, "west", "east", family: family)
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            let (westAddress, eastAddress) = (c.local.address.bytes, c.remote.address.bytes)
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: Self.libipsec),
                                        DaemonSpec(.strongSwan, host: "east", configuration: c.mirrored, strongSwan: Self.libipsec)) { tunnel in
                recordTiming("strongSwan→strongSwan libipsec host-to-host \(family)", tunnel)
                let child = try #require(tunnel.initiatorSA.children.first { $0.installed })
                #expect(child.udpEncapsulated == true, "kernel-libipsec forces ESP into UDP: \(child)")
                let spi = try #require(child.outboundSPI)

                let ((trip, trace), sent) = try wire(lab, hosts: ["west", "east"]) {
                    try lab.trace(hosts: ["west", "east"]) {
                        try Echo.udp(from: west, to: east, destination: eastAddress)
                    }
                }
                #expect(trip.answered, "\(trip)")
                // On the wire (AF_PACKET on eth1): ESP in UDP 4500 both ways, never the datagram.
                for (host, packets) in sent {
                    #expect(!packets.contains { $0.udpPorts?.source == 7000 || $0.udpPorts?.destination == 7000 },
                            "\(host) sent the datagram in the clear: \(packets)")
                    #expect(packets.contains { $0.esp?.udpEncapsulated == true }, "\(host) sent no ESP in UDP: \(packets)")
                }
                // The datagram leaves into charon's TUN device (not eth1), and what goes out of eth1
                // is ESP in UDP from charon's socket, marked 0x42 (so it skips table 220).
                let path = PathExpectation("west → east through charon's user-space ESP")
                    .then(HopPattern.on("west", .postrouting).udp(to: eastAddress, port: 7000))
                    .then(.on("west", .postrouting).esp(spi: spi, from: westAddress, to: eastAddress).out("eth1").mark(0x42))
                    .then(.on("east", .prerouting).esp(spi: spi, from: westAddress, to: eastAddress).in("eth1"))
                    .then(.on("east", .input).udp(from: westAddress, to: eastAddress, port: 7000))
                    .never(.on("west", .postrouting).udp(to: eastAddress, port: 7000).out("eth1"))
                    .never(.on("east", .prerouting).udp(to: eastAddress, port: 7000).in("eth1"))
                let verdict = path.evaluate(trace)
                #expect(verdict.passed, "\(verdict.report)")

                // The SAs live in charon, not in the kernel: the kernel's SAD is empty on both
                // ends (read back over netlink), and charon's own counters moved.
                for ns in [west, east] {
                    let kernel = try kernelXfrm(ns)
                    #expect(kernel.states.isEmpty, "\(ns.name) kernel SAs: \(kernel.states)")
                }
                let after = try #require(try tunnel.initiator.established()?.children.first(where: \.installed))
                #expect((after.packetsOut ?? 0) >= 1 && (after.packetsIn ?? 0) >= 1, "\(after)")

                // Private everything: two charons, two settings files, two sockets, nothing in /run.
                let (w, e) = (tunnel.initiator as! StrongSwan, tunnel.responder as! StrongSwan)
                #expect(w.viciPath != e.viciPath && w.settingsPath != e.settingsPath)
                #expect(access("/run/charon.vici", F_OK) != 0, "a charon used the default vici socket")
                var st = stat()
                #expect(stat(w.swanctlConfigPath, &st) == 0 && st.st_mode & 0o777 == 0o600, "swanctl.conf holds the PSK: mode \(String(st.st_mode & 0o777, radix: 8))")
                #expect(stat(w.instance.directory, &st) == 0 && st.st_mode & 0o777 == 0o700)
            }
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]).isEmpty)
        }
    }

    @Test("a rekey on demand replaces the child SA, and traffic follows the new SPI")
    func rekey() async throws {
        try await daemonTopology().withLab { lab in
            try Self.prepare(lab)
            let c = try IKEConfiguration.between(lab, "west", "east")
            let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: Self.libipsec),
                                        DaemonSpec(.strongSwan, host: "east", configuration: c.mirrored, strongSwan: Self.libipsec)) { tunnel in
                let (before, after) = try tunnel.rekey()
                #expect(before.outboundSPI != after.outboundSPI && before.inboundSPI != after.inboundSPI, "\(before) → \(after)")
                let (trip, trace) = try lab.trace(hosts: ["west"]) {
                    try Echo.udp(from: west, to: east, destination: c.remote.address.bytes)
                }
                #expect(trip.answered, "\(trip)")
                let path = PathExpectation("after the rekey")
                    .then(HopPattern.on("west", .postrouting).esp(spi: after.outboundSPI).out("eth1"))
                    .never(HopPattern.on("west", .postrouting).esp(spi: before.outboundSPI))
                let verdict = path.evaluate(trace)
                #expect(verdict.passed, "\(verdict.report)")
            }
        }
    }

    @Test("without allow_peer_ts, kernel-libipsec refuses a host-to-host child SA (TS_UNACCEPTABLE), and nothing is left")
    func refusedWithoutAllowPeerTS() async throws {
        try await daemonTopology().withLab { lab in
            try Self.prepare(lab)
            let c = try IKEConfiguration.between(lab, "west", "east")
            let options = StrongSwan.Options(backend: .libipsec(allowPeerTS: false))
            let error = await #expect(throws: DaemonError.self) {
                try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: options),
                                            DaemonSpec(.strongSwan, host: "east", configuration: c.mirrored, strongSwan: options),
                                            timeout: 15) { _ in }
            }
            let text = error.map { "\($0)" } ?? ""
            #expect(text.contains("TS_UNACCEPTABLE"), "\(text)")
            #expect(text.contains("conflicts with IKE traffic"), "the responder's reason: \(text)")
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]).isEmpty)
        }
    }

    @Test("without the fwmark options, host-to-host ESP loops through the TUN device and the tunnel never comes up")
    func loopsWithoutFwmark() async throws {
        try await daemonTopology().withLab { lab in
            try Self.prepare(lab)
            let c = try IKEConfiguration.between(lab, "west", "east")
            let options = StrongSwan.Options(backend: .libipsec(allowPeerTS: true, fwmark: nil))
            let west = try StrongSwan.start(in: lab.namespace("west"), host: "west", configuration: c, options: options)
            defer { _ = try? west.stop() }
            let east = try StrongSwan.start(in: lab.namespace("east"), host: "east", configuration: c.mirrored, options: options)
            defer { _ = try? east.stop() }
            // east installs its child SA and answers IKE_AUTH, but the answer is routed into the
            // TUN device (table 220 covers the peer itself), encrypted, sent, routed into the TUN
            // device again …: west never hears back.
            #expect(throws: DaemonError.self) { try west.initiate(timeout: 3) }
            #expect(try west.established() == nil)
            let looping = try #require(try east.status().flatMap(\.children).first, "east has no child SA")
            #expect(looping.installed, "\(looping)")
            #expect((looping.packetsOut ?? 0) > 1000, "east's outbound SA should count the loop: \(looping)")
            print("without fwmark: east's outbound SA counted \(looping.packetsOut ?? 0) packets while no application sent one")
            let reports = [try west.stop(), try east.stop()].compactMap { $0 }
            print(reports.map(\.description).joined(separator: "; "))
            #expect(daemonLeftovers([lab.run.prefix + "west", lab.run.prefix + "east"]).isEmpty)
        }
    }
}
