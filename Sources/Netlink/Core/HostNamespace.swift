import CNetlink
import Glibc

/// A request that would change the host's own network namespace, refused before it is sent.
public struct HostNamespaceRefused: Error, CustomStringConvertible, Sendable {
    public var request: String
    public var description: String {
        "\(request): refused: this socket belongs to the host's own network namespace, which the harness only reads"
    }
}

/// The process's own network namespace (the main thread's: no code moves that thread), and
/// which requests only read.
enum HostNamespace {
    /// (device, inode) of the main thread's namespace.
    static let identity: (UInt64, UInt64)? = namespaceIdentity(path: "/proc/self/task/\(getpid())/ns/net")

    static func namespaceIdentity(path: String) -> (UInt64, UInt64)? {
        // fstat of the opened file: the namespace itself, not the /proc symlink.
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    /// Whether the calling thread is in the host's namespace.
    static func contains(currentThread: Void) -> Bool {
        guard let host = identity, let here = namespaceIdentity(path: "/proc/thread-self/ns/net") else { return true }
        return host == here
    }

    /// Dumps and gets, per netlink family; everything else counts as a change.
    static func isReadOnly(_ request: Request, protocol proto: Int32) -> Bool {
        if request.flags.contains(.dump) { return true }
        let t = Int(request.type)
        switch proto {
        case NETLINK_ROUTE:
            // RTM_GET* are the types ≡ 2 (mod 4): RTM_GETLINK 18, RTM_GETADDR 22, RTM_GETROUTE 26 …
            return t >= Int(RTM_BASE) && t % 4 == 2
        case NETLINK_XFRM:
            return [XFRM_MSG_GETSA, XFRM_MSG_GETPOLICY, XFRM_MSG_GETAE, XFRM_MSG_GETSADINFO, XFRM_MSG_GETSPDINFO]
                .map { Int($0) }.contains(t)
        case NETLINK_NETFILTER:
            return t == (Int(NFNL_SUBSYS_CTNETLINK) << 8 | Int(IPCTNL_MSG_CT_GET.rawValue))
        default:
            return false
        }
    }
}
