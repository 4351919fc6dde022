import Foundation
import Glibc
import Namespaces
import Testing
import XfrmLabTesting

/// `xfrmlab gc` beyond runs: capability probe namespaces and IKE daemon directories left by a
/// killed process, removed only when that process is dead.
@Suite("gc collects probe namespaces and daemon directories of dead owners only", .tags(.privileged), .needsNamespaces, .serialized)
struct GCLeftoverTests {
    /// A pid that was alive a moment ago and is dead and reaped now.
    func deadPID() throws -> pid_t {
        let pid = try Namespaces.Process.spawn(["true"], namespaceFD: -1, stdin: -1, stdout: -1, stderr: -1)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return pid
    }

    func gc() throws -> ProcessResult {
        try xfrmlab(["gc"])
    }

    @Test("a sweep of a directory of its own reports exactly what it removed", .tags(.privileged))
    func sweepReport() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("xlsweep\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        for name in ["a", "b", "c"] { try FileManager.default.createDirectory(atPath: base + "/" + name, withIntermediateDirectories: true) }
        let dead = try deadPID()
        try "\(dead) 99\n".write(toFile: base + "/a/" + Leftovers.ownerFile, atomically: true, encoding: .utf8)
        try Leftovers.recordOwner(of: base + "/b")
        #expect(Leftovers.sweepOwnedDirectories(under: base, dryRun: true) == [base + "/a"])
        #expect(FileManager.default.fileExists(atPath: base + "/a"))
        #expect(Leftovers.sweepOwnedDirectories(under: base) == [base + "/a"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: base).sorted() == ["b", "c"])
    }

    @Test("probe namespace names give their maker's pid")
    func probeNames() {
        #expect(Leftovers.probeNamespaceOwner("xlprobe4242-caps3") == 4242)
        #expect(Leftovers.probeNamespaceOwner("xlprobe4242") == 4242)
        #expect(Leftovers.probeNamespaceOwner("xlprobe4242-caps") == nil)
        #expect(Leftovers.probeNamespaceOwner("xlprobe4242ct") == nil)
        #expect(Leftovers.probeNamespaceOwner("xl1a2b3c-west") == nil)
    }

    @Test("gc removes a capability probe's namespace whose prober died, and spares a live prober's")
    func probeNamespaces() throws {
        // A prober that makes its namespace and dies, as one killed mid-probe: `ip netns add`
        // exec'd by the shell whose pid names it. While it runs, any gc (a suite running beside
        // this one too) sees its maker alive.
        let made = try Namespaces.Process.execute(["sh", "-c", "echo $$; exec ip netns add xlprobe$$-caps1"])
        try #require(made.succeeded, "\(made)")
        let orphan = "xlprobe\(made.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines))-caps1"
        defer { Namespace.removeEntry(name: orphan) }
        let mine = try Namespace.create(name: "xlprobe\(getpid())-caps9001")
        defer { mine.delete() }
        // Outcomes, not gc's words: a suite running beside this one may collect it first.
        if !namespacesLeft(prefix: orphan).isEmpty { #expect(Leftovers.deadProbeNamespaces().contains(orphan)) }
        #expect(!Leftovers.deadProbeNamespaces().contains(mine.name))
        let result = try gc()
        #expect(result.succeeded, "\(result)")
        #expect(namespacesLeft(prefix: orphan).isEmpty)
        #expect(namespacesLeft(prefix: mine.name) == [mine.name])
    }

    @Test("gc removes daemon directories whose owner is dead (by owner file or run id), kills a process still naming one, and spares the rest")
    func daemonDirectories() throws {
        let base = Run.stateDirectory + "/daemons"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let tag = "xlgc\(getpid())"
        func make(_ name: String) throws -> String {
            let path = base + "/" + name
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return path
        }
        func own(_ path: String, _ owner: String) throws {
            try owner.write(toFile: path + "/" + Leftovers.ownerFile, atomically: true, encoding: .utf8)
        }
        // Each directory gets its owner last: until then no gc (of a suite beside this one
        // either) can prove it dead, so the stray process below is started before anyone can
        // sweep the directory it names, and whoever sweeps it kills the stray.
        let dead = try deadPID()
        let deadOwner = try make("\(tag)-west.charon")
        let stray = try Namespaces.Process.spawn(["sleep", "60"], namespaceFD: -1, stdin: -1, stdout: -1, stderr: -1,
                                                 environment: ["XL_DAEMON_DIRECTORY": deadOwner])
        defer { kill(stray, SIGKILL) }
        // Until it has exec'd, its environment is still ours and names nothing.
        try #require(poll { ProcessTable.processes(naming: deadOwner).contains(stray) })
        try own(deadOwner, "\(dead) 12345\n")
        let reused = try make("\(tag)-east.pluto")
        try own(reused, "\(getpid()) 1\n")  // our pid, another start time: a reused pid
        let live = try make("\(tag)-north.charon")
        try Leftovers.recordOwner(of: live)
        let unknown = try make("\(tag)-road.pluto")
        // A run id whose lock nobody holds, and one whose lock we hold.
        var deadRun = ""
        repeat { deadRun = String(format: "%06x", UInt32.random(in: 0..<0x100_0000)) }
        while FileManager.default.fileExists(atPath: Run.stateDirectory + "/locks/\(deadRun).lock")
        let run = try Run(topology: "gc-test")
        defer { run.finish() }
        let liveRunDirectory = try make("xl\(run.id)-west.charon")
        let deadRunDirectory = try make("xl\(deadRun)-west.charon")
        defer {
            for p in [deadOwner, reused, live, unknown, deadRunDirectory, liveRunDirectory] { try? FileManager.default.removeItem(atPath: p) }
        }

        // What is dead, as gc judges it (unless a gc beside this test was quicker).
        for path in [deadOwner, reused, deadRunDirectory] where FileManager.default.fileExists(atPath: path) {
            #expect(Leftovers.ownerIsDead(directory: path) == true, "\(path)")
        }
        #expect(Leftovers.ownerIsDead(directory: live) == false)
        #expect(Leftovers.ownerIsDead(directory: liveRunDirectory) == false)
        #expect(Leftovers.ownerIsDead(directory: unknown) == nil)
        let result = try gc()
        #expect(result.succeeded, "\(result)")
        for gone in [deadOwner, reused, deadRunDirectory] {
            #expect(!FileManager.default.fileExists(atPath: gone), "\(gone) is still there")
        }
        for kept in [live, unknown, liveRunDirectory] {
            #expect(FileManager.default.fileExists(atPath: kept), "\(kept) was removed")
        }
        var status: Int32 = 0
        #expect(waitpid(stray, &status, 0) == stray)
        #expect(status & 0x7f == SIGKILL, "the stray process was not killed: status \(status)")
    }
}
