import Foundation
import Glibc
import Lab
import Netlink

/// An xfrm interface with if_id 0 would match every SA and policy without an if_id; since
/// 8dce43919566 (Linux 5.17) the kernel refuses it: "if_id must be non zero".
enum XfrmiIfIDZero {
    static let reproduction = Reproduction("xfrmi-if-id-zero") { lab in
        let ns = try lab.namespace("lab")
        let lo = try ns.route.link(named: "lo")?.index ?? 1
        let zero = ask(ns.route, LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec0", interfaceID: 0, link: lo, linkName: "lo", up: false))
        let made = try ns.route.tunnelLinks().first { $0.link.name == "ipsec0" }
        return Observation(bugPresent: zero.accepted || made != nil, evidence: [
            "\(zero)", made.map { "link dump: \($0)" } ?? "no ipsec0 in the link dump",
        ])
    }
}
