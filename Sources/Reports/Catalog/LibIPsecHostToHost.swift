import Daemons
import Foundation
import Glibc
import Lab
import Netlink
import Probes

/// strongSwan's kernel-libipsec (ESP in user space over a TUN device) host to host: its
/// documentation's setup marks charon's own packets (socket-default `fwmark = 0x42`) and keeps
/// them out of the routing table that sends everything to the TUN device (kernel-netlink
/// `fwmark = !0x42`), with rp_filter 2. Without the fwmark options the traffic selector equal to
/// the peer routes the peer's own address, and so the ESP packets, into the TUN device: a loop,
/// and the tunnel never comes up. A behaviour of every kernel: REPRODUCES everywhere charon runs.
enum LibIPsecHostToHost {
    static let reproduction = Reproduction("libipsec-host-to-host") { lab in
        for host in ["west", "east"] {
            try lab.namespace(host).setSysctls([("net.ipv4.conf.all.rp_filter", "2"), ("net.ipv4.conf.default.rp_filter", "2")])
        }
        let c = try IKEConfiguration.between(lab, "west", "east")
        let (west, east) = (try lab.namespace("west"), try lab.namespace("east"))
        var evidence: [String] = []

        // The documented setup works: the control.
        let documented = StrongSwan.Options(backend: .libipsec())
        let trip = try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: documented),
                                               DaemonSpec(.strongSwan, host: "east", configuration: c.mirrored, strongSwan: documented)) { _ in
            try Echo.udp(from: west, to: east, destination: c.remote.address.bytes)
        }
        guard trip.answered else { throw Inconclusive("the documented setup (fwmark 0x42 / !0x42) carried nothing: \(trip)") }
        evidence.append("with fwmark = 0x42 / !0x42: \(trip)")

        // The same without the fwmark options.
        let bare = StrongSwan.Options(backend: .libipsec(allowPeerTS: true, fwmark: nil))
        let w = try StrongSwan.start(in: west, host: "west", configuration: c, options: bare)
        defer { _ = try? w.stop() }
        let e = try StrongSwan.start(in: east, host: "east", configuration: c.mirrored, options: bare)
        defer { _ = try? e.stop() }
        var initiated = "established"
        do { try w.initiate(timeout: 3) } catch { initiated = "\(error)".split(separator: "\n").first.map(String.init) ?? "failed" }
        let established = try w.established() != nil
        let looping = try e.status().flatMap(\.children).first
        let packets = looping?.packetsOut ?? 0
        evidence.append("without the fwmark options: west initiate → \(initiated); east's child SA counted \(packets) outbound packets while no application sent one")
        return Observation(bugPresent: !established && packets > 1000, evidence: evidence)
    }
}
