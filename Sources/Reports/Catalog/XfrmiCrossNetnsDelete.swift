import Foundation
import Glibc
import Lab
import Namespaces
import Netlink

/// An xfrm interface moved to another namespace and deleted there stayed on the list of the
/// namespace it was made in (list corruption: a later interface with its if_id collided with a
/// freed one). Fixed by c5d1030f2300 (Linux 5.3). After the move and the delete, the first
/// namespace must take a new interface with the same if_id, and both namespaces must be
/// released. Its other half is changelink: an interface changed after the move was re-hashed onto
/// the list of the namespace it lives in, so that namespace refused a new interface with the new
/// if_id (EEXIST from an entry that is not its own). Destructive on an affected kernel.
enum XfrmiCrossNetnsDelete {
    static let reproduction = Reproduction("xfrmi-cross-netns-delete") { lab in
        let a = try lab.namespace("lab")
        let b = try lab.namespace("other")
        let lo = try a.route.link(named: "lo")?.index ?? 1
        let add = ask(a.route, LinkRequest.xfrmInterface(namespace: a.name, name: "ipsec1", interfaceID: 5, link: lo, linkName: "lo", up: false))
        guard add.accepted, let dev = try a.route.link(named: "ipsec1") else { throw Inconclusive("\(add)") }
        let move = ask(a.route, LinkRequest.moveToNamespace(namespace: a.name, index: dev.index, name: "ipsec1",
                                                            targetNamespaceFD: b.fd, targetNamespaceName: b.name))
        guard move.accepted, let moved = try b.route.link(named: "ipsec1") else { throw Inconclusive("\(move)") }
        let del = ask(b.route, LinkRequest.delete(namespace: b.name, index: moved.index, name: "ipsec1"))
        let again = ask(a.route, LinkRequest.xfrmInterface(namespace: a.name, name: "ipsec2", interfaceID: 5, link: lo, linkName: "lo", up: false))
        // A second interface moved and then changed there (if_id 7 → 8): the other namespace must
        // still take an interface of its own with if_id 8, since the changed one is on lab's list.
        let add4 = ask(a.route, LinkRequest.xfrmInterface(namespace: a.name, name: "ipsec4", interfaceID: 7, link: lo, linkName: "lo", up: false))
        guard add4.accepted, let dev4 = try a.route.link(named: "ipsec4") else { throw Inconclusive("\(add4)") }
        let move4 = ask(a.route, LinkRequest.moveToNamespace(namespace: a.name, index: dev4.index, name: "ipsec4",
                                                             targetNamespaceFD: b.fd, targetNamespaceName: b.name))
        guard move4.accepted, let moved4 = try b.route.link(named: "ipsec4") else { throw Inconclusive("\(move4)") }
        let loB = try b.route.link(named: "lo")?.index ?? 1
        let change = ask(b.route, LinkRequest.changeXfrmInterface(namespace: b.name, index: moved4.index, name: "ipsec4", interfaceID: 8,
                                                                  link: loB, linkName: "lo"))
        guard change.accepted else { throw Inconclusive("\(change)") }
        let own = ask(b.route, LinkRequest.xfrmInterface(namespace: b.name, name: "ipsec5", interfaceID: 8, link: loB, linkName: "lo", up: false))
        let inA = try a.route.tunnelLinks().map { "\($0.link.name) if_id \($0.interfaceID.map(String.init) ?? "-")" }
        let inB = try b.route.tunnelLinks().map { "\($0.link.name) if_id \($0.interfaceID.map(String.init) ?? "-")" }
        return Observation(bugPresent: !del.accepted || !again.accepted || !own.accepted, evidence: [
            "\(move)", "\(del)", "\(again)", "\(move4)", "\(change)", "\(own)",
            "xfrm devices in \(a.name): \(inA.joined(separator: ", ")); in \(b.name): \(inB.joined(separator: ", "))",
        ])
    }
}
