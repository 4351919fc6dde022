import Foundation
import Glibc
import Lab
import Netlink
import Probes
import Xfrm

/// The SA output mark (XFRMA_SET_MARK): added for outbound SAs in Linux 4.14 (077fbac405bf);
/// 9b42c1f179a6 (Linux 4.19) gave it a mask and made inbound SAs apply it to the decrypted
/// packet: mark = (mark & ~mask) | (value & mask). Before, an inbound SA's output mark did
/// nothing. east's inbound SA gets output mark 0x200/0xf00; a firewall rule marks arriving ESP
/// 0x3001 first; the decrypted datagram must reach INPUT marked 0x3201.
enum OutputMarkInbound {
    static let reproduction = Reproduction("output-mark-inbound") { lab in
        let west = try lab.namespace("west"), east = try lab.namespace("east")
        guard let end = lab.tunnels?.end("west-east", on: "east") else { throw Inconclusive("no tunnel west-east on east") }
        let xfrm = try east.xfrmSocket()
        defer { xfrm.close() }
        // The kernel hands the keys back: re-add the inbound SA as it is, with the output mark.
        guard var sa = try xfrm.xfrmStates().first(where: { $0.spi == end.inboundSPI }) else { throw Inconclusive("east has no SA \(end.inboundSPI)") }
        sa.outputMark = XfrmMark(0x200, mask: 0xf00)
        try xfrm.request(XfrmStateRequest.delete(namespace: east.name, destination: sa.destination, spi: sa.spi, mark: sa.mark))
        try xfrm.request(XfrmStateRequest.add(namespace: east.name, sa))
        let rules = "table inet xlreport {\n  chain pre {\n    type filter hook prerouting priority mangle - 10; policy accept;\n    meta l4proto esp meta mark set 0x3001\n  }\n}\n"
        let nft = try east.execute(["nft", "-f", "-"], input: rules, timeout: 20)
        guard nft.succeeded else { throw Inconclusive("nft on east: \(nft.standardError)") }
        let to: [UInt8] = [192, 0, 2, 254]
        let (trip, trace) = try lab.trace(hosts: ["east"]) {
            try Echo.udp(from: west, to: east, destination: to, port: 7120, source: [192, 0, 1, 254], timeout: 5)
        }
        guard trip.delivered else { throw Inconclusive("the datagram did not cross the tunnel: \(trip)") }
        let hex = { (v: UInt32) in "0x" + String(v, radix: 16) }
        let esp = trace.hops(on: "east").first { $0.hook == .input && $0.packet.proto == .esp }
        guard let decrypted = trace.hops(on: "east").first(where: { $0.hook == .input && $0.packet.destinationPort == 7120 }) else {
            throw Inconclusive("no decrypted datagram at east's INPUT: \(trace)")
        }
        return Observation(bugPresent: decrypted.mark != 0x3201, evidence: [
            "east inbound SA spi \(hex(sa.spi)) output-mark 0x200/0xf00; nft marks arriving ESP 0x3001",
            esp.map { "east INPUT ESP mark \(hex($0.mark))" } ?? "ESP not logged at INPUT",
            "east INPUT decrypted UDP :7120 in \(decrypted.inInterface ?? "?") mark \(hex(decrypted.mark)) (0x3201 with the mask applied, 0x200 without it, 0x3001 if ignored)",
        ])
    }
}
