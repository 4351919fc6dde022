import CNetlink
import Foundation
import Glibc
import Lab
import Netlink
import Xfrm

/// `ip xfrm state add … dir out`: an SA bound to one direction (XFRMA_SA_DIR, a4a87fa4e96c,
/// Linux 6.10; not in the 6.6 or 6.1 stable series: it was queued for 6.6.59 only as a
/// dependency of another fix and dropped before the release). A 6.10+ kernel keeps the
/// direction, checks the SA against it (an output SA must have replay window 0, no replay
/// state, no DECAP_DSCP/ICMP/WILDRECV flags) and reports it back in XFRMA_SA_DIR. Older kernels
/// parse XFRM requests leniently: the attribute, unknown to them, is dropped and the SA has no
/// direction. Not a bug fix but a feature: its verdict is REPRODUCES where the direction is
/// missing, whether the attribute was ignored or refused.
///
/// Adding an SA needs the ESP implementation; the same SA without the attribute is the
/// control, so a refusal of the SA itself is told apart from a refusal of the attribute.
enum SADirection {
    /// `XFRMA_SA_DIR` (include/uapi/linux/xfrm.h, right after XFRMA_MTIMER_THRESH = 32): a u8.
    /// Spelled as a number because the build host's headers predate it. (37 is IP-TFS's reorder
    /// window, a u16: 7.2 answers it "invalid attribute length".)
    static let saDirectionAttribute: UInt16 = 33
    /// `XFRM_SA_DIR_IN` = 1, `XFRM_SA_DIR_OUT` = 2.
    static let outbound: UInt8 = 2

    static let reproduction = Reproduction("sa-direction") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        let destination: [UInt8] = [192, 0, 2, 2]
        // Replay window 0 and no flags: what 6.10+ demands of an output SA.
        func state(spi: UInt32) -> XfrmState {
            XfrmState(source: [192, 0, 2, 1], destination: destination, spi: spi, mode: .tunnel, reqid: 1,
                      algorithms: [.aesGCM(key: .random(bits: 160))], replayWindow: 0)
        }
        /// The XFRMA_SA_DIR value the kernel reports for the SA, nil when it reports none.
        func direction(spi: UInt32) throws -> UInt8? {
            let replies = try xfrm.request(XfrmStateRequest.get(namespace: ns, destination: destination, spi: spi))
            guard let message = replies.first(where: { $0.type == UInt16(XFRM_MSG_NEWSA) }) else {
                throw Inconclusive("XFRM_MSG_GETSA spi \(spi) returned no state")
            }
            return try message.attributes(after: MemoryLayout<xfrm_usersa_info>.stride)[saDirectionAttribute]?.u8
        }
        let control = ask(xfrm, XfrmStateRequest.add(namespace: ns, state(spi: 0x2001)))
        guard control.accepted else { throw Inconclusive("the control SA (no direction) was refused: \(control)") }
        var request = XfrmStateRequest.add(namespace: ns, state(spi: 0x2002))
        request.attributes.append(.u8(saDirectionAttribute, outbound))
        request.summary += " dir out"
        let add = ask(xfrm, request)
        guard add.accepted || add.errno == EINVAL else {
            throw Inconclusive("the SA with XFRMA_SA_DIR was refused for another reason: \(add)")
        }
        let controlDirection = try direction(spi: 0x2001)
        guard add.accepted else {
            return Observation(bugPresent: true, evidence: [
                "\(add) (the attribute itself refused)", "control without XFRMA_SA_DIR: \(control)",
            ])
        }
        let readBack = try direction(spi: 0x2002)
        let text = { (d: UInt8?) in d.map { "XFRMA_SA_DIR \($0)" } ?? "no XFRMA_SA_DIR" }
        return Observation(bugPresent: readBack != outbound, evidence: [
            "\(add)", "read back: \(text(readBack))",
            "control without XFRMA_SA_DIR: \(control), read back: \(text(controlDirection))",
        ])
    }
}
