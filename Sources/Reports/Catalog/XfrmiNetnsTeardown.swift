import Foundation
import Glibc
import Lab
import Namespaces
import Netlink

/// libreswan's XFRM-interface notes: deleting the namespace before the xfrm interface left the
/// interface behind, and "unregister_netdevice: waiting for eth1 to become free. Usage count = 1"
/// — the interface held its lower device. Since 22d6552f827e (Linux 5.3) it does not. Checked in
/// both orders, with the interface moved to another namespace than its lower device, and with
/// the lower device moved away and its new namespace deleted under the interface: every
/// namespace must be released by the kernel (NamespaceReaper: RTM_DELNSID and the cleanup
/// canary), none may hang. Destructive on an affected kernel.
enum XfrmiNetnsTeardown {
    /// A namespace with a veth pair (eth1, eth1p) and ipsec1 (if_id 1) on eth1.
    static func make(_ name: String) throws -> Namespace {
        let ns = try Namespace.create(name: name)
        try ns.route.request(LinkRequest.veth(namespace: ns.name, name: "eth1", peerName: "eth1p", peerNamespaceFD: nil, peerNamespaceName: nil))
        guard let eth1 = try ns.route.link(named: "eth1") else { throw Inconclusive("eth1 missing in \(name)") }
        try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec1", interfaceID: 1, link: eth1.index, linkName: "eth1"))
        return ns
    }

    static func release(_ namespaces: [Namespace]) -> (ok: Bool, text: String) {
        do {
            let r = try NamespaceReaper.delete(namespaces, timeout: 15)
            return (r.complete, r.description)
        } catch {
            return (false, "\(error)")
        }
    }

    static let reproduction = Reproduction("xfrmi-netns-teardown") { lab in
        do {
            return try steps(prefix: lab.run.prefix)
        } catch {
            // A step failed half-way: whatever of ours is left goes (the kernel may still refuse).
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: Namespace.directory)) ?? [])
                .filter { $0.hasPrefix(lab.run.prefix + "td") }.compactMap { try? Namespace.open(name: $0) }
            _ = try? NamespaceReaper.delete(left, timeout: 15)
            throw error
        }
    }

    static func steps(prefix: String) throws -> Observation {
        var evidence: [String] = []
        var bug = false

        // 1. The namespace goes with the xfrm interface still in it.
        let a = try make(prefix + "td1")
        let r1 = release([a])
        evidence.append("namespace deleted with ipsec1 on eth1 inside: \(r1.text)")
        bug = bug || !r1.ok

        // 2. The interface first, then the namespace.
        let b = try make(prefix + "td2")
        let del = ask(b.route, LinkRequest.delete(namespace: b.name, name: "ipsec1"))
        let r2 = release([b])
        evidence.append("\(del), then the namespace: \(r2.text)")
        bug = bug || !del.accepted || !r2.ok

        // 3. The interface moved away from its lower device's namespace; the lower device's
        //    namespace deleted first.
        let c = try make(prefix + "td3")
        let d = try Namespace.create(name: prefix + "td4")
        guard let ipsec1 = try c.route.link(named: "ipsec1") else { throw Inconclusive("ipsec1 missing") }
        let move = ask(c.route, LinkRequest.moveToNamespace(namespace: c.name, index: ipsec1.index, name: "ipsec1",
                                                            targetNamespaceFD: d.fd, targetNamespaceName: d.name))
        let r3 = release([c])
        let left = (try? d.route.link(named: "ipsec1")) ?? nil
        let r4 = release([d])
        evidence.append("\(move); lower device's namespace deleted first: \(r3.text); ipsec1 \(left == nil ? "gone" : "still there") in the other; then that one: \(r4.text)")
        bug = bug || !r3.ok || !r4.ok

        // 4. The lower device moved away from the interface, and its new namespace deleted: the
        //    veth goes while ipsec1 lives. The pin the fix removed made this one hang for good
        //    (at a namespace's exit the interfaces go before other devices, so 1–3 never wait).
        let e = try make(prefix + "td5")
        let f = try Namespace.create(name: prefix + "td6")
        guard let eth1 = try e.route.link(named: "eth1") else { throw Inconclusive("eth1 missing") }
        let moveLower = ask(e.route, LinkRequest.moveToNamespace(namespace: e.name, index: eth1.index, name: "eth1",
                                                                 targetNamespaceFD: f.fd, targetNamespaceName: f.name))
        let r5 = release([f])
        let r6 = release([e])
        evidence.append("\(moveLower); its new namespace deleted with ipsec1 on it still in the first: \(r5.text); then the first: \(r6.text)")
        bug = bug || !moveLower.accepted || !r5.ok || !r6.ok
        return Observation(bugPresent: bug, evidence: evidence)
    }
}
