import CXfrmLabShims
import Foundation
import Glibc
import Netlink

/// A network namespace this process created, bind-mounted at /run/netns/NAME (so `ip -n NAME`
/// and `ip netns exec NAME` work on it), with an rtnetlink socket opened inside it.
///
/// Create with `Namespace.create(names:)`; end with `delete()`. Sockets opened through
/// `openSocket` or `netlinkSocket` stay bound to the namespace from any thread.
public final class Namespace: @unchecked Sendable, CustomStringConvertible {
    public static let directory = "/run/netns"

    /// The name under /run/netns.
    public let name: String
    public var path: String { Namespace.directory + "/" + name }
    /// An open descriptor of the namespace (for `IFLA_NET_NS_FD` and `setns`).
    public private(set) var fd: Int32
    /// rtnetlink, opened inside.
    public let route: NetlinkSocket
    /// (device, inode) of the namespace file: what identifies a namespace.
    public let identity: (device: UInt64, inode: UInt64)

    private init(name: String, fd: Int32, route: NetlinkSocket) {
        self.name = name
        self.fd = fd
        self.route = route
        var st = stat()
        fstat(fd, &st)
        identity = (UInt64(st.st_dev), UInt64(st.st_ino))
    }

    public var description: String { name }

    /// Creates namespaces, all in one trip to the namespace thread. Either every one exists
    /// afterwards or none does. A name already taken under /run/netns is an error (`EEXIST`).
    ///
    /// `sysctls` are written in each new namespace before anything else exists in it (so
    /// `default` device settings reach every device made later). Only `net.` keys are allowed.
    public static func create(names: [String], sysctls: [(key: String, value: String)] = []) throws -> [Namespace] {
        try create(names: names, sysctls: names.map { _ in sysctls })
    }

    /// Like `create(names:sysctls:)`, with sysctls of each namespace's own (`sysctls[i]` for `names[i]`).
    /// The work is spread over one namespace thread per core.
    ///
    /// `owners[i]`, when given, makes `names[i]` a network namespace owned by a new user namespace
    /// of that unprivileged uid and gid (root inside maps to it): see `ownerNetlinkSocket`.
    public static func create(names: [String], sysctls: [[(key: String, value: String)]],
                              owners: [UserNamespaceOwner?] = []) throws -> [Namespace] {
        for list in sysctls {
            for (key, _) in list where !isNamespaced(sysctl: key) {
                throw SystemCallError("sysctl", errno: EPERM, context: "\(key) is not a per-namespace (net.) sysctl")
            }
        }
        try prepareDirectory()
        // A handful of namespaces go faster on one thread; many are spread over the workers
        // (the kernel's set-up of a namespace partly runs in parallel).
        let shares = names.count < 16 ? 1 : min(NamespaceWorker.count, names.count)
        guard shares > 0 else { return [] }
        nonisolated(unsafe) var made: [Namespace?] = Array(repeating: nil, count: names.count)
        let jobs = (0..<shares).map { share in
            let worker = NamespaceWorker.worker(share)
            return worker.async {
                defer { try? worker.goHome() }
                for i in stride(from: share, to: names.count, by: shares) {
                    made[i] = try createHere(name: names[i], owner: i < owners.count ? owners[i] : nil)
                    try writeSysctlsHere(sysctls[i])
                }
            }
        }
        var failure: Error?
        for job in jobs {
            do { try job.wait() } catch { failure = failure ?? error }
        }
        if let failure {
            for ns in made.compactMap({ $0 }) { ns.delete() }
            throw failure
        }
        return made.map { $0! }
    }

    public static func create(name: String) throws -> Namespace { try create(names: [name])[0] }

    /// Opens an existing namespace by its name under /run/netns (for `show`, `exec`, `down`).
    public static func open(name: String) throws -> Namespace {
        let worker = NamespaceWorker.shared
        return try worker.sync {
            let fd = Glibc.open(directory + "/" + name, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemCallError("open", context: directory + "/" + name) }
            do {
                guard xl_setns_net(fd) == 0 else { throw SystemCallError("setns", context: name) }
                let socket = try NetlinkSocket(protocol: NetlinkSocket.route)
                try worker.goHome()
                return Namespace(name: name, fd: fd, route: socket)
            } catch {
                try? worker.goHome()
                close(fd)
                throw error
            }
        }
    }

    /// On the worker thread: unshare, pin with a bind mount, open a socket inside.
    private static func createHere(name: String, owner: UserNamespaceOwner? = nil) throws -> Namespace {
        guard isValid(name: name) else { throw SystemCallError("create", errno: EINVAL, context: "namespace name \"\(name)\"") }
        let path = directory + "/" + name
        let marker = Glibc.open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0)
        guard marker >= 0 else { throw SystemCallError("open(O_EXCL)", context: path) }
        close(marker)
        if let owner {
            // Made by a forked child as the unprivileged user; this thread enters it below.
            var step: UnsafePointer<CChar>?
            guard xl_make_owned_netns(path, owner.uid, owner.gid, &step) == 0 else {
                let e = SystemCallError(step.map { String(cString: $0) } ?? "user namespace", context: "\(name) (owner uid \(owner.uid))")
                unlink(path)
                throw e
            }
        } else {
            guard xl_unshare_netns() == 0 else {
                let e = SystemCallError("unshare(CLONE_NEWNET)", context: name)
                unlink(path)
                throw e
            }
            guard xl_bind_mount("/proc/thread-self/ns/net", path) == 0 else {
                let e = SystemCallError("mount(MS_BIND)", context: path)
                unlink(path)
                throw e
            }
        }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        do {
            guard fd >= 0 else { throw SystemCallError("open", context: path) }
            if owner != nil, xl_setns_net(fd) != 0 { throw SystemCallError("setns", context: name) }
            let socket = try NetlinkSocket(protocol: NetlinkSocket.route)
            return Namespace(name: name, fd: fd, route: socket)
        } catch {
            if fd >= 0 { close(fd) }
            xl_umount_detach(path)
            unlink(path)
            throw error
        }
    }

    /// Names become paths: letters, digits, `-`, `_`, `.` only, no `.`/`..`, at most 64 bytes.
    public static func isValid(name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name != "." && name != ".."
            && name.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
    }

    /// /run/netns exists and is a shared mount point, as `ip netns add` leaves it.
    nonisolated(unsafe) private static var directoryReady = false
    private static let directoryLock = NSLock()
    private static func prepareDirectory() throws {
        directoryLock.lock()
        defer { directoryLock.unlock() }
        if directoryReady { return }
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw SystemCallError("mkdir", context: directory) }
        if xl_make_shared_mountpoint(directory) != 0 { throw SystemCallError("mount(MS_SHARED)", context: directory) }
        directoryReady = true
    }

    // MARK: - Inside the namespace

    /// Runs `body` on the namespace thread while it is inside this namespace.
    public func run<T>(_ body: @escaping () throws -> T) throws -> T {
        let worker = NamespaceWorker.shared
        let fd = self.fd
        let name = self.name
        return try worker.sync {
            guard xl_setns_net(fd) == 0 else { throw SystemCallError("setns", context: name) }
            let result = Result { try body() }
            try worker.goHome()
            return try result.get()
        }
    }

    /// Opens a socket inside the namespace; it stays bound to it.
    public func openSocket(domain: Int32, type: Int32, protocol proto: Int32) throws -> Int32 {
        try run {
            let s = socket(domain, type | Int32(SOCK_CLOEXEC.rawValue), proto)
            guard s >= 0 else { throw SystemCallError("socket", context: "in \(self.name)") }
            return s
        }
    }

    /// Opens a netlink socket (e.g. `NETLINK_XFRM`, `NETLINK_NETFILTER`) inside the namespace.
    public func netlinkSocket(protocol proto: Int32, groups: [UInt32] = []) throws -> NetlinkSocket {
        try run { try NetlinkSocket(protocol: proto, groups: groups) }
    }

    /// Writes sysctls under /proc/sys/net inside the namespace, in order, in one trip.
    /// Only `net.` keys are per-namespace; anything else would change the host and is refused.
    public func setSysctls(_ values: [(key: String, value: String)]) throws {
        for (key, _) in values where !Namespace.isNamespaced(sysctl: key) {
            throw SystemCallError("sysctl", errno: EPERM, context: "\(key) is not a per-namespace (net.) sysctl")
        }
        try run { try Namespace.writeSysctlsHere(values) }
    }

    /// Writes sysctls in the calling thread's namespace (on the worker, inside a namespace).
    private static func writeSysctlsHere(_ values: [(key: String, value: String)]) throws {
        for (key, value) in values {
            let path = "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
            let fd = Glibc.open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemCallError("open", context: "sysctl \(key) (\(path))") }
            defer { close(fd) }
            // A proc handler may answer a write with fewer bytes than it took: Debian's 5.10.218
            // answers net.ipv6.conf.all.forwarding=1 with 1 (addrconf_fixup_forwarding's "changed"
            // leaks into the byte count). Such a write has been applied: the value read back decides.
            let text = Array(value.utf8)
            let written = write(fd, text, text.count)
            if written < 0 { throw SystemCallError("write", context: "sysctl \(key)=\(value)") }
            if written != text.count {
                let now = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                guard now == value else {
                    throw SystemCallError("write", errno: EIO, context: "sysctl \(key)=\(value): the kernel took \(written) of \(text.count) bytes and reads back \(now.map { "\"\($0)\"" } ?? "nothing")")
                }
            }
        }
    }

    /// Reads a sysctl inside the namespace.
    public func sysctl(_ key: String) throws -> String {
        try run {
            let path = "/proc/sys/" + key.replacingOccurrences(of: ".", with: "/")
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw SystemCallError("read", errno: errno, context: "sysctl \(key)")
            }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    public static func isNamespaced(sysctl key: String) -> Bool {
        key.hasPrefix("net.") && !key.contains("..") && !key.contains("/")
    }

    // MARK: - Ending

    /// Unmounts and removes the /run/netns entry and closes this process's references. The
    /// kernel frees the namespace once nothing else holds it; `NamespaceReaper` waits for that.
    public func delete() {
        route.close()
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        xl_umount_detach(path)
        unlink(path)
    }
}

extension Namespace {
    /// Removes a /run/netns entry that no longer holds a namespace (a half-made mount left by a
    /// killed run): unmount if mounted, then unlink.
    public static func removeEntry(name: String) {
        guard isValid(name: name) else { return }
        let path = directory + "/" + name
        xl_umount_detach(path)
        unlink(path)
    }

    /// Closes this process's references without removing the /run/netns entry (for `show`).
    public func delete(keepingEntry: Bool) {
        guard keepingEntry else { return delete() }
        route.close()
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }
}
