import CNetlink
import Glibc
import Namespaces
import Netlink

/// A tracked connection as ctnetlink reports it (what `conntrack -L` prints).
public struct ConntrackEntry: Sendable, Hashable, CustomStringConvertible {
    public struct Tuple: Sendable, Hashable {
        public var source: [UInt8]
        public var destination: [UInt8]
        public var protocolNumber: UInt8
        public var sourcePort: UInt16?
        public var destinationPort: UInt16?
    }
    public var original: Tuple
    public var reply: Tuple?
    /// The connection's mark (`ct mark`, `CONNMARK`).
    public var mark: UInt32

    init(_ message: Message) throws {
        let attrs = try message.attributes(after: MemoryLayout<nfgenmsg>.size)
        guard let orig = attrs[Int(CTA_TUPLE_ORIG.rawValue)] else { throw MalformedMessage("conntrack entry without CTA_TUPLE_ORIG") }
        original = try ConntrackEntry.tuple(orig.children())
        reply = try attrs[Int(CTA_TUPLE_REPLY.rawValue)].map { try ConntrackEntry.tuple($0.children()) }
        mark = attrs[Int(CTA_MARK.rawValue)]?.u32.map(UInt32.init(bigEndian:)) ?? 0
    }

    static func tuple(_ attrs: Attributes) throws -> Tuple {
        let ip = try attrs[Int(CTA_TUPLE_IP.rawValue)]?.children() ?? Attributes(entries: [])
        let proto = try attrs[Int(CTA_TUPLE_PROTO.rawValue)]?.children() ?? Attributes(entries: [])
        let src = ip[Int(CTA_IP_V4_SRC.rawValue)]?.payload ?? ip[Int(CTA_IP_V6_SRC.rawValue)]?.payload ?? []
        let dst = ip[Int(CTA_IP_V4_DST.rawValue)]?.payload ?? ip[Int(CTA_IP_V6_DST.rawValue)]?.payload ?? []
        return Tuple(source: src, destination: dst, protocolNumber: proto[Int(CTA_PROTO_NUM.rawValue)]?.u8 ?? 0,
                     sourcePort: proto[Int(CTA_PROTO_SRC_PORT.rawValue)]?.u16.map(UInt16.init(bigEndian:)),
                     destinationPort: proto[Int(CTA_PROTO_DST_PORT.rawValue)]?.u16.map(UInt16.init(bigEndian:)))
    }

    public var description: String {
        let o = original
        let ports = o.sourcePort.map { ":\($0)" } ?? ""
        let dports = o.destinationPort.map { ":\($0)" } ?? ""
        return "proto \(o.protocolNumber) \(formatAddress(o.source))\(ports) → \(formatAddress(o.destination))\(dports) mark 0x\(String(mark, radix: 16))"
    }
}

public enum Conntrack {
    /// Every tracked connection in the namespace. Equivalent to `ip netns exec NS conntrack -L`.
    public static func entries(in ns: Namespace) throws -> [ConntrackEntry] {
        let socket = try ns.netlinkSocket(protocol: NetlinkSocket.netfilter)
        defer { socket.close() }
        var h = nfgenmsg()
        h.nfgen_family = UInt8(AF_UNSPEC)
        h.version = UInt8(NFNETLINK_V0)
        let request = Request(type: UInt16(NFNL_SUBSYS_CTNETLINK << 8) | UInt16(IPCTNL_MSG_CT_GET.rawValue), flags: .dump,
                              header: h, summary: "ip netns exec \(ns.name) conntrack -L")
        return try socket.dump(request).map(ConntrackEntry.init)
    }
}
