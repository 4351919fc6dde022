import Foundation
import Glibc
import Lab
import Netlink

/// VTI devices are found by their endpoints (and lower device), never by their key: the key
/// only doubles as the XFRM mark. A second VTI between the same two addresses, with another
/// key, is refused with EEXIST on every kernel; a per-peer key needs other endpoints or
/// xfrm interfaces.
enum VtiDuplicateEndpoints {
    static let reproduction = Reproduction("vti-duplicate-endpoints") { lab in
        let ns = try lab.namespace("lab")
        let local: [UInt8] = [192, 0, 2, 1], remote: [UInt8] = [198, 51, 100, 1]
        let first = ask(ns.route, LinkRequest.vti(namespace: ns.name, name: "vti1", local: local, remote: remote, inputKey: 1, outputKey: 1, up: false))
        guard first.accepted else { throw Inconclusive("\(first)") }
        let second = ask(ns.route, LinkRequest.vti(namespace: ns.name, name: "vti2", local: local, remote: remote, inputKey: 2, outputKey: 2, up: false))
        let other = ask(ns.route, LinkRequest.vti(namespace: ns.name, name: "vti3", local: local, remote: [198, 51, 100, 2], inputKey: 2, outputKey: 2, up: false))
        let links = try ns.route.tunnelLinks().filter { $0.kind == "vti" }.map { "\($0.link.name) key \($0.inputKey.map(String.init) ?? "-")" }
        // Reproduces: the same endpoints with another key are refused (EEXIST), other endpoints are not.
        return Observation(bugPresent: second.errno == EEXIST && other.accepted, evidence: [
            "\(first)", "\(second)", "\(other)", "vti devices: \(links.joined(separator: ", "))",
        ])
    }
}
