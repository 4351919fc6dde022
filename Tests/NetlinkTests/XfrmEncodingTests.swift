import CNetlink
import Glibc
import Netlink
import Testing

@Suite("XFRM and tunnel-device messages, without a kernel")
struct XfrmEncodingTests {
    static let key = XfrmKey(hex: "0x00112233445566778899aabbccddeeff01020304")!

    static let state = XfrmState(source: [192, 1, 2, 45], destination: [192, 1, 2, 23], spi: 0xc0ffee, reqid: 7,
                                 algorithms: [.aesGCM(key: key)], encapsulation: XfrmEncapsulation(),
                                 mark: XfrmMark(0x1, mask: 0xff), outputMark: XfrmMark(0x10, mask: 0xff0), interfaceID: 9,
                                 replayWindow: 32)

    @Test("xfrm structs have the sizes the uapi headers give on x86_64")
    func layouts() {
        #expect(MemoryLayout<xfrm_usersa_info>.stride == 224)
        #expect(MemoryLayout<xfrm_userpolicy_info>.stride == 168)
        #expect(MemoryLayout<xfrm_user_tmpl>.stride == 64)
        #expect(MemoryLayout<xfrm_user_acquire>.stride == 280)
        #expect(MemoryLayout<xfrm_usersa_id>.stride == 24)
        #expect(MemoryLayout<xfrm_encap_tmpl>.stride == 24)
    }

    @Test("a state add carries usersa_info, AEAD, encap, mark, output mark and if_id; its summary is the ip command without the key")
    func stateAdd() throws {
        let r = XfrmStateRequest.add(namespace: "west", Self.state)
        #expect(r.summary == "ip -n west xfrm state add src 192.1.2.45 dst 192.1.2.23 proto esp spi 0xc0ffee reqid 7 mode tunnel replay-window 32 aead 'rfc4106(gcm(aes))' <key 160 bits> 128 mark 0x1 mask 0xff encap espinudp 4500 4500 0.0.0.0 output-mark 0x10 mask 0xff0 if_id 0x9")
        let m = try Message.split(r.encoded())[0]
        #expect(m.type == UInt16(XFRM_MSG_NEWSA))
        #expect(m.flags & UInt16(NLM_F_CREATE | NLM_F_EXCL) == UInt16(NLM_F_CREATE | NLM_F_EXCL))
        let info = try m.header(xfrm_usersa_info.self)
        #expect(UInt32(bigEndian: info.id.spi) == 0xc0ffee)
        #expect(info.id.proto == 50)
        #expect(info.family == UInt16(AF_INET))
        #expect(info.mode == 1)
        #expect(info.reqid == 7)
        #expect(info.lft.hard_byte_limit == .max, "no limit is XFRM_INF")
        let attrs = try m.attributes(after: 224)
        let aead = try #require(attrs[UInt16(XFRMA_ALG_AEAD.rawValue)]?.payload)
        #expect(String(decoding: aead.prefix(17), as: UTF8.self) == "rfc4106(gcm(aes))")
        #expect(Bytes.load(UInt32.self, from: aead[64...]) == 160)
        #expect(Bytes.load(UInt32.self, from: aead[68...]) == 128)
        #expect(Array(aead[72...]) == Self.key.revealedBytes)
        #expect(attrs[UInt16(XFRMA_MARK.rawValue)]?.value(xfrm_mark.self).map { [$0.v, $0.m] } == [0x1, 0xff])
        #expect(attrs[UInt16(XFRMA_SET_MARK.rawValue)]?.u32 == 0x10)
        #expect(attrs[UInt16(XFRMA_SET_MARK_MASK.rawValue)]?.u32 == 0xff0)
        #expect(attrs[UInt16(XFRMA_IF_ID.rawValue)]?.u32 == 9)
        let encap = try #require(attrs[UInt16(XFRMA_ENCAP.rawValue)]?.value(xfrm_encap_tmpl.self))
        #expect(encap.encap_type == 2 && UInt16(bigEndian: encap.encap_dport) == 4500)
    }

    @Test("a state parses back from its own message, counters and all")
    func stateRoundTrip() throws {
        let m = try Message.split(XfrmStateRequest.add(namespace: nil, Self.state).encoded())[0]
        let back = try XfrmState(m)
        #expect(back == Self.state)
        var cbc = Self.state
        cbc.algorithms = [.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))]
        cbc.encapsulation = nil
        #expect(try XfrmState(Message.split(XfrmStateRequest.add(namespace: nil, cbc).encoded())[0]) == cbc)
    }

    @Test("keys never print: description, debug description, reflection and the state's own text")
    func keysHidden() {
        let hex = "00112233445566778899aabbccddeeff01020304"
        #expect("\(Self.key)" == "<key 160 bits>")
        #expect(String(reflecting: Self.key) == "<key 160 bits>")
        var dumped = ""
        dump(Self.state, to: &dumped)
        for text in ["\(Self.state)", String(reflecting: Self.state), dumped, Self.state.lines.joined(), "\(Self.state.algorithms)"] {
            #expect(!text.contains(hex), "\(text)")
        }
        #expect(Self.state.arguments(revealingKeys: true).contains("0x" + hex), "revealing is possible when asked")
        #expect(XfrmKey(hex: "0x123") == nil && XfrmKey(hex: "zz") == nil)
    }

    @Test("a policy add carries its templates, mark and if_id and parses back")
    func policyRoundTrip() throws {
        let t = XfrmTemplate(source: [192, 1, 2, 45], destination: [192, 1, 2, 23], reqid: 3)
        let p = XfrmPolicy(selector: XfrmSelector(source: "2001:db8:0:1::/64", destination: "2001:db8:0:2::/64", ipProtocol: 17, destinationPort: 500)!,
                           direction: .fwd, priority: 42, mark: XfrmMark(0x1, mask: 0xff), interfaceID: 7, templates: [t])
        let r = XfrmPolicyRequest.add(namespace: "east", p)
        #expect(r.summary == "ip -n east xfrm policy add src 2001:db8:0:1::/64 dst 2001:db8:0:2::/64 proto udp dport 500 dir fwd mark 0x1 mask 0xff priority 42 if_id 0x7 tmpl src 192.1.2.45 dst 192.1.2.23 proto esp reqid 3 mode tunnel")
        let m = try Message.split(r.encoded())[0]
        let info = try m.header(xfrm_userpolicy_info.self)
        #expect(info.sel.family == UInt16(AF_INET6) && info.sel.prefixlen_d == 64 && UInt16(bigEndian: info.sel.dport) == 500)
        #expect(info.sel.dport_mask == 0xffff && info.sel.sport_mask == 0)
        let tmpl = try #require(try m.attributes(after: 168)[UInt16(XFRMA_TMPL.rawValue)])
        #expect(tmpl.payload.count == 64)
        #expect(try XfrmPolicy(m) == p)
    }

    @Test("lookups and flushes say which ip command they are")
    func summaries() {
        #expect(XfrmStateRequest.delete(namespace: "w", destination: [192, 1, 2, 23], spi: 0x100, mark: XfrmMark(1)).summary
            == "ip -n w xfrm state delete dst 192.1.2.23 proto esp spi 0x100 mark 0x1 mask 0xffffffff")
        #expect(XfrmStateRequest.flush(namespace: nil).summary == "ip xfrm state flush")
        #expect(XfrmPolicyRequest.delete(namespace: nil, selector: .all(family: UInt16(AF_INET)), direction: .in, index: 9).summary
            == "ip xfrm policy delete index 9 dir in")
        #expect(XfrmStateRequest.dump(namespace: nil).header.isEmpty, "dumps send no fixed header, as iproute2")
    }

    @Test("VTI and xfrm interface requests nest their settings in IFLA_INFO_DATA; VTI keys go big-endian")
    func tunnelDevices() throws {
        let vti = LinkRequest.vti(namespace: "west", name: "vti0", local: [192, 1, 2, 45], remote: [192, 1, 2, 23], inputKey: 16, outputKey: 16)
        #expect(vti.summary == "ip -n west link add vti0 type vti local 192.1.2.45 remote 192.1.2.23 ikey 16 okey 16 && ip link set vti0 up")
        let vm = try Message.split(vti.encoded())[0]
        let info = try #require(try vm.attributes(after: 16)[IFLA_LINKINFO]).children()
        #expect(info[IFLA_INFO_KIND]?.string == "vti")
        let data = try #require(info[IFLA_INFO_DATA]).children()
        #expect(data[IFLA_VTI_IKEY]?.payload == [0, 0, 0, 16])
        #expect(data[IFLA_VTI_REMOTE]?.payload == [192, 1, 2, 23])
        let six = LinkRequest.vti(namespace: nil, name: "vti6", local: parseAddress("2001:db8::1")!, remote: parseAddress("2001:db8::2")!)
        #expect(try Message.split(six.encoded())[0].attributes(after: 16)[IFLA_LINKINFO]!.children()[IFLA_INFO_KIND]?.string == "vti6")

        let x = LinkRequest.xfrmInterface(namespace: "west", name: "ipsec1", interfaceID: 7, link: 3, linkName: "eth1", external: false)
        #expect(x.summary == "ip -n west link add ipsec1 type xfrm dev eth1 if_id 0x7 && ip link set ipsec1 up")
        let xm = try Message.split(x.encoded())[0]
        let xdata = try #require(try xm.attributes(after: 16)[IFLA_LINKINFO]!.children()[IFLA_INFO_DATA]).children()
        #expect(xdata[IFLA_XFRM_IF_ID]?.u32 == 7)
        #expect(xdata[IFLA_XFRM_LINK]?.u32 == 3)
        #expect(xdata[IFLA_XFRM_COLLECT_METADATA] == nil)
        let ext = LinkRequest.xfrmInterface(namespace: nil, name: "ipsec0", interfaceID: nil, external: true)
        #expect(ext.summary == "ip link add ipsec0 type xfrm external && ip link set ipsec0 up")
    }

    /// A message as the kernel would send it: the request encoder's bytes, split back.
    static func message(_ type: Int, _ header: [UInt8], _ attributes: [Attribute] = []) throws -> Message {
        let bytes = Request(type: UInt16(type), flags: .request, headerBytes: header, attributes: attributes, summary: "").encoded()
        return try #require(try Message.split(bytes).first)
    }

    static func address(_ bytes: [UInt8]) -> xfrm_address_t {
        var a = xfrm_address_t()
        withUnsafeMutableBytes(of: &a) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        return a
    }

    @Test("MIGRATE, POLEXPIRE, REPORT, MAPPING and NEWAE parse into their own types; short ones are malformed, not a crash")
    func otherEvents() throws {
        let migration = XfrmMigration(oldSource: [192, 1, 2, 45], oldDestination: [192, 1, 2, 23],
                                      newSource: [192, 1, 3, 45], newDestination: [192, 1, 2, 23], reqid: 7)
        let selector = XfrmSelector(source: "192.0.1.0/24", destination: "192.0.2.0/24")!
        let request = XfrmPolicyRequest.migrate(namespace: nil, selector: selector, direction: .out, migrations: [migration, migration])
        let migrate = try XfrmEvent(Self.message(XFRM_MSG_MIGRATE, request.header, request.attributes)).migrate
        #expect(migrate?.migrations == [migration, migration] && migrate?.selector == selector && migrate?.direction == .out)

        var expire = xfrm_user_polexpire()
        expire.pol.dir = 1  // XFRM_POLICY_OUT
        expire.pol.priority = 5
        expire.pol.sel.family = UInt16(AF_INET)
        expire.hard = 1
        let policyExpire = try XfrmEvent(Self.message(XFRM_MSG_POLEXPIRE, Bytes.of(expire))).policyExpire
        #expect(policyExpire?.hard == true && policyExpire?.policy.priority == 5 && policyExpire?.policy.direction == .out, "\(String(describing: policyExpire))")

        var report = xfrm_user_report()
        report.proto = UInt8(IPPROTO_ESP)
        report.sel.family = UInt16(AF_INET6)
        let coaddr: [UInt8] = [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [9]
        let r = try XfrmEvent(Self.message(XFRM_MSG_REPORT, Bytes.of(report),
                                           [Attribute(UInt16(XFRMA_COADDR.rawValue), bytes: Bytes.of(Self.address(coaddr)))])).report
        #expect(r?.careOfAddress == coaddr && r?.selector.family == UInt16(AF_INET6), "\(String(describing: r))")

        var mapping = xfrm_user_mapping()
        mapping.id.daddr = Self.address([192, 1, 2, 23])
        mapping.id.spi = UInt32(0x1234).bigEndian
        mapping.id.family = UInt16(AF_INET)
        mapping.id.proto = UInt8(IPPROTO_ESP)
        mapping.reqid = 3
        mapping.old_saddr = Self.address([198, 51, 100, 1])
        mapping.new_saddr = Self.address([198, 51, 100, 2])
        mapping.old_sport = UInt16(4500).bigEndian
        mapping.new_sport = UInt16(1025).bigEndian
        let m = try XfrmEvent(Self.message(XFRM_MSG_MAPPING, Bytes.of(mapping))).mapping
        #expect(m?.description == "mapping esp spi 0x1234 dst 192.1.2.23 reqid 3: 198.51.100.1:4500 → 198.51.100.2:1025", "\(String(describing: m))")

        var ae = xfrm_aevent_id()
        ae.sa_id.daddr = Self.address([192, 1, 2, 23])
        ae.sa_id.spi = UInt32(0x1234).bigEndian
        ae.sa_id.family = UInt16(AF_INET)
        ae.sa_id.proto = UInt8(IPPROTO_ESP)
        ae.saddr = Self.address([192, 1, 2, 45])
        var replay = xfrm_replay_state()
        replay.oseq = 10
        replay.seq = 8
        var current = xfrm_lifetime_cur()
        current.packets = 18
        current.bytes = 1800
        let a = try XfrmEvent(Self.message(XFRM_MSG_NEWAE, Bytes.of(ae), [
            Attribute(UInt16(XFRMA_REPLAY_VAL.rawValue), bytes: Bytes.of(replay)),
            Attribute(UInt16(XFRMA_LTIME_VAL.rawValue), bytes: Bytes.of(current)),
        ])).asyncEvent
        #expect(a?.outboundSequence == 10 && a?.inboundSequence == 8 && a?.counters?.packets == 18 && a?.spi == 0x1234
                    && a?.source == [192, 1, 2, 45], "\(String(describing: a))")

        for type in [XFRM_MSG_MIGRATE, XFRM_MSG_POLEXPIRE, XFRM_MSG_REPORT, XFRM_MSG_MAPPING, XFRM_MSG_NEWAE] {
            #expect(throws: MalformedMessage.self, "type \(type)") { try XfrmEvent(Message(type: UInt16(type), payload: Array(repeating: 0, count: 3))) }
        }
    }

    @Test("an ACQUIRE too short for its struct is a malformed message, not a crash")
    func shortAcquire() {
        let m = Message(type: UInt16(XFRM_MSG_ACQUIRE), payload: Array(repeating: 0, count: 100))
        #expect(throws: MalformedMessage.self) { try XfrmEvent(m) }
        let e = Message(type: UInt16(XFRM_MSG_EXPIRE), payload: Array(repeating: 0xff, count: 10))
        #expect(throws: MalformedMessage.self) { try XfrmEvent(e) }
    }
}
