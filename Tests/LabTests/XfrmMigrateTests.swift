import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Testing
import XfrmLabTesting
import Xfrm

/// `XFRM_MSG_MIGRATE` as a typed request and event: a policy's template (and the SA matching
/// it) moved to new endpoints, the migration announced to listeners of its namespace only.
@Suite("XFRM_MSG_MIGRATE: templates and states move, listeners in the namespace are told", .tags(.privileged), .needsNamespaces)
struct XfrmMigrateTests {
    static let selector = XfrmSelector(source: "192.0.1.0/24", destination: "192.0.2.0/24")!
    static let move = XfrmMigration(oldSource: [192, 1, 2, 45], oldDestination: [192, 1, 2, 23],
                                    newSource: [192, 1, 3, 45], newDestination: [192, 1, 2, 23], reqid: 7)

    /// A namespace with an outbound policy whose template goes 192.1.2.45 → 192.1.2.23.
    static func withPolicy(_ tag: String, _ body: (Namespace, NetlinkSocket) throws -> Void) throws {
        let ns = try Namespace.create(name: "xlmg\(getpid())\(tag)")
        defer { ns.delete() }
        let xfrm = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
        defer { xfrm.close() }
        let template = XfrmTemplate(source: move.oldSource, destination: move.oldDestination, reqid: 7)
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: selector, direction: .out, templates: [template])))
        try body(ns, xfrm)
    }

    @Test("the policy's template moves; a listener in the namespace gets the migration, typed; one in the host's gets nothing",
          .requires(.xfrmPolicy), .requires(.migrate))
    func policyMoves() throws {
        try Self.withPolicy("p") { ns, xfrm in
            let monitor = XfrmMonitor(socket: try ns.netlinkSocket(protocol: NetlinkSocket.xfrm, groups: [XfrmMonitor.migrateGroup]))
            defer { monitor.close() }
            // The harness's own namespace (the host's, or the guest's in a VM): read-only.
            let host = try XfrmMonitor.here(groups: [XfrmMonitor.migrateGroup])
            defer { host.close() }
            #expect(host.socket.inHostNamespace)
            let request = XfrmPolicyRequest.migrate(namespace: ns.name, selector: Self.selector, direction: .out, migrations: [Self.move])
            #expect(request.summary == "ip -n \(ns.name) xfrm policy migrate src 192.0.1.0/24 dst 192.0.2.0/24 dir out "
                + "tmpl src 192.1.2.45 dst 192.1.2.23 proto esp mode tunnel reqid 7 newsrc 192.1.3.45 newdst 192.1.2.23")
            try xfrm.request(request)
            let policy = try #require(try xfrm.xfrmPolicies().first { $0.selector == Self.selector && $0.direction == .out })
            #expect(policy.templates.first?.source == Self.move.newSource, "\(policy)")
            var seen: [XfrmEvent] = []
            let event = try #require(try monitor.wait(timeout: 5, seen: { seen.append($0) }) { $0.migrate != nil }?.migrate, "\(seen)")
            #expect(event.direction == .out && event.selector == Self.selector && event.migrations == [Self.move], "\(event)")
            let strays = try host.collect(for: 0.5).compactMap(\.migrate)
            #expect(strays.isEmpty, "the lab's migration reached the host's namespace: \(strays)")
        }
    }

    @Test("the SA of the template moves too: the same SPI from the new source, the old one gone", .requires(.migrate), .requires(.esp))
    func stateMoves() throws {
        try Self.withPolicy("s") { ns, xfrm in
            let spi: UInt32 = 0x7007
            try xfrm.request(XfrmStateRequest.add(namespace: ns.name, XfrmState(
                source: Self.move.oldSource, destination: Self.move.oldDestination, spi: spi, reqid: 7,
                algorithms: [.aesGCM(key: .random(bits: 160))])))
            try xfrm.request(XfrmPolicyRequest.migrate(namespace: ns.name, selector: Self.selector, direction: .out, migrations: [Self.move]))
            let states = try xfrm.xfrmStates()
            #expect(states.count == 1, "\(states.map { $0.arguments() })")
            #expect(states.first?.spi == spi && states.first?.source == Self.move.newSource, "\(states.map { $0.arguments() })")
        }
    }
}
