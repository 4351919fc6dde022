import CNetlink
import Glibc
import Netlink
import Testing

@Suite("Netlink messages, without a kernel")
struct EncodingTests {
    @Test("kernel structs have the sizes the uapi headers give on x86_64")
    func layouts() {
        #expect(MemoryLayout<nlmsghdr>.size == 16)
        #expect(MemoryLayout<ifinfomsg>.size == 16)
        #expect(MemoryLayout<ifaddrmsg>.size == 8)
        #expect(MemoryLayout<rtmsg>.size == 12)
        #expect(MemoryLayout<fib_rule_hdr>.size == 12)
        #expect(MemoryLayout<xfrm_usersa_info>.size == 224)
        #expect(MemoryLayout<xfrm_userpolicy_info>.size == 168)
        #expect(MemoryLayout<xfrm_mark>.size == 8)
    }

    @Test("a veth request nests the peer's ifinfomsg and name inside IFLA_LINKINFO/IFLA_INFO_DATA")
    func vethEncoding() throws {
        let r = LinkRequest.veth(namespace: "a", name: "eth1", index: 5, master: 2, mtu: 1400, peerName: "eth9",
                                 peerIndex: 7, peerNamespaceFD: 42, peerNamespaceName: "b")
        let bytes = r.encoded(sequence: 99)
        let messages = try Message.split(bytes)
        try #require(messages.count == 1)
        let m = messages[0]
        #expect(m.type == UInt16(RTM_NEWLINK))
        #expect(m.sequence == 99)
        #expect(m.flags & UInt16(NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK) == UInt16(NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK))
        let header = try m.header(ifinfomsg.self)
        #expect(header.ifi_index == 5)
        #expect(header.ifi_flags & UInt32(IFF_UP) != 0)
        let attrs = try m.attributes(after: MemoryLayout<ifinfomsg>.size)
        #expect(attrs[IFLA_IFNAME]?.string == "eth1")
        #expect(attrs[IFLA_MTU]?.u32 == 1400)
        #expect(attrs[IFLA_MASTER]?.u32 == 2)
        let info = try #require(attrs[IFLA_LINKINFO])
        #expect(info.nested)
        let infoAttrs = try info.children()
        #expect(infoAttrs[IFLA_INFO_KIND]?.string == "veth")
        let data = try #require(infoAttrs[IFLA_INFO_DATA]).children()
        let peer = try #require(data[Int(VETH_INFO_PEER)])
        let peerHeader = try #require(Bytes.load(ifinfomsg.self, from: peer.payload))
        #expect(peerHeader.ifi_index == 7)
        let peerAttrs = try Attributes(parsing: peer.payload[MemoryLayout<ifinfomsg>.size...])
        #expect(peerAttrs[IFLA_IFNAME]?.string == "eth9")
        #expect(peerAttrs[IFLA_NET_NS_FD]?.u32 == 42)
        #expect(r.summary == "ip -n a link add eth1 index 5 mtu 1400 master 2 type veth peer name eth9 index 7 netns b && ip link set eth1 up")
    }

    @Test("a route request for table 1000 carries RTA_TABLE and leaves rtm_table unspecified")
    func routeTable() throws {
        let r = RouteRequest.add(namespace: nil, destination: [10, 0, 0, 0], prefixLength: 8, gateway: [192, 0, 2, 1], table: 1000)
        let m = try Message.split(r.encoded())[0]
        let h = try m.header(rtmsg.self)
        #expect(h.rtm_table == UInt8(RT_TABLE_UNSPEC.rawValue))
        #expect(h.rtm_dst_len == 8)
        let attrs = try m.attributes(after: MemoryLayout<rtmsg>.size)
        #expect(attrs[Int(RTA_TABLE.rawValue)]?.u32 == 1000)
        #expect(attrs[Int(RTA_GATEWAY.rawValue)]?.payload == [192, 0, 2, 1])
        #expect(r.summary == "ip route add 10.0.0.0/8 via 192.0.2.1 table 1000")
    }

    /// An NLMSG_ERROR as a 6.x kernel sends it for `ip link add x type nosuchkind` with
    /// extended acks and capped acks on.
    static func cannedError(errno code: Int32, message: String?, capped: Bool = true, offset: UInt32? = nil) -> Message {
        var payload = Bytes.of(-code)
        var echoed = nlmsghdr()
        echoed.nlmsg_len = 32
        echoed.nlmsg_type = UInt16(RTM_NEWLINK)
        echoed.nlmsg_seq = 7
        payload += Bytes.of(echoed)
        if !capped { payload += [UInt8](repeating: 0xAA, count: 16) }
        var tlvs: [Attribute] = []
        if let message { tlvs.append(.string(UInt16(NLMSGERR_ATTR_MSG.rawValue), message)) }
        if let offset { tlvs.append(.u32(UInt16(NLMSGERR_ATTR_OFFS.rawValue), offset)) }
        var flags = UInt16(0)
        if capped { flags |= UInt16(NLM_F_CAPPED) }
        if !tlvs.isEmpty {
            flags |= UInt16(NLM_F_ACK_TLVS)
            payload += Request(type: 0, flags: [], headerBytes: [], attributes: tlvs, summary: "").encoded().dropFirst(16)
        }
        return Message(type: UInt16(NLMSG_ERROR), flags: flags, sequence: 7, payload: payload)
    }

    @Test("the kernel's extended-ack text survives parsing, capped or not", arguments: [true, false])
    func extendedAck(capped: Bool) throws {
        let m = Self.cannedError(errno: EOPNOTSUPP, message: "Unknown device type", capped: capped, offset: 36)
        let e = try NetlinkSocket.parseError(m, request: "ip link add x type nosuchkind")
        #expect(e.errno == EOPNOTSUPP)
        #expect(e.kernelMessage == "Unknown device type")
        #expect(e.offset == 36)
        #expect(e.description.contains("Error: Unknown device type"))
        #expect(e.description.contains("EOPNOTSUPP"))
        #expect(e.description.hasPrefix("ip link add x type nosuchkind"))
    }

    @Test("an error without extended ack still names errno and request")
    func plainError() throws {
        let e = try NetlinkSocket.parseError(Self.cannedError(errno: EEXIST, message: nil), request: "ip rule add lookup 5")
        #expect(e.errno == EEXIST)
        #expect(e.kernelMessage == nil)
        #expect(e.description == "ip rule add lookup 5: File exists (EEXIST)")
    }
}
