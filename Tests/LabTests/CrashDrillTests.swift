import Foundation
import Testing
import XfrmLabTesting

/// `make crash-drill`: a guest whose kernel dies on purpose, to prove what the matrix does with a
/// death — the panic read from the console, its fingerprint, the test run again in a fresh guest,
/// the crash said to recur. Asked for with XFRMLAB_CRASH_DRILL=1, which `xfrmlab matrix` passes into
/// its guests; without it the guest driver leaves this test out, and it never runs on the host.
@Suite("A kernel made to panic, for the matrix's crash handling", .tags(.vm))
struct CrashDrillTests {
    @Test("crash drill: sysrq c panics the guest's kernel here",
          .enabled(if: ProcessInfo.processInfo.environment["XFRMLAB_CRASH_DRILL"] == "1",
                   "a drill, run only when asked: XFRMLAB_CRASH_DRILL=1 (make crash-drill)"),
          .disposableKernel)
    func panic() throws {
        try "c".write(toFile: "/proc/sysrq-trigger", atomically: false, encoding: .utf8)
        Issue.record("the kernel lived on after sysrq c")
    }
}
