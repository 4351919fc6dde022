import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Probes
import Testing
import XfrmLabTesting
import Xfrm

/// XFRM policies, marks and ACQUIRE on whatever kernel runs the tests: these need only the
/// XFRM user API, not ESP, so they run on the host too.
@Suite("XFRM policies with marks and if_id, and the ACQUIRE a marked packet triggers",
       .tags(.privileged), .needsNamespaces, .requires(.xfrmPolicy))
struct XfrmPolicyTests {
    static let west = XfrmSelector(source: "192.0.1.0/24", destination: "192.0.2.0/24")!
    static let template = XfrmTemplate(source: parseAddress("192.1.2.45")!, destination: parseAddress("192.1.2.23")!, reqid: 1)

    @Test("policies with mark/mask, if_id and priority read back as added; delete removes only the one named",
          .requires(.policyMark), .requires(.policyInterfaceID))
    func roundTrip() throws {
        let ns = try Namespace.create(name: "xlxp\(getpid())a")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let one = XfrmPolicy(selector: Self.west, direction: .out, priority: 100, mark: XfrmMark(0x1, mask: 0xff), templates: [Self.template])
        let two = XfrmPolicy(selector: Self.west, direction: .out, priority: 200, mark: XfrmMark(0x2, mask: 0xff), templates: [Self.template])
        let seven = XfrmPolicy(selector: Self.west, direction: .out, priority: 300, interfaceID: 7, templates: [Self.template])
        try xfrm.batch([one, two, seven].map { XfrmPolicyRequest.add(namespace: ns.name, $0) })

        let back = try xfrm.xfrmPolicies()
        #expect(back.count == 3, "\(back)")
        let byPriority = Dictionary(uniqueKeysWithValues: back.map { ($0.priority, $0) })
        #expect(byPriority[100]?.mark == XfrmMark(0x1, mask: 0xff))
        #expect(byPriority[200]?.mark == XfrmMark(0x2, mask: 0xff))
        #expect(byPriority[300]?.mark == nil)
        #expect(byPriority[300]?.interfaceID == 7)
        #expect(byPriority[100]?.interfaceID == nil)
        for p in back {
            #expect(p.selector == Self.west)
            #expect(p.direction == .out)
            #expect(p.index != 0, "the kernel gives every policy an index")
            #expect(p.templates == [Self.template])
        }

        // A get by selector and mark finds the marked one, not its sibling.
        let got = try xfrm.xfrmPolicy(selector: Self.west, direction: .out, mark: XfrmMark(0x2, mask: 0xff))
        #expect(got?.priority == 200)

        try xfrm.request(XfrmPolicyRequest.delete(namespace: ns.name, selector: Self.west, direction: .out, mark: XfrmMark(0x2, mask: 0xff)))
        #expect(try xfrm.xfrmPolicies().map(\.priority).sorted() == [100, 300])
        try xfrm.request(XfrmPolicyRequest.delete(namespace: ns.name, selector: Self.west, direction: .out, interfaceID: 7))
        #expect(try xfrm.xfrmPolicies().map(\.priority) == [100])

        // Deleting what is not there is the kernel's ENOENT, with the request as `ip` would say it.
        let missing = try #require(throws: NetlinkError.self) {
            try xfrm.request(XfrmPolicyRequest.delete(namespace: ns.name, selector: Self.west, direction: .out, mark: XfrmMark(0x2, mask: 0xff)))
        }
        #expect(missing.errno == ENOENT)
        #expect(missing.request == "ip -n \(ns.name) xfrm policy delete src 192.0.1.0/24 dst 192.0.2.0/24 dir out mark 0x2 mask 0xff")

        try xfrm.request(XfrmPolicyRequest.flush(namespace: ns.name))
        #expect(try xfrm.xfrmPolicies().isEmpty)
    }

    @Test("two policies for one selector coexist when their marks differ; the same mark again is EEXIST",
          .requires(.policyMark))
    func marksKeepPoliciesApart() throws {
        let ns = try Namespace.create(name: "xlxp\(getpid())b")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let a = XfrmPolicy(selector: Self.west, direction: .out, mark: XfrmMark(0x1, mask: 0xff), templates: [Self.template])
        var b = a
        b.mark = XfrmMark(0x2, mask: 0xff)
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, a))
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, b))
        #expect(Set(try xfrm.xfrmPolicies().compactMap(\.mark)) == [XfrmMark(0x1, mask: 0xff), XfrmMark(0x2, mask: 0xff)])
        let again = try #require(throws: NetlinkError.self) { try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, a)) }
        #expect(again.errno == EEXIST)
        #expect(again.request.hasPrefix("ip -n \(ns.name) xfrm policy add src 192.0.1.0/24 dst 192.0.2.0/24 dir out mark 0x1 mask 0xff"))
        #expect(try xfrm.xfrmPolicies().count == 2)
    }

    /// A namespace with west's private subnet on a stub bridge and a route to east's, so a
    /// packet from 192.0.1.254 to 192.0.2.0/24 reaches the output policy lookup.
    func westStub(_ name: String) throws -> Namespace {
        let ns = try Namespace.create(name: name)
        do {
            // The kernel picks the index: with tunnel modules loaded, fallback devices take the low ones.
            try ns.route.batch([LinkRequest.set(namespace: ns.name, index: 1, name: "lo", up: true),
                                LinkRequest.bridge(namespace: ns.name, name: "eth0")])
            let eth0 = try #require(try ns.route.link(named: "eth0")).index
            try ns.route.batch([
                AddressRequest.add(namespace: ns.name, index: eth0, interface: "eth0", address: [192, 0, 1, 254], prefixLength: 24),
                RouteRequest.add(namespace: ns.name, destination: [192, 0, 2, 0], prefixLength: 24, outputInterface: eth0, interfaceName: "eth0"),
            ])
        } catch {
            ns.delete()
            throw error
        }
        return ns
    }

    @Test("a packet marked 0x101 matches a policy with mark 0x1/0xff and no state: the kernel sends ACQUIRE carrying that policy",
          .requires(.policyMark))
    func acquireForMarkedPacket() throws {
        let ns = try westStub("xlxp\(getpid())c")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let policy = XfrmPolicy(selector: Self.west, direction: .out, priority: 100, mark: XfrmMark(0x1, mask: 0xff), templates: [Self.template])
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, policy))
        let monitor = try ns.xfrmMonitor()
        defer { monitor.close() }
        let before = try XfrmStatistics.read(ns)

        let refused = try Inject.udp(from: ns, destination: [192, 0, 2, 254], port: 7000, source: [192, 0, 1, 254], sourcePort: 40001, mark: 0x101)
        #expect(refused == nil, "the kernel refused the send: \(refused ?? "")")
        var seen: [XfrmEvent] = []
        let event = try monitor.wait(timeout: 5, seen: { seen.append($0) }) { $0.acquire != nil }
        let acquire = try #require(event?.acquire, "no ACQUIRE within 5 s; saw \(seen)")
        #expect(acquire.policy.mark == XfrmMark(0x1, mask: 0xff))
        #expect(acquire.policy.priority == 100)
        #expect(acquire.policy.selector == Self.west)
        #expect(acquire.policy.templates.first?.reqid == 1)
        #expect(acquire.proto == .esp)
        #expect(formatAddress(acquire.destination) == "192.1.2.23")
        #expect(formatAddress(acquire.source) == "192.1.2.45")
        // The flow is the packet's own: its addresses, protocol and ports.
        #expect(formatAddress(acquire.selector.source) == "192.0.1.254" && acquire.selector.sourcePrefixLength == 32)
        #expect(formatAddress(acquire.selector.destination) == "192.0.2.254" && acquire.selector.destinationPrefixLength == 32)
        #expect(acquire.selector.ipProtocol == 17)
        #expect(acquire.selector.sourcePort == 40001 && acquire.selector.destinationPort == 7000)
        // It found no state: that is what XfrmOutNoStates counts (the packet itself is dropped).
        let after = try XfrmStatistics.read(ns)
        #expect(after["XfrmOutNoStates"] > before["XfrmOutNoStates"], "\(after.increases(since: before))")
    }

    @Test("an unmarked packet, or one whose mark misses the mask (0x102), matches no marked policy: no ACQUIRE",
          .requires(.policyMark), arguments: [nil, 0x102] as [UInt32?])
    func noAcquireWithoutTheMark(mark: UInt32?) throws {
        let ns = try westStub("xlxp\(getpid())d\(mark ?? 0)")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name,
            XfrmPolicy(selector: Self.west, direction: .out, mark: XfrmMark(0x1, mask: 0xff), templates: [Self.template])))
        let monitor = try ns.xfrmMonitor()
        defer { monitor.close() }
        let before = try XfrmStatistics.read(ns)
        let refused = try Inject.udp(from: ns, destination: [192, 0, 2, 254], port: 7000, source: [192, 0, 1, 254], mark: mark)
        #expect(refused == nil, "\(refused ?? "")")
        let events = try monitor.collect(for: 0.5)
        #expect(events.allSatisfy { $0.acquire == nil }, "\(events)")
        let after = try XfrmStatistics.read(ns)
        #expect(after["XfrmOutNoStates"] == before["XfrmOutNoStates"], "\(after.increases(since: before))")
        // The same namespace does acquire for a packet with the mark: the negative is not a broken setup.
        try Inject.udp(from: ns, destination: [192, 0, 2, 254], port: 7000, source: [192, 0, 1, 254], mark: 0x1)
        #expect(try monitor.wait(timeout: 5) { $0.acquire != nil } != nil)
    }

    @Test("a policy with an if_id does not apply to traffic outside an xfrm interface, however preferred; ACQUIRE names the policy that did",
          .requires(.policyInterfaceID))
    func acquireCarriesInterfaceID() throws {
        let ns = try westStub("xlxp\(getpid())e")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        // Without an xfrm interface the lookup sees if_id 0, so give the policy no if_id and
        // check the one with if_id is not what matched: both exist, only the plain one applies.
        try xfrm.batch([
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: Self.west, direction: .out, priority: 10, interfaceID: 9, templates: [Self.template])),
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: Self.west, direction: .out, priority: 20, templates: [Self.template])),
        ])
        let monitor = try ns.xfrmMonitor()
        defer { monitor.close() }
        try Inject.udp(from: ns, destination: [192, 0, 2, 254], port: 7000, source: [192, 0, 1, 254])
        let acquire = try #require(try monitor.wait(timeout: 5) { $0.acquire != nil }?.acquire)
        #expect(acquire.policy.priority == 20, "the packet has no if_id, so the if_id 9 policy must not match: \(acquire)")
        #expect(acquire.policy.interfaceID == nil)
    }
}
