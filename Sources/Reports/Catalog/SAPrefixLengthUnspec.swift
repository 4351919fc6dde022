import Foundation
import Glibc
import Lab
import Netlink
import Xfrm

/// CVE-2024-50142: an SA whose selector family is AF_UNSPEC escaped the prefix-length check, and
/// the kernel then used the /128 as an IPv4 prefix. Since 3f0ab59e6537 (Linux 6.12, in stable
/// 6.1.115, 6.6.59 …) verify_newsa_info checks it against the SA's family: EINVAL.
///
/// The check runs before the kernel looks for the ESP implementation, so a kernel without ESP
/// answers too: EINVAL when fixed, "Requested type not found" (or acceptance) when not. The same
/// SA with a valid /32 is the control: anything but EINVAL.
enum SAPrefixLengthUnspec {
    static let reproduction = Reproduction("sa-prefixlen-unspec") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        func state(spi: UInt32, prefix: Int) -> XfrmState {
            var selector = XfrmSelector.any
            selector.sourcePrefixLength = UInt8(prefix)
            return XfrmState(source: [192, 0, 2, 1], destination: [192, 0, 2, 2], spi: spi, reqid: 1, selector: selector,
                             algorithms: [.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))])
        }
        let control = ask(xfrm, XfrmStateRequest.add(namespace: ns, state(spi: 0x1001, prefix: 32)))
        guard control.errno != EINVAL else { throw Inconclusive("the valid control SA was refused too: \(control)") }
        let bad = ask(xfrm, XfrmStateRequest.add(namespace: ns, state(spi: 0x1002, prefix: 128)))
        return Observation(bugPresent: bad.errno != EINVAL, evidence: [
            "selector family AF_UNSPEC, SA family AF_INET, prefixlen_s 128: \(bad)", "control, prefixlen_s 32: \(control)",
        ])
    }
}
