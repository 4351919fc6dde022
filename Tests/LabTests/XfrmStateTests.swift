import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Probes
import Testing
import XfrmLabTesting
import Xfrm

/// ESP states over NETLINK_XFRM: add, get, update, delete, flush, and the EXPIRE a lifetime
/// limit sends. Needs a kernel with ESP (a VM).
@Suite("XFRM states: add, read back, update, delete, flush, expire", .tags(.privileged, .vm), .needsNamespaces,
       .requires(.esp))
struct XfrmStateTests {
    static func state(spi: UInt32, mode: XfrmMode = .tunnel) -> XfrmState {
        XfrmState(source: parseAddress("2001:db8:1:2::45")!, destination: parseAddress("2001:db8:1:2::23")!, spi: spi,
                  mode: mode, reqid: 5, algorithms: [.aesGCM(key: .random(bits: 160))], mark: XfrmMark(0x1, mask: 0xff),
                  interfaceID: 7, replayWindow: 32)
    }

    @Test("a state reads back as added (keys included), in tunnel and transport mode; update, delete and flush act on it",
          .requires(.outputMarkMask), .requires(.udpEncapsulation))
    func roundTrip() throws {
        let ns = try Namespace.create(name: "xlxs\(getpid())a")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        var tunnel = Self.state(spi: 0x1001)
        tunnel.outputMark = XfrmMark(0x10, mask: 0xff0)
        var transport = XfrmState(source: [192, 1, 2, 45], destination: [192, 1, 2, 23], spi: 0x1002, mode: .transport, reqid: 6,
                                  algorithms: [.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))],
                                  encapsulation: XfrmEncapsulation())
        transport.selector = XfrmSelector(source: "192.1.2.45/32", destination: "192.1.2.23/32", ipProtocol: 17)!
        try xfrm.batch([XfrmStateRequest.add(namespace: ns.name, tunnel), XfrmStateRequest.add(namespace: ns.name, transport)])

        let got = try #require(try xfrm.xfrmState(destination: tunnel.destination, spi: 0x1001, mark: XfrmMark(0x1, mask: 0xff)))
        #expect(got.algorithms == tunnel.algorithms, "the kernel hands the key back; it matches")
        #expect(got.mark == tunnel.mark && got.outputMark == tunnel.outputMark && got.interfaceID == 7)
        #expect(got.mode == .tunnel && got.reqid == 5 && got.replayWindow == 32)
        #expect(got.counters.packets == 0 && got.counters.addTime > 0)
        let all = try xfrm.xfrmStates()
        #expect(all.count == 2)
        let t = try #require(all.first { $0.spi == 0x1002 })
        #expect(t.mode == .transport && t.selector == transport.selector && t.encapsulation == XfrmEncapsulation())
        #expect(t.algorithms.map(\.name) == ["cbc(aes)", "hmac(sha256)"])

        // Adding it again is EEXIST; updating its limits is taken.
        let again = try #require(throws: NetlinkError.self) { try xfrm.request(XfrmStateRequest.add(namespace: ns.name, tunnel)) }
        #expect(again.errno == EEXIST)
        var limited = tunnel
        limited.limits.hardPackets = 1000
        try xfrm.request(XfrmStateRequest.update(namespace: ns.name, limited))
        #expect(try xfrm.xfrmState(destination: tunnel.destination, spi: 0x1001, mark: tunnel.mark)?.limits.hardPackets == 1000)

        try xfrm.request(XfrmStateRequest.delete(namespace: ns.name, destination: tunnel.destination, spi: 0x1001, mark: tunnel.mark))
        #expect(try xfrm.xfrmState(destination: tunnel.destination, spi: 0x1001, mark: tunnel.mark) == nil)
        try xfrm.request(XfrmStateRequest.flush(namespace: ns.name))
        #expect(try xfrm.xfrmStates().isEmpty)
    }

    @Test("a state with soft and hard time limits sends a soft then a hard EXPIRE, and is gone after the hard one")
    func expire() throws {
        let ns = try Namespace.create(name: "xlxs\(getpid())b")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let monitor = try ns.xfrmMonitor()
        defer { monitor.close() }
        var s = Self.state(spi: 0x2001)
        s.limits.softAddSeconds = 1
        s.limits.hardAddSeconds = 4  // apart enough that a slow (emulated) machine still sees both
        try xfrm.request(XfrmStateRequest.add(namespace: ns.name, s))
        var seen: [XfrmExpire] = []
        let hard = try monitor.wait(timeout: 20, seen: { if let e = $0.expire { seen.append(e) } }) { $0.expire?.hard == true }?.expire
        #expect(hard?.state.spi == 0x2001, "\(seen)")
        #expect(hard?.state.limits.hardAddSeconds == 4 && hard?.state.mark == s.mark && hard?.state.interfaceID == 7)
        let soft = try #require(seen.first { !$0.hard }, "no soft EXPIRE before the hard one: \(seen)")
        #expect(soft.state.spi == 0x2001)
        #expect(seen.firstIndex { !$0.hard }! < seen.firstIndex { $0.hard }!)
        #expect(try xfrm.xfrmState(destination: s.destination, spi: 0x2001, mark: s.mark) == nil)
    }
}
