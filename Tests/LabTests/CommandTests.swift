import Foundation
import Glibc
import Namespaces
import TestSupport
import Testing
import XfrmLabTesting

/// The `xfrmlab` command end to end, as a user runs it.
@Suite("xfrmlab up, show, exec, down and gc", .tags(.privileged), .needsNamespaces, .serialized)
struct CommandTests {
    @Test("up leaves the lab running, show reads it back, exec runs inside, down removes it")
    func upShowExecDown() throws {
        let up = try xfrmlab(["up", "--json", topologyFile("north-east-west")])
        try #require(up.succeeded, "\(up)")
        let info = try JSONSerialization.jsonObject(with: Data(up.standardOutput.utf8)) as! [String: Any]
        let run = try #require(info["run"] as? String)
        defer { _ = try? xfrmlab(["down", "--run", run]) }
        let show = try xfrmlab(["show", "--run", run])
        #expect(show.succeeded, "\(show)")
        #expect(show.standardOutput.contains("eth1 192.1.2.45/24"))
        #expect(show.standardOutput.contains("100: from all fwmark 0x1/0xff lookup 50"))
        let exec = try xfrmlab(["exec", "--run", run, "west", "--", "cat", "/proc/sys/net/ipv4/ip_forward"])
        #expect(exec.standardOutput == "0\n", "\(exec)")
        let execNic = try xfrmlab(["exec", "--run", run, "nic", "--", "cat", "/proc/sys/net/ipv4/ip_forward"])
        #expect(execNic.standardOutput == "1\n", "\(execNic)")
        // gc leaves a detached run alone.
        let gc = try xfrmlab(["gc"])
        #expect(gc.succeeded)
        #expect(namespacesLeft(prefix: "xl\(run)-").count == 4)
        let down = try xfrmlab(["down", "--run", run])
        #expect(down.succeeded, "\(down)")
        #expect(down.standardOutput.contains("released 4 namespace(s)"))
        #expect(namespacesLeft(prefix: "xl\(run)-").isEmpty)
    }

    @Test("check-docs runs a page's cheap commands, and names the line of a command the parser refuses and of a make target that does not exist")
    func checkDocs() throws {
        let dir = NSTemporaryDirectory() + "xfrmlab-docs-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let page = dir + "/Page.md"
        try """
            # A page
            ```sh
            xfrmlab kernels list            # runs
            xfrmlab matrix --kernel 6.1 \\
                --no-such-option
            make no-such-target
            ```
            """.write(toFile: page, atomically: false, encoding: .utf8)
        let r = try xfrmlab(["check-docs", page])
        #expect(r.status == 1, "\(r)")
        #expect(r.standardOutput.contains("ran    \(page):3  xfrmlab kernels list"), "\(r)")
        #expect(r.standardOutput.contains("\(page):4: xfrmlab matrix --kernel 6.1 --no-such-option"), "\(r)")
        #expect(r.standardOutput.contains("Unknown option '--no-such-option'"), "\(r)")
        #expect(r.standardOutput.contains("\(page):6: make no-such-target\n    the Makefile has no target no-such-target"), "\(r)")
    }

    @Test("gc spares a live run, and removes it once its owner is killed with SIGKILL")
    func gcAfterKill() throws {
        let devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(devNull) }
        let pid = try Namespaces.Process.spawn([xfrmlabBinary, "up", "--foreground", topologyFile("north-east-west")],
                                               namespaceFD: -1, stdin: -1, stdout: devNull, stderr: devNull)
        var status: Int32 = 0
        defer { kill(pid, SIGKILL); waitpid(pid, &status, WNOHANG) }
        var run: Run.Found?
        let started = poll(timeout: 30) {
            run = Run.all().first { $0.state?.pid == pid && $0.namespaces.count == 4 }
            return run != nil
        }
        try #require(started, "the foreground run never came up")
        let id = run!.id
        let spared = try xfrmlab(["gc"])
        #expect(spared.succeeded)
        #expect(namespacesLeft(prefix: "xl\(id)-").count == 4, "gc removed a live run")
        kill(pid, SIGKILL)
        waitpid(pid, &status, 0)
        let removed = try xfrmlab(["gc"])
        #expect(removed.succeeded, "\(removed)")
        // Another suite's gc running at the same moment may be the one that takes it (this gc
        // then finds the run locked by that gc and leaves it), and this gc may remove that
        // suite's own dead leftovers instead: what it prints depends on the other suite, so the
        // check is that the run goes, and soon.
        #expect(poll(timeout: 30) { namespacesLeft(prefix: "xl\(id)-").isEmpty && !Run.all().contains { $0.id == id } },
                "the killed run is still there: \(removed.standardOutput)")
    }

    @Test("SIGKILL at 20 moments of up, traffic and down leaves only what gc removes; gc spares a live run; the next run works")
    func killedAnywhere() throws {
        // A live run that every gc must leave alone.
        let devNull = open("/dev/null", O_WRONLY | O_CLOEXEC)
        defer { close(devNull) }
        let keeper = try Namespaces.Process.spawn([xfrmlabBinary, "up", "--foreground", topologyFile("client1-client2-server")],
                                                  namespaceFD: -1, stdin: -1, stdout: devNull, stderr: devNull)
        var status: Int32 = 0
        defer { kill(keeper, SIGKILL); waitpid(keeper, &status, 0); _ = try? xfrmlab(["gc"]) }
        var keeperRun: Run.Found?
        try #require(poll(timeout: 30) {
            keeperRun = Run.all().first { $0.state?.pid == keeper && $0.namespaces.count == 6 }
            return keeperRun != nil
        }, "the live run never came up")

        // `xfrmlab run` goes through up, traffic and a verified down in about 0.3 s here;
        // kill it at spread-out moments (fixed seed: a failure can be replayed).
        var rng = SplitMix64(state: 0xC0FF_EE00)
        var moments: [Int] = []
        for i in 0..<20 {
            let delay = i < 4 ? i * 3_000 : Int.random(in: 0...400_000, using: &rng)
            moments.append(delay)
            let victim = try Namespaces.Process.spawn([xfrmlabBinary, "run", "connectivity", "--topology", topologyFile("north-east-west")],
                                                      namespaceFD: -1, stdin: -1, stdout: devNull, stderr: devNull)
            usleep(UInt32(delay))
            kill(victim, SIGKILL)
            waitpid(victim, &status, 0)
            let gc = try xfrmlab(["gc"])
            #expect(gc.succeeded, "gc after a kill at \(delay) µs: \(gc)")
            // Only the victim's run: another suite running at the same time has victims of its own,
            // and its gc may be the one removing this victim's run (this gc then finds it locked
            // and leaves it): the run must be gone once any gc is through with it.
            var dead: [Run.Found] = []
            let gone = poll(timeout: 10) {
                dead = Run.all().filter { !$0.live && $0.state?.pid == victim }
                return dead.isEmpty
            }
            #expect(gone, "after a kill at \(delay) µs gc left \(dead.map { "\($0.id): \($0.namespaces)" })")
            #expect(namespacesLeft(prefix: "xl\(keeperRun!.id)-").count == 6, "gc touched the live run (kill at \(delay) µs)")
            let strays = ((try? FileManager.default.contentsOfDirectory(atPath: Run.stateDirectory + "/locks")) ?? [])
                .filter { $0.hasPrefix(".") && $0.hasSuffix(".\(victim)") }
            #expect(strays.isEmpty, "temporary lock files of the killed run remain: \(strays)")
        }
        // The keeper still works, and a new run needs no manual cleanup.
        let trip = try xfrmlab(["run", "connectivity", "--topology", topologyFile("north-east-west")])
        #expect(trip.succeeded, "\(trip.standardOutput)\(trip.standardError)")
        kill(keeper, SIGTERM)
        waitpid(keeper, &status, 0)
        #expect(status == 0, "the live run did not tear down cleanly on SIGTERM")
        #expect(namespacesLeft(prefix: "xl\(keeperRun!.id)-").isEmpty)
    }
}
