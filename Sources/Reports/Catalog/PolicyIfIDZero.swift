import Foundation
import Glibc
import Lab
import Netlink
import Xfrm

/// XFRMA_IF_ID 0 on a policy: refused for a few weeks of 5.17-rc (68ac0f3810e7), then the
/// refusal was reverted because it broke userland that always sends the attribute. Every
/// released kernel accepts it, and the policy reads back as one without an if_id.
enum PolicyIfIDZero {
    static let reproduction = Reproduction("policy-if-id-zero") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        let selector = XfrmSelector(source: "10.1.0.0/24", destination: "10.2.0.0/24")!
        let template = XfrmTemplate(source: [192, 0, 2, 1], destination: [192, 0, 2, 2], reqid: 1)
        let zero = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, XfrmPolicy(selector: selector, direction: .out, priority: 10,
                                                                           interfaceID: 0, templates: [template])))
        let back = try xfrm.xfrmPolicies().filter { $0.selector == selector }
        // "Reproduces" here is the behaviour the report describes: the attribute is accepted.
        return Observation(bugPresent: zero.accepted, evidence: [
            "\(zero)", "read back: [\(back.map { "if_id \($0.interfaceID.map(String.init) ?? "none")" }.joined(separator: ", "))]",
        ])
    }
}
