import Foundation
import Glibc
import Lab
import Netlink

/// `ip link add ipsec0 type xfrm external`: one device for every if_id, chosen per packet
/// (collect-metadata mode, abc340b38ba2, Linux 6.1). Older kernels do not know the flag: with
/// no if_id they refuse the device ("if_id must be non zero"), or take it as an ordinary one.
/// Not a bug fix but a feature: its verdict is REPRODUCES where the mode is missing.
enum XfrmiExternalMode {
    static let reproduction = Reproduction("xfrmi-external-mode") { lab in
        let ns = try lab.namespace("lab")
        let add = ask(ns.route, LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec0", interfaceID: nil, external: true, up: false))
        let made = try ns.route.tunnelLinks().first { $0.link.name == "ipsec0" }
        return Observation(bugPresent: !(add.accepted && made?.external == true), evidence: [
            "\(add)", made.map { "read back: \($0) (external \($0.external))" } ?? "no ipsec0 in the link dump",
        ])
    }
}
