import Foundation
import Glibc
import Namespaces

/// The thread every daemon is forked from.
///
/// `xl_spawn` sets `PR_SET_PDEATHSIG` in the child, and that signal fires when the *thread*
/// that forked it exits, not the process. A daemon forked from a Swift concurrency pool thread
/// would be killed whenever the pool retires that thread; forked from here, a thread that
/// lives as long as the process, it dies with the process only (so a killed test run leaves no
/// daemon behind either).
final class Launcher: @unchecked Sendable {
    static let shared = Launcher()

    private let condition = NSCondition()
    private var jobs: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while jobs.isEmpty { condition.wait() }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.name = "xfrmlab-daemons"
        thread.start()
    }

    /// Runs `body` on the launcher thread and waits for it.
    func sync<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, Error>!
        condition.lock()
        jobs.append {
            result = Result { try body() }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        done.wait()
        return try result.get()
    }
}
