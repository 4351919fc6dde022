import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Testing
import XfrmLabTesting
import Xfrm

/// XFRM notifications and queries beyond ACQUIRE and EXPIRE, typed: a policy's expiry reaches a
/// listener in its namespace, an SA's replay state and counters are asked for and read.
@Suite("XFRM notifications and queries: a policy's expiry, an SA's replay state", .tags(.privileged), .needsNamespaces)
struct XfrmEventTests {
    @Test("a policy with a 1 s hard lifetime expires: a hard POLEXPIRE with its selector reaches the namespace's listener, and the policy is gone",
          .requires(.xfrmPolicy))
    func policyExpires() throws {
        let ns = try Namespace.create(name: "xlev\(getpid())p")
        defer { ns.delete() }
        let xfrm = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
        defer { xfrm.close() }
        let monitor = XfrmMonitor(socket: try ns.netlinkSocket(protocol: NetlinkSocket.xfrm, groups: [XfrmMonitor.expireGroup]))
        defer { monitor.close() }
        var limits = XfrmLifetimeLimits()
        limits.hardAddSeconds = 1
        let selector = XfrmSelector(source: "192.0.1.0/24", destination: "192.0.2.0/24")!
        let policy = XfrmPolicy(selector: selector, direction: .out, priority: 9, limits: limits)
        try xfrm.request(XfrmPolicyRequest.add(namespace: ns.name, policy))
        var seen: [XfrmEvent] = []
        let expired = try #require(try monitor.wait(timeout: 15, seen: { seen.append($0) }) { $0.policyExpire?.hard == true }?.policyExpire,
                                   "no hard POLEXPIRE in 15 s; seen: \(seen)")
        #expect(expired.policy.selector == selector && expired.policy.direction == .out && expired.policy.priority == 9, "\(expired)")
        #expect(try xfrm.xfrmPolicies().isEmpty, "the hard expiry removes the policy")
    }

    @Test("GETAE answers an SA's sequence numbers and counters; an SA that is not there is ESRCH, in the request's words",
          .requires(.esp))
    func asyncEvent() throws {
        let ns = try Namespace.create(name: "xlev\(getpid())a")
        defer { ns.delete() }
        let xfrm = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
        defer { xfrm.close() }
        let source: [UInt8] = [192, 1, 2, 45], destination: [UInt8] = [192, 1, 2, 23]
        try xfrm.request(XfrmStateRequest.add(namespace: ns.name, XfrmState(
            source: source, destination: destination, spi: 0x4242, reqid: 4, algorithms: [.aesGCM(key: .random(bits: 160))])))
        let event = try #require(try xfrm.xfrmAsyncEvent(source: source, destination: destination, spi: 0x4242))
        #expect(event.spi == 0x4242 && event.destination == destination && event.reqid == 4, "\(event)")
        #expect(event.outboundSequence == 0 && event.inboundSequence == 0 && event.counters?.packets == 0, "\(event)")
        let missing = try #require(throws: NetlinkError.self) {
            try xfrm.request(XfrmStateRequest.getAsyncEvent(namespace: ns.name, source: source, destination: destination, spi: 0x4343))
        }
        #expect(missing.errno == ESRCH, "\(missing)")
        #expect(missing.request == "ip -n \(ns.name) xfrm state get-ae src 192.1.2.45 dst 192.1.2.23 proto esp spi 0x4343")
    }
}
