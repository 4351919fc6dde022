import Foundation
import Glibc
import Lab
import Netlink
import Probes

/// VTI's key doubles as the XFRM mark, and acts only there: the receive path sets the packet's
/// mark to the key around the policy check and restores it afterwards, the transmit path puts the
/// key into the flow's mark only. (Early VTI code left the key on the received packet; the commit
/// ids this report once gave for the change were wrong, so it is kept as a behaviour, see
/// report.yaml.) Seen in the NFLOG trace: the ESP packet leaving west keeps the sender's mark 0x5
/// (not the key 0x10), and the decrypted packet reaching east's INPUT has east's mark (0), not the key.
enum VtiMarkPreserved {
    static let reproduction = Reproduction("vti-mark-preserved") { lab in
        let west = try lab.namespace("west"), east = try lab.namespace("east")
        let from: [UInt8] = [192, 0, 1, 254], to: [UInt8] = [192, 0, 2, 254]
        let (trip, trace) = try lab.trace(hosts: ["west", "east"]) {
            try Echo.udp(from: west, to: east, destination: to, port: 7110, source: from, mark: 0x5, timeout: 5)
        }
        guard trip.delivered else { throw Inconclusive("the datagram did not cross the tunnel: \(trip); trace: \(trace)") }
        let esp = trace.hops(on: "west").first { $0.hook == .postrouting && $0.packet.proto == .esp && $0.outInterface == "eth1" }
        let decrypted = trace.hops(on: "east").first {
            $0.hook == .input && $0.packet.proto == .udp && $0.packet.destinationPort == 7110 && $0.packet.destination == to
        }
        guard let esp, let decrypted else { throw Inconclusive("no ESP on west's eth1 or no decrypted datagram at east's INPUT: \(trace)") }
        let hex = { (v: UInt32) in "0x" + String(v, radix: 16) }
        // Two parts, one per direction: either path may keep the key on the packet.
        return Observation(parts: [
            .init("transmit", bugPresent: esp.mark != 0x5, evidence: [
                "west POSTROUTING ESP spi \(esp.packet.spi.map { hex($0) } ?? "?") out eth1 mark \(hex(esp.mark)) (sender's 0x5, VTI key 0x10)"]),
            .init("receive", bugPresent: decrypted.mark != 0, evidence: [
                "east INPUT decrypted UDP :7110 in \(decrypted.inInterface ?? "?") mark \(hex(decrypted.mark)) (east set none)"]),
        ], evidence: ["\(trip)"])
    }
}
