import Foundation
import Glibc
import Lab
import Netlink
import Xfrm

/// Two policies with the same selector and the same mark and mask are the same policy, whatever
/// their priority; a different mask makes a different policy, and delete matches mark and mask
/// exactly (4f47e8ab6ab7, Linux 5.8).
enum PolicyMarkMaskIdentity {
    static let reproduction = Reproduction("policy-mark-mask-identity") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        let selector = XfrmSelector(source: "10.1.0.0/24", destination: "10.2.0.0/24")!
        let template = XfrmTemplate(source: [192, 0, 2, 1], destination: [192, 0, 2, 2], reqid: 1)
        func policy(_ mark: XfrmMark, priority: UInt32) -> XfrmPolicy {
            XfrmPolicy(selector: selector, direction: .out, priority: priority, mark: mark, templates: [template])
        }
        let first = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, policy(XfrmMark(0x1, mask: 0xff), priority: 10)))
        guard first.accepted else { throw Inconclusive("\(first)") }
        // Same mark and mask, another priority: the same policy, so add (NLM_F_EXCL) must be EEXIST.
        let duplicate = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, policy(XfrmMark(0x1, mask: 0xff), priority: 20)))
        // Same value, narrower mask: a different policy.
        let narrower = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, policy(XfrmMark(0x1, mask: 0xf), priority: 10)))
        let afterAdds = try xfrm.xfrmPolicies().filter { $0.selector == selector }
        // Deleting with the narrower mask removes that policy only.
        let delete = ask(xfrm, XfrmPolicyRequest.delete(namespace: ns, selector: selector, direction: .out, mark: XfrmMark(0x1, mask: 0xf)))
        let left = try xfrm.xfrmPolicies().filter { $0.selector == selector }
        let marks = { (ps: [XfrmPolicy]) in ps.map { "\($0.mark.map { "\($0)" } ?? "none") prio \($0.priority)" }.joined(separator: ", ") }
        let bug = duplicate.accepted || !narrower.accepted || !delete.accepted
            || left.count != afterAdds.count - 1 || !left.contains { $0.mark == XfrmMark(0x1, mask: 0xff) }
        return Observation(bugPresent: bug, evidence: [
            "\(duplicate)", "\(narrower)", "policies then: [\(marks(afterAdds))]", "\(delete)", "left: [\(marks(left))]",
        ])
    }
}
