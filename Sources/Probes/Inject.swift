import Foundation
import Glibc
import Namespaces
import Netlink

/// One-way packets from inside a namespace, for when nothing answers: a packet that should
/// trigger an XFRM ACQUIRE, hit a policy, or show up in a capture.
public enum Inject {
    /// Sends one UDP datagram from `ns` (bound to `source` when given, marked with `mark`).
    /// Returns nil when the kernel took it, or why it refused (`sendto → ENETUNREACH …`): a
    /// refusal is an observation, not an error.
    ///
    /// Equivalent to `ip netns exec NS socat - UDP:DST:PORT,so-mark=MARK,bind=SRC <<< payload`.
    @discardableResult
    public static func udp(from ns: Namespace, destination: [UInt8], port: UInt16, source: [UInt8]? = nil,
                           sourcePort: UInt16 = 0, mark: UInt32? = nil, payload: [UInt8] = Array("xfrmlab".utf8)) throws -> String? {
        let family = destination.count == 4 ? AF_INET : AF_INET6
        let socket = Socket(fd: try ns.openSocket(domain: family, type: Int32(SOCK_DGRAM.rawValue), protocol: 0))
        if let mark { try socket.set(SOL_SOCKET, SO_MARK, Int32(bitPattern: mark), what: "SO_MARK") }
        if source != nil || sourcePort != 0 {
            let s = source ?? Array(repeating: 0, count: destination.count)
            try socket.bind(SocketAddress(bytes: s, port: sourcePort), what: "source \(formatAddress(s)):\(sourcePort)")
        }
        return try Echo.send(socket, payload, to: SocketAddress(bytes: destination, port: port))
    }
}
