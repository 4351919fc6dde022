import ArgumentParser
import Foundation
import Glibc
import Matrix
import Namespaces

struct MatrixCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matrix",
        abstract: "Run the test suite on several kernels — the host directly, others in VMs (virtme-ng) — and report tests × kernels.",
        discussion: """
            Each --kernel is: host (this machine's kernel, no VM); an alias of the kernel catalogue \
            (Fixtures/kernels/kernels.lock: a series 5.10, 6.1, 6.12, 7.2, 7.3-rc, a flavour 6.1-cloud, 6.12-rt, or a \
            pinned point release 5.10.218, 6.1.176 — fetched into the kernel cache when missing, see `xfrmlab kernels`); \
            a release with an image in /boot; or the path of a bzImage (its modules with --modules DIR, matched by \
            release; its config beside it as config-RELEASE or in the modules directory).

            Build first (`swift build --build-tests`): the guest runs this build's test binary and xfrmlab over the \
            host's root filesystem. Results come back through a shared directory; the report (text, JSON, JUnit) \
            goes to --output (text, JSON, JUnit, HTML and KTAP). Exits 1 when any result is not what \
            Fixtures/matrix/expectations.yaml allows.

            A CI system can fan the matrix out: `--shard I/N` runs one share of the (kernel, test) cells, and \
            `xfrmlab matrix merge DIR…` joins the shares' results into the report one run would have written.
            """,
        subcommands: [MatrixMerge.self])

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("kernel"), help: "A kernel to run the suite on (repeat for more).")
    var kernels: [String] = []

    @Option(name: .customLong("modules"), help: "The modules directory of a bzImage given by path (repeatable; matched by release).")
    var modules: [String] = []

    @Option(help: ArgumentHelp("Run another package's tests (built here first) with its own Fixtures/matrix/expectations.yaml; results under its .build/matrix.", valueName: "DIR"))
    var package: String?

    @Option(help: "The kernel catalogue's lock (default: Fixtures/kernels/kernels.lock).")
    var lock: String?

    @Option(help: "The per-kernel expectations (default: Fixtures/matrix/expectations.yaml).")
    var expectations: String?

    // Shared with `matrix merge`, whose --output the parent would otherwise take.
    @OptionGroup var destination: MatrixOutput
    var output: String? { destination.output }

    @Option(name: .customLong("tests"), help: "The test binary (default: XfrmLabPackageTests.xctest next to this xfrmlab).")
    var testBinary: String?

    @Option(help: "kvm, tcg, or auto (try KVM briefly, fall back to TCG).")
    var accel: String = "auto"

    @Option(help: "Guest CPUs.")
    var cpus: Int = 2

    @Option(help: "Guest memory (qemu -m).")
    var memory: String = "2G"

    @Option(help: "Seconds per kernel before its VM is stopped (a hang's limit: the whole suite, IKE daemons included, takes 15–20 min under TCG here).")
    var timeout: Double = 1800

    @Option(help: "Seconds until the guest starts the suite (default 240 under TCG, 60 with KVM).")
    var bootTimeout: Double?

    @Flag(help: "Do not retry a failed test (by default each failed test runs once more; a pass then is reported as flaky).")
    var noRetry = false

    @Flag(help: "Run tests one at a time, so kernel warnings are blamed on exactly one test.")
    var serial = false

    @Option(help: "Run only tests matching this regular expression (the test binary's --filter; repeatable).")
    var filter: [String] = []

    @Option(help: ArgumentHelp("Run only the tests matching REGEX on KERNEL (repeatable; KERNEL as given to --kernel): `make test` asks 6.12 only the bug reports and scenarios.", valueName: "KERNEL=REGEX"))
    var only: [String] = []

    @Option(help: ArgumentHelp("Leave out the tests matching REGEX on KERNEL (repeatable): `make test` runs the daemon version cases on 6.12 only, not in 6.1's whole suite.", valueName: "KERNEL=REGEX"))
    var except: [String] = []

    @Option(help: ArgumentHelp("Run tests matching REGEX after the rest, by themselves (repeatable; whole-suite runs only, not with --filter; `make test` passes LoadTests, which holds the RTNL lock for seconds). KERNEL=REGEX: on that kernel only, and in its --only run too (a mutant kernel's detector that leaves the kernel broken runs last).", valueName: "[KERNEL=]REGEX"))
    var alone: [String] = []

    @Flag(help: "Plain progress lines instead of a live status line (implied by CI=true or a non-terminal stderr).")
    var plain = false

    @Flag(help: "Keep the whole kernel console in each kernel's console.log (boots slower; by default only emergencies and alerts).")
    var console = false

    @Option(help: ArgumentHelp("Run share I of N of the (kernel, test) cells (dealt round robin); `xfrmlab matrix merge` joins the shares.", valueName: "I/N"))
    var shard: String?

    @Option(help: ArgumentHelp("Write report.html again from DIR/report.json (an earlier run's directory) and exit.", valueName: "DIR"))
    var html: String?

    func validate() throws {
        if html != nil { return }
        if let shard { _ = try MatrixShard(parsing: shard) }
        // (Whether a --kernel was given is checked in run(): `matrix merge` is validated through here too.)
        if !["auto", "kvm", "tcg"].contains(accel) { throw ValidationError("--accel must be auto, kvm or tcg") }
        if cpus < 1 { throw ValidationError("--cpus must be at least 1") }
        if timeout < 60 { throw ValidationError("--timeout must be at least 60 seconds") }
    }

    func run() throws {
        global.bootstrap()
        if let html {
            let report = try MatrixReport.load(directory: html)
            try Data(report.html(directory: html).utf8).write(to: URL(fileURLWithPath: html + "/report.html"))
            print("wrote \(html)/report.html")
            return
        }
        try requireRoot()
        if kernels.isEmpty { throw ValidationError("give at least one --kernel (host, a catalogue alias such as 5.10, 6.1, 6.12, 7.2 or 5.10.218, a release in /boot, or a bzImage path)") }
        // XfrmLab's own checkout (its kernel catalogue, its built kernels): with --package, the one
        // this binary was built in, whatever the working directory is.
        let root = package == nil ? repositoryRoot() : repositoryRoot(ignoringWorkingDirectory: true)
        let catalogue = try KernelLock.load(path: lock ?? root + "/" + KernelLock.defaultPath)
        let resolved = try kernels.map { try KernelCatalog.resolve($0, modules: modules, lock: catalogue, repositoryRoot: root, log: { warn($0) }) }
        for dir in modules where !resolved.contains(where: { $0.modules == URL(fileURLWithPath: dir).standardized.path || $0.modules?.hasPrefix(URL(fileURLWithPath: dir).standardized.path + "/") == true }) {
            throw ValidationError("--modules \(dir): no --kernel image with a matching release (\(resolved.compactMap(\.release).joined(separator: ", ")))")
        }
        // The package whose suite runs: this one, or --package's (its tests, expectations and results).
        let suiteRoot = try package.map { try Self.build(package: $0) } ?? root
        let expectationsPath = expectations ?? suiteRoot + "/Fixtures/matrix/expectations.yaml"
        let rules = try Expectations.load(path: expectationsPath)

        let me = selfPath()
        let binDirectory = URL(fileURLWithPath: me).deletingLastPathComponent().path
        let tests = try testBinary ?? (package == nil ? binDirectory + "/XfrmLabPackageTests.xctest" : Self.testBinary(in: suiteRoot))
        guard access(tests, X_OK) == 0 else {
            throw ValidationError("no test binary at \(tests): build it first (`swift build --build-tests`) or pass --tests")
        }
        let stamp: String = {
            let f = DateFormatter()
            f.dateFormat = "yyyyMMdd-HHmmss"
            f.locale = Locale(identifier: "en_US_POSIX")
            return f.string(from: Date())
        }()
        let matrixRoot = suiteRoot + "/.build/matrix"
        let out = URL(fileURLWithPath: output ?? matrixRoot + "/" + stamp).standardized.path
        var guestPath = [binDirectory]
        if let swift = Executable.find("swift") {
            guestPath.append(URL(fileURLWithPath: swift).resolvingSymlinksInPath().deletingLastPathComponent().path)
        }
        let environment = ProcessInfo.processInfo.environment
        let ci = ["true", "1", "yes"].contains((environment["CI"] ?? "").lowercased())
        var options = MatrixRunner.Options(
            kernels: resolved, expectations: rules, expectationsPath: expectationsPath, output: out, testBinary: tests,
            xfrmlab: me, guestPath: guestPath, accelerator: accel == "auto" ? nil : Accelerator(rawValue: accel),
            cpus: cpus, memory: memory, timeout: timeout, bootTimeout: bootTimeout, retry: !noRetry, serial: serial,
            filters: filter, plain: plain || ci || isatty(STDERR_FILENO) == 0)
        options.console = console
        for a in alone {
            if let eq = a.firstIndex(of: "="), kernels.contains(String(a[..<eq])) {
                options.aloneOn[String(a[..<eq]), default: []].append(String(a[a.index(after: eq)...]))
            } else {
                options.alone.append(a)
            }
        }
        for o in only {
            guard let eq = o.firstIndex(of: "="), kernels.contains(String(o[..<eq])), o.index(after: eq) < o.endIndex else {
                throw ValidationError("--only \(o): expected KERNEL=REGEX with KERNEL one of the --kernel values (\(kernels.joined(separator: ", ")))")
            }
            options.only[String(o[..<eq]), default: []].append(String(o[o.index(after: eq)...]))
        }
        for e in except {
            guard let eq = e.firstIndex(of: "="), kernels.contains(String(e[..<eq])), e.index(after: eq) < e.endIndex else {
                throw ValidationError("--except \(e): expected KERNEL=REGEX with KERNEL one of the --kernel values (\(kernels.joined(separator: ", ")))")
            }
            options.except[String(e[..<eq]), default: []].append(String(e[e.index(after: eq)...]))
        }
        if let shard {
            let share = try MatrixShard(parsing: shard)
            let counts = try share.apply(to: &options, tests: try MatrixShard.listTests(binary: tests))
            warn("shard \(share): " + (counts.isEmpty ? "no cells" : kernels.compactMap { k in counts[k].map { "\(k) \($0)" } }.joined(separator: ", ")))
            if counts.isEmpty {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
                try MatrixReport(created: Date(), host: Kernel.runningRelease, accelerator: "none", acceleratorReason: "an empty share",
                                 expectations: expectationsPath, testBinary: tests, kernels: []).write(to: out)
                return
            }
        }
        let report = try MatrixRunner(options: options).run()
        if output == nil {
            let latest = matrixRoot + "/latest"
            unlink(latest)
            symlink(stamp, latest)
        }
        if global.json {
            print(String(decoding: try report.json(), as: UTF8.self))
        } else {
            print(report.text(), terminator: "")
            print("report: \(out)/report.txt (also report.html, report.json, junit.xml, report.ktap)")
        }
        if !report.ok { throw ExitCode(1) }
    }

    /// `swift build --build-tests` of another package; returns its root.
    static func build(package: String) throws -> String {
        let dir = URL(fileURLWithPath: package).standardized.path
        guard FileManager.default.fileExists(atPath: dir + "/Package.swift") else { throw ValidationError("--package \(package): no Package.swift there") }
        warn("matrix: building \(dir)'s tests")
        let r = try Namespaces.Process.execute(["swift", "build", "--build-tests", "--package-path", dir], timeout: 3600)
        guard r.succeeded else {
            throw ValidationError("--package \(package): swift build --build-tests failed (exit \(r.status)):\n\(String((r.standardOutput + r.standardError).suffix(3000)))")
        }
        return dir
    }

    /// The package's test bundle (`NamePackageTests.xctest` in .build/debug).
    static func testBinary(in root: String) throws -> String {
        let debug = root + "/.build/debug"
        guard let name = ((try? FileManager.default.contentsOfDirectory(atPath: debug)) ?? []).first(where: { $0.hasSuffix("PackageTests.xctest") }) else {
            throw ValidationError("\(debug): no *PackageTests.xctest (has the package a test target?)")
        }
        return debug + "/" + name
    }

    /// The repository: the working directory if it has Package.swift, else three levels above
    /// this binary (.build/debug/xfrmlab).
    func repositoryRoot(ignoringWorkingDirectory: Bool = false) -> String {
        let cwd = FileManager.default.currentDirectoryPath
        if !ignoringWorkingDirectory && FileManager.default.fileExists(atPath: cwd + "/Package.swift") { return cwd }
        let exe = URL(fileURLWithPath: selfPath())
        for up in 2...4 {
            var url = exe
            for _ in 0..<up { url.deleteLastPathComponent() }
            if FileManager.default.fileExists(atPath: url.path + "/Package.swift") { return url.path }
        }
        return cwd
    }
}

/// Where a matrix's report goes (`matrix` and `matrix merge`).
struct MatrixOutput: ParsableArguments {
    @Option(help: "Where the report and raw results go (default for a run: .build/matrix/DATE-TIME, with .build/matrix/latest pointing at it).")
    var output: String?
}

/// `xfrmlab matrix merge DIR…`: the shares of a matrix joined into one report.
struct MatrixMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Join the results of `xfrmlab matrix --shard` runs into one report (text, JSON, JUnit, HTML, KTAP), as if one run had made it.")

    @Argument(help: "The shares' results folders (each with its report.json).")
    var directories: [String]

    @OptionGroup var destination: MatrixOutput

    func run() throws {
        guard let output = destination.output else { throw ValidationError("give --output DIR: where the joined report goes") }
        let parts = try directories.map { try MatrixReport.load(directory: $0) }
        let report = try MatrixReport.merge(parts)
        try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
        try report.write(to: output)
        print(report.text(), terminator: "")
        print("report: \(output)/report.txt (also report.html, report.json, junit.xml, report.ktap), from \(parts.count) shares")
        if !report.ok { throw ExitCode(1) }
    }
}

/// Runs the suite where it is started and writes the results for `xfrmlab matrix` (which starts
/// it inside each VM, and on the host for `--kernel host`).
struct MatrixGuest: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matrix-guest",
        abstract: "The guest side of `xfrmlab matrix`: run the test binary, retry failures, read the kernel log and config, probe.",
        shouldDisplay: false)

    @Option(help: "The results directory (shared with the host).")
    var output: String

    @Option(name: .customLong("tests"), help: "The test binary.")
    var testBinary: String

    @Option(help: "Stop the tests by this time (seconds since 1970), to leave time for the kernel log and the probe.")
    var deadline: Double?

    @Flag var serial = false
    @Flag var noRetry = false
    @Option var filter: [String] = []
    @Option var alone: [String] = []
    @Option var last: [String] = []
    @Option var skip: [String] = []
    @Flag(help: "Running on the host: record only the kernel log from now on.") var host = false

    func run() throws {
        let timeout = deadline.map { $0 - Date().timeIntervalSince1970 } ?? 3600
        var driver = GuestDriver(output: output, testBinary: testBinary, xfrmlab: selfPath(), filters: filter, alone: alone,
                                 serial: serial, retry: !noRetry, timeout: max(30, timeout))
        driver.last = last
        driver.skips = skip
        driver.onHost = host
        try driver.run()
    }
}

/// vng's initramfs with another 9p msize (`Initramfs`): the qemu wrapper of `xfrmlab matrix`
/// runs it on the -initrd vng made.
struct MatrixInitramfs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "matrix-initramfs",
        abstract: "Copy vng's initramfs with another msize in its 9p root mount (for `xfrmlab matrix` on kernels before 6.1).",
        shouldDisplay: false)

    @Option(help: "The 9p msize.") var msize: Int
    @Argument var input: String
    @Argument var output: String

    func run() throws {
        let archive = try Data(contentsOf: URL(fileURLWithPath: input))
        try Initramfs.settingNinePMessageSize(archive, to: msize).write(to: URL(fileURLWithPath: output))
    }
}

/// This executable's path (/proc/self/exe, as the guest sees the same file).
func selfPath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
