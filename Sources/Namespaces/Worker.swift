import CXfrmLabShims
import Foundation
import Glibc
import Netlink

/// A dedicated thread for namespace switching.
///
/// `setns` and `unshare` act on the calling thread only, and a Swift task may resume on
/// another thread after any `await`, so no namespace switch ever happens on a concurrency
/// pool thread. Jobs run here one at a time; each job that enters a namespace leaves it
/// before the next starts. If switching back fails the thread is poisoned: it finishes the
/// job, exits, and a new worker takes its place, so no later job runs in the wrong namespace.
final class NamespaceWorker: @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [() -> Void] = []
    private var stopped = false
    /// The namespace the thread started in (the process's own). Set by the thread itself
    /// before it takes its first job.
    private(set) var homeFD: Int32 = -1

    init() {
        let thread = Thread { [self] in self.loop() }
        thread.name = "xfrmlab-netns"
        thread.start()
    }

    private func loop() {
        homeFD = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        while true {
            condition.lock()
            while jobs.isEmpty && !stopped { condition.wait() }
            if jobs.isEmpty && stopped {
                condition.unlock()
                break
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
        if homeFD >= 0 { close(homeFD) }
    }

    /// Runs `body` on the worker thread and waits for it.
    func sync<T>(_ body: @escaping () throws -> T) throws -> T {
        try async(body).wait()
    }

    /// A job handed to a worker, to be waited for later.
    final class Pending<T>: @unchecked Sendable {
        fileprivate let done = DispatchSemaphore(value: 0)
        fileprivate var result: Result<T, Error>!
        func wait() throws -> T {
            done.wait()
            return try result.get()
        }
    }

    /// Queues `body` on the worker thread and returns at once.
    func async<T>(_ body: @escaping () throws -> T) -> Pending<T> {
        let pending = Pending<T>()
        condition.lock()
        jobs.append {
            pending.result = Result { try body() }
            pending.done.signal()
        }
        condition.signal()
        condition.unlock()
        return pending
    }

    /// Puts the thread back in its home namespace; on failure stops it for good.
    func goHome() throws {
        if xl_setns_net(homeFD) != 0 {
            let e = SystemCallError("setns", context: "returning the namespace thread to its own namespace")
            condition.lock()
            stopped = true
            condition.unlock()
            NamespaceWorker.retire(self)
            throw e
        }
    }

    // MARK: - The shared workers

    private static let lock = NSLock()
    /// One worker per core: creating a namespace is mostly the kernel's own set-up work,
    /// which runs in parallel on several cores.
    nonisolated(unsafe) private static var workers: [NamespaceWorker?] = Array(
        repeating: nil, count: Int(Foundation.ProcessInfo.processInfo.environment["XFRMLAB_NS_THREADS"] ?? "")
            ?? max(1, min(8, Foundation.ProcessInfo.processInfo.activeProcessorCount)))

    static var shared: NamespaceWorker { worker(0) }
    static var count: Int { workers.count }

    static func worker(_ i: Int) -> NamespaceWorker {
        lock.lock()
        defer { lock.unlock() }
        let slot = i % workers.count
        if let w = workers[slot] { return w }
        let w = NamespaceWorker()
        workers[slot] = w
        return w
    }

    private static func retire(_ worker: NamespaceWorker) {
        lock.lock()
        defer { lock.unlock() }
        for i in workers.indices where workers[i] === worker { workers[i] = nil }
    }
}
