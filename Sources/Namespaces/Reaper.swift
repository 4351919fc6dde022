import CNetlink
import CXfrmLabShims
import Foundation
import Glibc
import Netlink

/// How a teardown ended, as the kernel told it.
public struct ReleaseReport: Sendable, CustomStringConvertible {
    /// Namespaces whose `RTM_DELNSID` arrived: the kernel took them off its list.
    public var unhashed: Int
    public var total: Int
    /// The kernel's cleanup work that freed them finished (devices unregistered, no reference
    /// still held): proven by a later canary namespace's cleanup, which that work queue runs
    /// only after the earlier one returned.
    public var cleanupFinished: Bool
    public var seconds: Double
    /// Seconds until this process had dropped its references (unmounts, closes): what
    /// `ip netns del` costs. The rest of `seconds` is the kernel's own cleanup.
    public var deleteSeconds: Double = 0
    public var complete: Bool { unhashed == total && cleanupFinished }
    public var description: String {
        let t = String(format: "%.1f ms", seconds * 1000)
        return complete ? "released \(total) namespace(s) in \(t)"
            : "kernel released \(unhashed)/\(total) namespace(s), cleanup \(cleanupFinished ? "finished" : "NOT finished") after \(t) (a device may still be referenced: look for \"waiting for … to become free\" in dmesg)"
    }
}

/// The kernel never answered in time.
public struct ReleaseTimeout: Error, CustomStringConvertible, Sendable {
    public var report: ReleaseReport
    public var description: String { report.description }
}

/// Deletes namespaces and waits until the kernel has really freed them.
///
/// A namespace dies when its last reference goes; the kernel then frees it on a work queue.
/// To see that happen without holding a reference, an anonymous observer namespace is given
/// an id for each target (`RTM_NEWNSID`) and listens on `RTNLGRP_NSID`: when the kernel's
/// cleanup takes a target off its list it sends `RTM_DELNSID` for that id. The same queue runs
/// one cleanup at a time, so a canary namespace freed after the targets' ids were dropped
/// reports its own `RTM_DELNSID` only once the targets' cleanup (device unregistration and
/// the wait for their last references) is over.
public enum NamespaceReaper {
    public static func delete(_ namespaces: [Namespace], timeout: Double = 30) throws -> ReleaseReport {
        let started = Date()
        guard !namespaces.isEmpty else {
            return ReleaseReport(unhashed: 0, total: 0, cleanupFinished: true, seconds: 0)
        }
        let worker = NamespaceWorker.shared
        // The observer and the canary exist only as open descriptors: nothing to leak if killed.
        let (observer, canaryFD): (NetlinkSocket, Int32) = try worker.sync {
            do {
                guard xl_unshare_netns() == 0 else { throw SystemCallError("unshare(CLONE_NEWNET)", context: "observer") }
                let socket = try NetlinkSocket(protocol: NetlinkSocket.route, groups: [UInt32(RTNLGRP_NSID.rawValue)])
                guard xl_unshare_netns() == 0 else { throw SystemCallError("unshare(CLONE_NEWNET)", context: "canary") }
                let canary = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
                try worker.goHome()
                return (socket, canary)
            } catch {
                try? worker.goHome()
                throw error
            }
        }
        defer { observer.close() }
        var ids: Set<Int32> = []
        var requests: [Request] = []
        for (i, ns) in namespaces.enumerated() where ns.fd >= 0 {
            let id = Int32(i + 1)
            ids.insert(id)
            requests.append(assign(id: id, fd: ns.fd, name: ns.name))
        }
        let canaryID = Int32(namespaces.count + 1)
        requests.append(assign(id: canaryID, fd: canaryFD, name: "canary"))
        try observer.batch(requests)
        let total = ids.count
        let deletesStarted = Date()
        for ns in namespaces { ns.delete() }
        var report = ReleaseReport(unhashed: 0, total: total, cleanupFinished: false, seconds: 0)
        report.deleteSeconds = Date().timeIntervalSince(deletesStarted)
        var canaryClosed = false
        let deadline = started.addingTimeInterval(timeout)
        while Date() < deadline {
            if ids.isEmpty && !canaryClosed {
                close(canaryFD)
                canaryClosed = true
            }
            for message in try observer.receive(timeout: min(0.5, max(0, deadline.timeIntervalSinceNow))) where message.type == nl16(RTM_DELNSID) {
                let attrs = try message.attributes(after: 4)
                guard let id = attrs[Int(NETNSA_NSID)]?.i32 else { continue }
                if ids.remove(id) != nil { report.unhashed += 1 }
                if id == canaryID && canaryClosed { report.cleanupFinished = true }
            }
            if report.cleanupFinished { break }
        }
        if !canaryClosed { close(canaryFD) }
        report.seconds = Date().timeIntervalSince(started)
        guard report.complete else { throw ReleaseTimeout(report: report) }
        return report
    }

    /// Equivalent to `ip netns set NAME ID` seen from the observer.
    private static func assign(id: Int32, fd: Int32, name: String) -> Request {
        Request(type: nl16(RTM_NEWNSID), flags: .add, headerBytes: [UInt8(AF_UNSPEC), 0, 0, 0],
                attributes: [.u32(nl16(NETNSA_FD), UInt32(fd)), .i32(nl16(NETNSA_NSID), id)],
                summary: "ip netns set \(name) \(id) (in the observer namespace)")
    }
}

@inline(__always) func nl16<T: BinaryInteger>(_ v: T) -> UInt16 { UInt16(truncatingIfNeeded: v) }
