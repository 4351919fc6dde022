import ArgumentParser
import Foundation
import Glibc
import Matrix
import Namespaces
import Reports

/// Which kernel a report's verdict flips at: over the catalogue's point releases of one series, or
/// over a git tree's commits (git bisect run, each step built and booted).
struct Bisect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bisect",
        abstract: "Find the first kernel on which a bug report's verdict flips: the catalogue's point releases, or a git tree's commits.",
        discussion: """
            Catalogue: `xfrmlab bisect sa-prefixlen-unspec --good 5.10.262 --bad 5.10.218` runs the report's test in a \
            VM on both ends, then on point releases of the same series and flavour between them (binary search), and \
            prints the first kernel whose verdict differs from its neighbour's, with the evidence on both sides. Good \
            is where the report says FIXED, bad where it says REPRODUCES; either may be the older one.

            Git: `xfrmlab bisect REPORT --source DIR --good REV --bad REV` drives `git bisect run` in DIR (a kernel tree \
            of yours: git checks out each commit there; it is built out of tree into the kernel cache) with \
            `xfrmlab bisect-step`: build, boot, reproduce; FIXED is good, REPRODUCES bad, anything else skipped.
            """)

    @Argument(help: "The report ID (xfrmlab reproduce --list).")
    var report: String
    @Option(help: "Where the report says FIXED: a catalogue kernel, or with --source a git revision.")
    var good: String
    @Option(help: "Where the report says REPRODUCES: a catalogue kernel, or with --source a git revision.")
    var bad: String
    @Option(name: .customLong("source"), help: "A kernel git tree to bisect instead of the catalogue.")
    var sourceTree: String?
    @Option(help: "Where each step's matrix writes (default: .build/bisect/REPORT-DATE-TIME).")
    var output: String?

    func run() throws {
        try requireRoot()
        let root = MatrixCommand().repositoryRoot()
        let reports = try BugReport.loadAll(directory: root + "/Fixtures/reports")
        guard let r = reports.first(where: { $0.id == report }) else {
            throw ValidationError("unknown report \(report); known: \(reports.map(\.id).joined(separator: ", "))")
        }
        let out = URL(fileURLWithPath: output ?? root + "/.build/bisect/\(r.id)-" + KernelsCommand.Latest.stamp()).standardized.path
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        if let sourceTree { try gitBisect(r, tree: sourceTree, out: out) } else { try catalogueBisect(r, root: root, out: out) }
    }

    func catalogueBisect(_ r: BugReport, root: String, out: String) throws {
        let lock = try KernelLock.load(path: root + "/" + KernelLock.defaultPath)
        guard let g = lock.entry(for: good) else { throw ValidationError("--good \(good): not in the catalogue (\(lock.aliases.joined(separator: ", ")))") }
        guard let b = lock.entry(for: bad) else { throw ValidationError("--bad \(bad): not in the catalogue (\(lock.aliases.joined(separator: ", ")))") }
        guard g.series == b.series, g.flavour == b.flavour else {
            throw ValidationError("--good \(g.name) and --bad \(b.name) are not one line of builds (series \(g.series)/\(b.series), flavour \(g.flavour)/\(b.flavour))")
        }
        let version = { (e: KernelLock.Entry) in KernelVersion(parsing: e.version) ?? KernelVersion([0]) }
        let (low, high) = version(g) < version(b) ? (g, b) : (b, g)
        var line = lock.kernels.filter { $0.series == g.series && $0.flavour == g.flavour && version($0) >= version(low) && version($0) <= version(high) }
            .sorted { version($0) < version($1) }
        say("bisect \(r.id) over \(line.count) pinned \(g.series) kernels: \(line.map(\.name).joined(separator: " "))")

        var seen: [String: Step] = [:]
        func step(_ e: KernelLock.Entry) throws -> Step {
            if let s = seen[e.name] { return s }
            let s = try Step.run(report: r, kernel: e.name, out: out + "/" + e.name)
            say("  \(e.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(s.verdict)  (\(String(format: "%.0f s", s.seconds)))")
            seen[e.name] = s
            return s
        }
        let ends = (try step(g), try step(b))
        guard ends.0.verdict == "FIXED", ends.1.verdict == "REPRODUCES" else {
            throw ValidationError("the ends do not differ as asked: \(g.name) says \(ends.0.verdict) (want FIXED), \(b.name) says \(ends.1.verdict) (want REPRODUCES)")
        }
        // The invariant: line.first and line.last give the two verdicts; a kernel that gives neither
        // (NOT APPLICABLE, a crash) leaves the line, as `git bisect skip` does.
        var lo = 0, hi = line.count - 1
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            let s = try step(line[mid])
            if s.verdict == seen[line[lo].name]!.verdict { lo = mid }
            else if s.verdict == seen[line[hi].name]!.verdict { hi = mid }
            else { line.remove(at: mid); hi -= 1 }
        }
        let before = line[lo], after = line[hi]
        let a = seen[before.name]!, z = seen[after.name]!
        say("")
        say("\(r.id): \(z.verdict) from \(after.name) on (\(after.packages[0].name) \(after.packages[0].version)); \(a.verdict) up to \(before.name)")
        say("  \(before.name): \(a.verdict) — \(a.evidence)")
        say("  \(after.name): \(z.verdict) — \(z.evidence)")
        // What the report's history says about the same two kernels: a flip it does not predict is news.
        for (e, s) in [(before, a), (after, z)] {
            let expected = r.expectedVerdict(on: KernelSituation(release: e.release, version: KernelVersion(parsing: e.version), disposable: true, disposableReason: "bisect"))
            say("  history on \(e.name): \(expected.kind.title)\(expected.kind.title == s.verdict ? "" : " — NOT what it showed") (\(expected.why))")
        }
        say("kernels run: \(seen.count) of \(line.count) (results: \(out))")
    }

    func gitBisect(_ r: BugReport, tree: String, out: String) throws {
        let dir = URL(fileURLWithPath: tree).standardized.path
        func git(_ args: [String], timeout: Double = 120) throws -> ProcessResult {
            try Namespaces.Process.execute(["git", "-C", dir] + args, timeout: timeout)
        }
        guard try git(["rev-parse", "--git-dir"]).succeeded else { throw ValidationError("--source \(dir): not a git tree") }
        guard try git(["status", "--porcelain", "--untracked-files=no"]).standardOutput.isEmpty else {
            throw ValidationError("--source \(dir): the tree has changes; git bisect would check out over them (commit or stash them first)")
        }
        let start = try git(["bisect", "start", bad, good])
        guard start.succeeded else { throw ValidationError("git bisect start \(bad) \(good): \(start.standardError)") }
        defer { _ = try? git(["bisect", "reset"]) }
        let stepCommand = [selfPath(), "bisect-step", r.id, "--source", dir, "--output", out]
        say("git -C \(dir) bisect run \(stepCommand.joined(separator: " "))")
        let status = try runCommand(["git", "-C", dir, "bisect", "run"] + stepCommand)
        let log = try git(["bisect", "log"]).standardOutput
        try Data(log.utf8).write(to: URL(fileURLWithPath: out + "/bisect.log"))
        guard status == 0 else { throw ValidationError("git bisect run exited \(status) (log: \(out)/bisect.log)") }
        // `# first bad commit: [SHA] subject` is the last comment of the log.
        if let first = log.split(separator: "\n").last(where: { $0.hasPrefix("# first bad commit:") }) {
            say("\n\(r.id): REPRODUCES from \(first.dropFirst("# first bad commit: ".count)) on")
        }
        say("steps: \(out)/bisect.log, each step's matrix in \(out)/")
    }
}

/// One step of `git bisect run`: build the checked-out tree, boot it, run the report. Exit 0 when
/// FIXED (good), 1 when REPRODUCES (bad), 125 when neither or the build fails (skip).
struct BisectStep: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bisect-step", abstract: "One step of `xfrmlab bisect --source` (git bisect run).", shouldDisplay: false)
    @Argument var report: String
    @Option(name: .customLong("source")) var sourceTree: String
    @Option var output: String

    func run() throws {
        let root = MatrixCommand().repositoryRoot()
        guard let r = try BugReport.loadAll(directory: root + "/Fixtures/reports").first(where: { $0.id == report }) else { throw ExitCode(125) }
        let rev = (try? Namespaces.Process.execute(["git", "-C", sourceTree, "rev-parse", "--short=12", "HEAD"], timeout: 60))?.standardOutput
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "HEAD"
        let built: KernelBuilder.Built
        do {
            built = try KernelBuilder(log: { warn($0) }).build(KernelBuilder.Request(tree: .directory(sourceTree), fragment: root + "/" + BuiltKernels.fragment))
        } catch {
            warn("bisect-step \(rev): build failed, skipped: \(error)")
            throw ExitCode(125)
        }
        // The image is replaced by the next step's build: each step boots its own copy.
        let dir = output + "/" + rev
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let image = dir + "/vmlinuz-" + built.release
        try? FileManager.default.removeItem(atPath: image)
        try FileManager.default.copyItem(atPath: built.image, toPath: image)
        try? FileManager.default.copyItem(atPath: built.config, toPath: dir + "/config-" + built.release)
        let s = try Step.run(report: r, kernel: image, out: dir + "/matrix")
        say("bisect-step \(rev): \(s.verdict) — \(s.evidence)")
        switch s.verdict {
        case "FIXED": return
        case "REPRODUCES": throw ExitCode(1)
        default: throw ExitCode(125)
        }
    }
}

/// A report's verdict on one kernel, from the matrix's report.json.
struct Step {
    var verdict: String
    var evidence: String
    var seconds: Double

    static func run(report r: BugReport, kernel: String, out: String) throws -> Step {
        let started = Date()
        let arguments = [selfPath(), "matrix", "--kernel", kernel, "--filter", "BugReportTests/\(ReportScaffold.testName(r.id))\\(",
                         "--output", out, "--no-retry", "--plain"]
        let log = out + ".log"
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: out).deletingLastPathComponent().path, withIntermediateDirectories: true)
        let fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { close(fd) }
        let pid = try Namespaces.Process.spawn(arguments, namespaceFD: -1, stdin: -1, stdout: fd, stderr: fd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard let report = try? MatrixReport.load(directory: out), let k = report.kernels.first else {
            return Step(verdict: "NO RESULT", evidence: "the matrix left no report.json (\(log))", seconds: Date().timeIntervalSince(started))
        }
        let cell = k.cells.values.first { $0.report?.id == r.id }
        return Step(verdict: cell?.report?.verdict ?? (k.status == .ok ? cell?.verdict.rawValue ?? "NOT RUN" : k.status.rawValue),
                    evidence: cell?.report?.evidence ?? cell?.detail ?? k.statusDetail ?? "", seconds: Date().timeIntervalSince(started))
    }
}

/// A line on standard output, written at once (print's buffer would hold a step's line back from
/// a pipe or a file until the bisect ends).
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}
