import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink

/// One packet as an nftables `log group N` rule reported it over nfnetlink_log.
public struct LoggedPacket: Sendable, Hashable {
    /// The rule's log prefix.
    public var prefix: String
    /// The netfilter hook number (`NF_INET_PRE_ROUTING` = 0 … `NF_INET_POST_ROUTING` = 4).
    public var hook: UInt8
    public var mark: UInt32
    public var inputInterface: Int32?
    public var outputInterface: Int32?
    /// Per-group sequence number (`NFULA_SEQ`): the order within one namespace.
    public var sequence: UInt32?
    /// The connection's mark (`ct mark`), when the listener asked for conntrack data and the
    /// packet belongs to a tracked connection.
    public var connectionMark: UInt32?
    public var packet: PacketSummary?
    public var payload: [UInt8]

    /// Parses an `NFULNL_MSG_PACKET` message.
    public init(_ message: Message) throws {
        let attrs = try message.attributes(after: MemoryLayout<nfgenmsg>.size)
        prefix = attrs[Int(NFULA_PREFIX.rawValue)]?.string ?? ""
        hook = attrs[Int(NFULA_PACKET_HDR.rawValue)]?.value(nfulnl_msg_packet_hdr.self)?.hook ?? 255
        // nfnetlink_log sends numbers in network byte order.
        mark = attrs[Int(NFULA_MARK.rawValue)]?.u32.map(UInt32.init(bigEndian:)) ?? 0
        inputInterface = attrs[Int(NFULA_IFINDEX_INDEV.rawValue)]?.u32.map { Int32(bitPattern: UInt32(bigEndian: $0)) }
        outputInterface = attrs[Int(NFULA_IFINDEX_OUTDEV.rawValue)]?.u32.map { Int32(bitPattern: UInt32(bigEndian: $0)) }
        sequence = attrs[Int(NFULA_SEQ.rawValue)]?.u32.map(UInt32.init(bigEndian:))
        payload = attrs[Int(NFULA_PAYLOAD.rawValue)]?.payload ?? []
        if let ct = attrs[Int(NFULA_CT.rawValue)], let ctAttrs = try? ct.children() {
            connectionMark = ctAttrs[Int(CTA_MARK.rawValue)]?.u32.map(UInt32.init(bigEndian:)) ?? 0
        }
        packet = PacketSummary(payload)
    }
}

/// A listener for one nfnetlink_log group inside a namespace.
///
/// Equivalent to what `ulogd` or `tcpdump -i nflog:N` bind: `NFULNL_CFG_CMD_BIND` on the group,
/// packet copy mode, a queue threshold of 1 so each packet is sent at once, sequence numbers.
public final class NFLogListener: @unchecked Sendable {
    public let group: UInt16
    public let namespace: Namespace
    let socket: NetlinkSocket
    /// Whether packets carry their connection's data (`NFULNL_CFG_F_CONNTRACK`); false on
    /// kernels without the conntrack glue, where asking is refused.
    public private(set) var connectionTracking = false
    /// The kernel's answer when it refused conntrack data.
    public private(set) var connectionTrackingRefusal: String?

    public init(namespace: Namespace, group: UInt16, copyRange: UInt32 = 256) throws {
        self.group = group
        self.namespace = namespace
        socket = try namespace.netlinkSocket(protocol: NetlinkSocket.netfilter)
        var cmd = nfulnl_msg_config_cmd()
        cmd.command = UInt8(NFULNL_CFG_CMD_BIND.rawValue)
        var mode = nfulnl_msg_config_mode()
        mode.copy_range = copyRange.bigEndian
        mode.copy_mode = UInt8(NFULNL_COPY_PACKET)
        try socket.request(NFLogListener.config(group: group, namespace: namespace.name, summary: "bind", [
            .value(UInt16(NFULA_CFG_CMD.rawValue), cmd),
        ]))
        try socket.request(NFLogListener.config(group: group, namespace: namespace.name, summary: "copy packet, threshold 1", [
            .value(UInt16(NFULA_CFG_MODE.rawValue), mode),
            .u32(UInt16(NFULA_CFG_QTHRESH.rawValue), UInt32(1).bigEndian),
            .u32(UInt16(NFULA_CFG_TIMEOUT.rawValue), UInt32(0).bigEndian),
        ]))
        // Sequence numbers order the packets; conntrack data gives their connection's mark.
        do {
            try socket.request(NFLogListener.flags(group: group, namespace: namespace.name,
                                                   UInt16(NFULNL_CFG_F_SEQ | NFULNL_CFG_F_CONNTRACK)))
            connectionTracking = true
        } catch let e as NetlinkError {
            connectionTrackingRefusal = "NFULA_CFG_FLAGS NFULNL_CFG_F_CONNTRACK → \(errnoName(e.errno))" + (e.kernelMessage.map { " (\($0))" } ?? "")
            try socket.request(NFLogListener.flags(group: group, namespace: namespace.name, UInt16(NFULNL_CFG_F_SEQ)))
        }
    }

    static func flags(group: UInt16, namespace: String, _ flags: UInt16) -> Request {
        config(group: group, namespace: namespace, summary: "flags 0x\(String(flags, radix: 16))",
               [.u16(UInt16(NFULA_CFG_FLAGS.rawValue), flags.bigEndian)])
    }

    static func config(group: UInt16, namespace: String, summary: String, _ attrs: [Attribute]) -> Request {
        var h = nfgenmsg()
        h.nfgen_family = UInt8(AF_UNSPEC)
        h.version = UInt8(NFNETLINK_V0)
        h.res_id = group.bigEndian
        return Request(type: UInt16(NFNL_SUBSYS_ULOG << 8) | UInt16(NFULNL_MSG_CONFIG.rawValue), flags: .modify,
                       header: h, attributes: attrs, summary: "nflog group \(group) in \(namespace): \(summary)")
    }

    /// Reads what has arrived, waiting up to `timeout` seconds for the first message and then
    /// until `quiet` seconds pass without one.
    public func drain(timeout: Double = 0, quiet: Double = 0.02) throws -> [LoggedPacket] {
        var out: [LoggedPacket] = []
        var wait = timeout
        while true {
            let messages = try socket.receive(timeout: max(wait, quiet))
            if messages.isEmpty { break }
            for m in messages where m.type == UInt16(NFNL_SUBSYS_ULOG << 8) | UInt16(NFULNL_MSG_PACKET.rawValue) {
                out.append(try LoggedPacket(m))
            }
            wait = quiet
        }
        return out
    }

    /// Sets the socket's receive buffer (`SO_RCVBUFFORCE`, as root), as tcpdump does for
    /// nflog: a burst of log messages outruns any reader of the default 208 KiB.
    public func setReceiveBuffer(bytes: Int32) throws {
        var size = bytes
        guard setsockopt(socket.fileDescriptor, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SystemCallError("setsockopt(SO_RCVBUFFORCE)", context: "nflog group \(group) in \(namespace.name)")
        }
    }

    public func close() { socket.close() }
}
