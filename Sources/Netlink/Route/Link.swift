import CNetlink
import Glibc

/// A network device as the kernel reports it (`RTM_NEWLINK` in a dump).
public struct LinkInfo: Sendable, Hashable {
    public var index: Int32
    public var name: String
    public var flags: UInt32
    public var kind: String?
    public var mtu: UInt32?
    /// `IFLA_MASTER`: the bridge (or VRF) this device is enslaved to.
    public var master: Int32?
    /// `IFLA_LINK`: the peer (veth) or lower device, in `linkNamespaceID`'s namespace.
    public var link: Int32?
    public var linkNamespaceID: Int32?
    public var hardwareAddress: [UInt8]
    public var statistics: Statistics?
    /// RFC 2863 operational state (IFLA_OPERSTATE: 0 unknown, 2 down, 3 lower layer down, 6 up).
    /// The kernel's link watch sets it when it handles a carrier change, in the same step that
    /// gives the device its real queue (until then, what it sends is dropped).
    public var operationalState: UInt8?

    /// Up, or a device without a carrier of its own (lo, a tunnel: "unknown").
    public var isOperational: Bool { operationalState.map { $0 == 6 || $0 == 0 } ?? true }

    public struct Statistics: Sendable, Hashable {
        public var rxPackets: UInt64
        public var txPackets: UInt64
        public var rxBytes: UInt64
        public var txBytes: UInt64
        public var rxDropped: UInt64
        public var txDropped: UInt64
        /// Transmit errors; an xfrm interface counts a packet it drops here.
        public var txErrors: UInt64 = 0
        /// An xfrm interface counts "Local routing loop detected" (ESP routed into itself) here.
        public var collisions: UInt64 = 0
    }

    public var isUp: Bool { flags & UInt32(IFF_UP) != 0 }

    public init(_ message: Message) throws {
        let h = try message.header(ifinfomsg.self)
        let attrs = try message.attributes(after: MemoryLayout<ifinfomsg>.size)
        index = h.ifi_index
        flags = h.ifi_flags
        name = attrs[IFLA_IFNAME]?.string ?? ""
        mtu = attrs[IFLA_MTU]?.u32
        master = attrs[IFLA_MASTER]?.i32
        link = attrs[IFLA_LINK]?.i32
        linkNamespaceID = attrs[IFLA_LINK_NETNSID]?.i32
        hardwareAddress = attrs[IFLA_ADDRESS]?.payload ?? []
        operationalState = attrs[IFLA_OPERSTATE]?.payload.first
        if let info = attrs[IFLA_LINKINFO] {
            kind = try info.children()[IFLA_INFO_KIND]?.string
        }
        if let s = attrs[IFLA_STATS64]?.value(rtnl_link_stats64.self) {
            statistics = Statistics(rxPackets: s.rx_packets, txPackets: s.tx_packets, rxBytes: s.rx_bytes,
                                    txBytes: s.tx_bytes, rxDropped: s.rx_dropped, txDropped: s.tx_dropped,
                                    txErrors: s.tx_errors, collisions: s.collisions)
        }
    }
}

/// Link requests (rtnetlink `RTM_*LINK`), each documented as the `ip link` command it equals.
public enum LinkRequest {
    static func header(index: Int32 = 0, up: Bool? = nil) -> ifinfomsg {
        var h = ifinfomsg()
        h.ifi_family = nl8(AF_UNSPEC)
        h.ifi_index = index
        if let up {
            h.ifi_change = UInt32(IFF_UP)
            h.ifi_flags = up ? UInt32(IFF_UP) : 0
        }
        return h
    }

    /// A veth pair: `name` here, `peerName` in the namespace open as `peerNamespaceFD`.
    /// Both ends get the indexes asked for (0: the kernel chooses); this end comes up when
    /// `up`, the peer stays down until set up in its own namespace.
    ///
    /// Equivalent to `ip link add NAME index I [master M] type veth peer name PEER index J netns NS`.
    public static func veth(namespace: String?, name: String, index: Int32 = 0, master: Int32? = nil,
                            mtu: UInt32? = nil, up: Bool = true,
                            peerName: String, peerIndex: Int32 = 0, peerNamespaceFD: Int32?,
                            peerNamespaceName: String?, origin: String? = nil) -> Request {
        var peerAttributes: [Attribute] = [.string(nl16(IFLA_IFNAME), peerName)]
        if let peerNamespaceFD { peerAttributes.append(.u32(nl16(IFLA_NET_NS_FD), UInt32(peerNamespaceFD))) }
        if let mtu { peerAttributes.append(.u32(nl16(IFLA_MTU), mtu)) }
        // The peer cannot be brought up here: veth_open() refuses (ENOTCONN) until the pair
        // is linked, which happens after the peer is configured. Bring it up afterwards.
        let peer = Bytes.of(header(index: peerIndex)) + Attribute.encode(peerAttributes)
        var attrs: [Attribute] = [.string(nl16(IFLA_IFNAME), name)]
        if let mtu { attrs.append(.u32(nl16(IFLA_MTU), mtu)) }
        if let master { attrs.append(.u32(nl16(IFLA_MASTER), UInt32(master))) }
        attrs.append(.nest(nl16(IFLA_LINKINFO), [
            .string(nl16(IFLA_INFO_KIND), "veth"),
            .nest(nl16(IFLA_INFO_DATA), [Attribute(nl16(VETH_INFO_PEER), bytes: peer)]),
        ]))
        var s = ipPrefix(namespace) + "link add \(name)"
        if index != 0 { s += " index \(index)" }
        if let mtu { s += " mtu \(mtu)" }
        if let master { s += " master \(master)" }
        s += " type veth peer name \(peerName)"
        if peerIndex != 0 { s += " index \(peerIndex)" }
        if let peerNamespaceName { s += " netns \(peerNamespaceName)" }
        if up { s += " && ip link set \(name) up" }
        return Request(type: nl16(RTM_NEWLINK), flags: .add, header: header(index: index, up: up),
                       attributes: attrs, summary: s, origin: origin)
    }

    /// A bridge with STP off, so ports forward at once.
    ///
    /// Equivalent to `ip link add NAME index I type bridge stp_state 0` and `ip link set NAME up`.
    public static func bridge(namespace: String?, name: String, index: Int32 = 0, mtu: UInt32? = nil,
                              up: Bool = true, origin: String? = nil) -> Request {
        var attrs: [Attribute] = [.string(nl16(IFLA_IFNAME), name)]
        if let mtu { attrs.append(.u32(nl16(IFLA_MTU), mtu)) }
        attrs.append(.nest(nl16(IFLA_LINKINFO), [
            .string(nl16(IFLA_INFO_KIND), "bridge"),
            .nest(nl16(IFLA_INFO_DATA), [.u32(nl16(IFLA_BR_STP_STATE), 0), .u32(nl16(IFLA_BR_FORWARD_DELAY), 0)]),
        ]))
        var s = ipPrefix(namespace) + "link add \(name)"
        if index != 0 { s += " index \(index)" }
        s += " type bridge stp_state 0 forward_delay 0"
        return Request(type: nl16(RTM_NEWLINK), flags: .add, header: header(index: index, up: up),
                       attributes: attrs, summary: s, origin: origin)
    }

    /// A macvlan device on `lowerIndex` (in the socket's namespace), placed in the namespace
    /// open as `targetNamespaceFD` when given. It stays down: a device moved at creation is
    /// brought up in its own namespace.
    ///
    /// Equivalent to `ip link add link LOWER name NAME index I [netns NS] type macvlan mode bridge`.
    public static func macvlan(namespace: String?, name: String, index: Int32 = 0, lowerIndex: Int32,
                               mode: UInt32 = UInt32(MACVLAN_MODE_BRIDGE.rawValue), mtu: UInt32? = nil,
                               targetNamespaceFD: Int32? = nil, targetNamespaceName: String? = nil,
                               origin: String? = nil) -> Request {
        var attrs: [Attribute] = [
            .string(nl16(IFLA_IFNAME), name),
            .u32(nl16(IFLA_LINK), UInt32(lowerIndex)),
            .nest(nl16(IFLA_LINKINFO), [
                .string(nl16(IFLA_INFO_KIND), "macvlan"),
                .nest(nl16(IFLA_INFO_DATA), [.u32(nl16(IFLA_MACVLAN_MODE), mode)]),
            ]),
        ]
        if let mtu { attrs.append(.u32(nl16(IFLA_MTU), mtu)) }
        if let targetNamespaceFD { attrs.append(.u32(nl16(IFLA_NET_NS_FD), UInt32(targetNamespaceFD))) }
        var s = ipPrefix(namespace) + "link add link \(lowerIndex) name \(name)"
        if index != 0 { s += " index \(index)" }
        if let targetNamespaceName { s += " netns \(targetNamespaceName)" }
        s += " type macvlan mode \(mode == UInt32(MACVLAN_MODE_BRIDGE.rawValue) ? "bridge" : String(mode))"
        return Request(type: nl16(RTM_NEWLINK), flags: .add, header: header(index: index), attributes: attrs,
                       summary: s, origin: origin)
    }

    /// Equivalent to `ip link set dev NAME up|down` (by index).
    public static func set(namespace: String?, index: Int32, name: String, up: Bool) -> Request {
        Request(type: nl16(RTM_NEWLINK), flags: .modify, header: header(index: index, up: up),
                summary: ipPrefix(namespace) + "link set dev \(name) \(up ? "up" : "down")")
    }

    /// Stops the kernel from giving the device an IPv6 link-local address (and so from DAD and
    /// MLD chatter on it): for devices that hold no address, such as bridge ports. Must come
    /// before the device goes up; the kernel refuses it in the creating request.
    ///
    /// Equivalent to `ip link set dev NAME addrgenmode none`.
    public static func noLinkLocal(namespace: String?, index: Int32, name: String) -> Request {
        Request(type: nl16(RTM_NEWLINK), flags: .modify, header: header(index: index),
                attributes: [.nest(nl16(IFLA_AF_SPEC), [
                    .nest(nl16(AF_INET6), [.u8(nl16(IFLA_INET6_ADDR_GEN_MODE), nl8(IN6_ADDR_GEN_MODE_NONE.rawValue))]),
                ])],
                summary: ipPrefix(namespace) + "link set dev \(name) addrgenmode none")
    }

    /// Equivalent to `ip link set dev NAME master MASTER`.
    public static func setMaster(namespace: String?, index: Int32, name: String, master: Int32) -> Request {
        Request(type: nl16(RTM_NEWLINK), flags: .modify, header: header(index: index),
                attributes: [.u32(nl16(IFLA_MASTER), UInt32(master))],
                summary: ipPrefix(namespace) + "link set dev \(name) master \(master)")
    }

    /// Moves a device into the namespace open as `targetNamespaceFD`.
    ///
    /// Equivalent to `ip link set dev NAME netns NS`.
    public static func moveToNamespace(namespace: String?, index: Int32, name: String, targetNamespaceFD: Int32,
                                       targetNamespaceName: String) -> Request {
        Request(type: nl16(RTM_NEWLINK), flags: .modify, header: header(index: index),
                attributes: [.u32(nl16(IFLA_NET_NS_FD), UInt32(bitPattern: targetNamespaceFD))],
                summary: ipPrefix(namespace) + "link set dev \(name) netns \(targetNamespaceName)")
    }

    /// Equivalent to `ip link del dev NAME`.
    public static func delete(namespace: String?, index: Int32 = 0, name: String) -> Request {
        var attrs: [Attribute] = []
        if index == 0 { attrs.append(.string(nl16(IFLA_IFNAME), name)) }
        return Request(type: nl16(RTM_DELLINK), flags: .modify, header: header(index: index), attributes: attrs,
                       summary: ipPrefix(namespace) + "link del dev \(name)")
    }

    /// Equivalent to `ip link show` (a dump), with statistics.
    public static func dump(namespace: String?) -> Request {
        Request(type: nl16(RTM_GETLINK), flags: .dump, header: header(),
                summary: ipPrefix(namespace) + "link show")
    }

    /// Equivalent to `ip link show dev NAME`.
    public static func get(namespace: String?, name: String) -> Request {
        Request(type: nl16(RTM_GETLINK), flags: .modify, header: header(),
                attributes: [.string(nl16(IFLA_IFNAME), name)],
                summary: ipPrefix(namespace) + "link show dev \(name)")
    }
}

extension NetlinkSocket {
    /// Every link in the socket's namespace. Equivalent to `ip -s link show`.
    public func links(namespace: String? = nil) throws -> [LinkInfo] {
        try dump(LinkRequest.dump(namespace: namespace)).filter { $0.type == nl16(RTM_NEWLINK) }.map(LinkInfo.init)
    }

    /// One link by name, or nil when there is none. Equivalent to `ip link show dev NAME`.
    public func link(named name: String, namespace: String? = nil) throws -> LinkInfo? {
        do {
            return try request(LinkRequest.get(namespace: namespace, name: name)).first.map(LinkInfo.init)
        } catch let e as NetlinkError where e.errno == ENODEV {
            return nil
        }
    }
}
