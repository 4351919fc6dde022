import Foundation
import Glibc
import Lab
import Netlink

/// Since 22d6552f827e (Linux 5.3) an xfrm interface needs no lower device: the link is only a
/// hint for routing the ESP packets. Before, `ip link add ipsec1 type xfrm if_id 1` without
/// `dev` was refused.
enum XfrmiPhydevOptional {
    static let reproduction = Reproduction("xfrmi-phydev-optional") { lab in
        let ns = try lab.namespace("lab")
        let add = ask(ns.route, LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec1", interfaceID: 1, up: false))
        let made = try ns.route.tunnelLinks().first { $0.link.name == "ipsec1" }
        return Observation(bugPresent: !add.accepted || made == nil, evidence: [
            "\(add)", made.map { "read back: \($0) (lower device \($0.lowerIndex.map(String.init) ?? "none"))" } ?? "no ipsec1 in the link dump",
        ])
    }
}
