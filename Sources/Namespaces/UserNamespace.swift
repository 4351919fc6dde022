import CXfrmLabShims
import Foundation
import Glibc
import Netlink

/// The unprivileged user who owns a host's network namespace through a user namespace of its
/// own (topology key `user-namespace`): root inside that user namespace is this uid and gid
/// outside, and has CAP_NET_ADMIN over the namespaces it owns only.
public struct UserNamespaceOwner: Sendable, Hashable, CustomStringConvertible {
    public var uid: uid_t
    public var gid: gid_t
    public init(uid: uid_t = 65534, gid: gid_t = 65534) {
        self.uid = uid
        self.gid = gid
    }
    /// `nobody`, the default.
    public static let nobody = UserNamespaceOwner()
    public var description: String { "uid \(uid) gid \(gid)" }
}

extension Namespace {
    /// The user namespace that owns this network namespace, as an open descriptor (the caller
    /// closes it); nil when that is the machine's initial one.
    public func owningUserNamespace() throws -> Int32? {
        let user = xl_owning_userns(fd)
        guard user >= 0 else { throw SystemCallError("ioctl(NS_GET_USERNS)", context: name) }
        var mine = stat(), theirs = stat()
        guard stat("/proc/self/ns/user", &mine) == 0, fstat(user, &theirs) == 0 else {
            let e = SystemCallError("stat", context: "user namespaces of \(name)")
            close(user)
            throw e
        }
        if mine.st_ino == theirs.st_ino && mine.st_dev == theirs.st_dev {
            close(user)
            return nil
        }
        return user
    }

    /// True for a host made with `user-namespace:`.
    public var ownedByUserNamespace: Bool {
        guard let fd = try? owningUserNamespace() else { return false }
        close(fd)
        return true
    }

    /// A netlink socket opened by the root of the user namespace that owns this namespace, in
    /// `target`'s network namespace (this one by default): every request on it is judged by
    /// that root's credentials (netlink_ns_capable checks the opener's), whoever sends it.
    public func ownerNetlinkSocket(protocol proto: Int32, in target: Namespace? = nil, groups: [UInt32] = []) throws -> NetlinkSocket {
        guard let user = try owningUserNamespace() else {
            throw SystemCallError("socket", errno: EINVAL, context: "\(name) is owned by the machine's user namespace, not a user of its own")
        }
        defer { close(user) }
        let target = target ?? self
        let fd = xl_socket_as(user, target.fd, AF_NETLINK, Int32(SOCK_RAW.rawValue), proto)
        guard fd >= 0 else { throw SystemCallError("socket as the owner of \(name)", context: "in \(target.name)") }
        return try NetlinkSocket(adopting: fd, protocol: proto, inHostNamespace: false, groups: groups)
    }

    /// Runs a command inside this namespace as the root of the user namespace that owns it
    /// (`unshare --user` then `ip …`, without the shell).
    public func executeAsOwner(_ command: [String], input: String? = nil, timeout: Double = 60) throws -> ProcessResult {
        guard let user = try owningUserNamespace() else {
            throw SystemCallError("execute", errno: EINVAL, context: "\(name) is owned by the machine's user namespace, not a user of its own")
        }
        defer { close(user) }
        return try Process.execute(command, namespaceFD: fd, input: input, timeout: timeout, userNamespaceFD: user)
    }
}
