import CNetlink
import Netlink
import TestSupport
import Testing


@Suite("Netlink parsers against hostile bytes")
struct HostileInputTests {
    @Test("a message whose length claims more than was received is refused")
    func lyingMessageLength() {
        var bytes = LinkRequest.bridge(namespace: nil, name: "br0").encoded()
        bytes[0] = 0xFF  // nlmsg_len far beyond the buffer
        #expect(throws: MalformedMessage.self) { try Message.split(bytes) }
    }

    @Test("an attribute whose length runs past its message is refused")
    func lyingAttributeLength() {
        var payload: [UInt8] = [8, 0, 3, 0, 1, 2, 3, 4]
        payload[0] = 200
        #expect(throws: MalformedMessage.self) { try Attributes(parsing: payload[...]) }
        #expect(throws: MalformedMessage.self) { try Attributes(parsing: [3, 0, 1][...]) }
    }

    @Test("a header shorter than its struct is an error, not a read past the end")
    func shortHeader() {
        let m = Message(type: UInt16(RTM_NEWLINK), payload: [1, 2, 3])
        #expect(throws: MalformedMessage.self) { try LinkInfo(m) }
        #expect(throws: MalformedMessage.self) { try RouteInfo(m) }
        #expect(throws: MalformedMessage.self) { try RuleInfo(m) }
        #expect(throws: MalformedMessage.self) { try AddressInfo(m) }
    }

    @Test("thousands of mutated replies never crash the parsers")
    func mutatedReplies() throws {
        var rng = SplitMix64(state: 0x5EED_0002)
        let seeds: [[UInt8]] = [
            LinkRequest.veth(namespace: nil, name: "a", index: 3, peerName: "b", peerIndex: 4, peerNamespaceFD: 9, peerNamespaceName: nil).encoded(),
            RouteRequest.add(namespace: nil, destination: [10, 1, 0, 0], prefixLength: 16, gateway: [10, 1, 0, 1], table: 77).encoded(),
            RuleRequest.add(namespace: nil, family: 2, priority: 10, fwmark: 1, fwmask: 0xff, table: 50, summary: "").encoded(),
            AddressRequest.add(namespace: nil, index: 2, interface: "x", address: [UInt8](repeating: 0x20, count: 16), prefixLength: 64).encoded(),
        ]
        var parsedSomething = 0
        for i in 0..<4000 {
            var bytes = seeds[i % seeds.count]
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                case 1: bytes = Array(bytes.prefix(Int.random(in: 0...bytes.count, using: &rng)))
                case 2: bytes += (0..<Int.random(in: 1...40, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                default:
                    if bytes.count > 20 { bytes[Int.random(in: 16..<bytes.count, using: &rng)] = [0, 4, 0xFF, 0x7F].randomElement(using: &rng)! }
                }
                if bytes.isEmpty { bytes = [0] }
            }
            guard let messages = try? Message.split(bytes) else { continue }
            for m in messages {
                _ = try? LinkInfo(m)
                _ = try? RouteInfo(m)
                _ = try? RuleInfo(m)
                _ = try? AddressInfo(m)
                if let attrs = try? m.attributes(after: 16) {
                    for a in attrs where a.nested { _ = try? a.children() }
                    parsedSomething += 1
                }
            }
        }
        // The test is that we got here; a few survivors show the mutations were not all fatal.
        #expect(parsedSomething > 0)
    }
}
