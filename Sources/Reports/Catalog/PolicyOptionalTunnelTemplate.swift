import Foundation
import Glibc
import Lab
import Netlink
import Xfrm

/// An optional (`level use`) tunnel- or BEET-mode template in an outbound policy: when
/// xfrm_state_find() skipped it in a mixed-family chain, the next template was looked up with
/// addresses of the wrong family (an out-of-bounds read). Since 3d776e31c841 (Linux 6.4, in
/// stable 6.1.30 and 6.3.4) validate_tmpl() refuses such a template when the policy's direction
/// is out: EINVAL, "Mode in optional template not allowed in outbound policy". The only
/// practical use of optional templates, skipping IPComp on input, is untouched.
///
/// Policies need no ESP implementation, so any kernel with XFRM answers. The same policy with
/// direction in is the control: it must be accepted everywhere.
enum PolicyOptionalTunnelTemplate {
    static let reproduction = Reproduction("policy-optional-tunnel-template") { lab in
        let xfrm = try lab.namespace("lab").xfrmSocket()
        defer { xfrm.close() }
        let ns = try lab.namespace("lab").name
        let selector = XfrmSelector(source: "10.1.0.0/24", destination: "10.2.0.0/24")!
        let template = XfrmTemplate(source: [192, 0, 2, 1], destination: [192, 0, 2, 2], proto: .esp, mode: .tunnel,
                                    reqid: 1, optional: true)
        func policy(_ direction: XfrmDirection) -> XfrmPolicy {
            XfrmPolicy(selector: selector, direction: direction, priority: 10, templates: [template])
        }
        let control = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, policy(.in)))
        guard control.accepted else { throw Inconclusive("the inbound control policy was refused: \(control)") }
        let outbound = ask(xfrm, XfrmPolicyRequest.add(namespace: ns, policy(.out)))
        guard outbound.accepted || outbound.errno == EINVAL else {
            throw Inconclusive("the outbound policy was refused for another reason: \(outbound)")
        }
        return Observation(bugPresent: outbound.accepted, evidence: [
            "optional tunnel-mode template, dir out: \(outbound)", "control, dir in: \(control)",
        ])
    }
}
