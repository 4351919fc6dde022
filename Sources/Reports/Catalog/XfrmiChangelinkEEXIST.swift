import Foundation
import Glibc
import Lab
import Netlink

/// Changing an xfrm interface to an if_id another one holds is refused with EEXIST; before
/// e9e7e85d75f3 (Linux 5.3) the new parameters were stored before the check, so the refused
/// change still took effect.
enum XfrmiChangelinkEEXIST {
    static let reproduction = Reproduction("xfrmi-changelink-eexist") { lab in
        let ns = try lab.namespace("lab")
        let lo = try ns.route.link(named: "lo")?.index ?? 1
        for (name, id) in [("xfrm1", UInt32(1)), ("xfrm2", UInt32(2))] {
            let made = ask(ns.route, LinkRequest.xfrmInterface(namespace: ns.name, name: name, interfaceID: id, link: lo, linkName: "lo", up: false))
            guard made.accepted else { throw Inconclusive("\(made)") }
        }
        guard let xfrm1 = try ns.route.link(named: "xfrm1") else { throw Inconclusive("xfrm1 not in the link dump") }
        let change = ask(ns.route, LinkRequest.changeXfrmInterface(namespace: ns.name, index: xfrm1.index, name: "xfrm1", interfaceID: 2,
                                                                   link: lo, linkName: "lo"))
        let after = try ns.route.tunnelLinks().first { $0.link.name == "xfrm1" }
        let id = after?.interfaceID
        return Observation(bugPresent: change.accepted || id != 1, evidence: [
            "\(change)", "xfrm1 reads back if_id \(id.map { "\($0)" } ?? "nothing") (it had 1)",
        ])
    }
}
