import Dispatch
import Foundation
import Glibc
import Namespaces
import Kmsg

/// Runs the suite on each kernel in turn — the host directly, every other kernel in its own VM —
/// and judges what came back.
public final class MatrixRunner {
    public struct Options: Sendable {
        public var kernels: [Kernel]
        public var expectations: Expectations
        public var expectationsPath: String
        /// Where the report and every kernel's raw results go.
        public var output: String
        public var testBinary: String
        /// This xfrmlab: the guest runs `xfrmlab matrix-guest` from the same build.
        public var xfrmlab: String
        /// Put on the guest's PATH (the Swift toolchain's bin directory).
        public var guestPath: [String]
        /// nil: detect.
        public var accelerator: Accelerator?
        public var cpus: Int
        public var memory: String
        /// Per kernel, from launch.
        public var timeout: Double
        /// Until the guest's driver starts.
        public var bootTimeout: Double?
        public var retry: Bool
        public var serial: Bool
        public var filters: [String]
        public var plain: Bool
        /// The whole kernel console into console.log (slower boots under TCG).
        public var console: Bool = false
        /// Tests that run after the rest, each by itself.
        public var alone: [String] = []
        /// Kernel label → tests run by themselves after the rest there, even in an --only run.
        public var aloneOn: [String: [String]] = [:]
        /// Kernel label (as given to --kernel) → the only tests to run there (`--only 6.12=REGEX`):
        /// a second kernel for some tests without a second whole-suite VM.
        public var only: [String: [String]] = [:]
        /// Kernel label → tests left out there (`--except 6.1=REGEX`): the cases that need one
        /// particular kernel run on that one only.
        public var except: [String: [String]] = [:]

        public init(kernels: [Kernel], expectations: Expectations, expectationsPath: String, output: String, testBinary: String,
                    xfrmlab: String, guestPath: [String], accelerator: Accelerator?, cpus: Int, memory: String, timeout: Double,
                    bootTimeout: Double?, retry: Bool, serial: Bool, filters: [String], plain: Bool) {
            self.kernels = kernels
            self.expectations = expectations
            self.expectationsPath = expectationsPath
            self.output = output
            self.testBinary = testBinary
            self.xfrmlab = xfrmlab
            self.guestPath = guestPath
            self.accelerator = accelerator
            self.cpus = cpus
            self.memory = memory
            self.timeout = timeout
            self.bootTimeout = bootTimeout
            self.retry = retry
            self.serial = serial
            self.filters = filters
            self.plain = plain
        }
    }

    let options: Options
    let progress: Progress
    let judge: Judge

    public init(options: Options) {
        self.options = options
        self.progress = Progress(plain: options.plain)
        self.judge = Judge(expectations: options.expectations)
    }

    public func run() throws -> MatrixReport {
        try FileManager.default.createDirectory(atPath: options.output, withIntermediateDirectories: true)
        MatrixLock.sweep(root: URL(fileURLWithPath: options.output).deletingLastPathComponent().path)
        let lock = try MatrixLock(directory: options.output)
        defer { lock.release() }
        StopSignals.install()

        var accelerator = options.accelerator ?? .tcg
        var acceleratorReason = options.accelerator.map { "--accel \($0.rawValue)" } ?? "no VM needed"
        if options.accelerator == nil, let image = options.kernels.first(where: { $0.source == .image && $0.image != nil && unavailable($0) == nil })?.image {
            progress.line("matrix: checking whether KVM works (nested KVM often does not)…")
            (accelerator, acceleratorReason) = AcceleratorProbe.detect(image: image, workDirectory: options.output)
            progress.line("matrix: \(accelerator.rawValue.uppercased()): \(acceleratorReason)")
        }

        var results: [KernelResult] = []
        var allTests: [TestRecord] = []
        for (i, kernel) in options.kernels.enumerated() {
            var (result, tests) = runKernel(kernel, index: i + 1, of: options.kernels.count, accelerator: accelerator)
            if result.status == .guestDied && StopSignals.received == 0 {
                rerunAfterDeath(&result, tests: &tests, kernel: kernel, index: i + 1, accelerator: accelerator)
            }
            results.append(result)
            for t in tests where !allTests.contains(where: { $0.id == t.id }) { allTests.append(t) }
            if StopSignals.received != 0 { break }
        }
        var report = MatrixReport(created: Date(), host: Kernel.runningRelease, accelerator: accelerator.rawValue,
                                  acceleratorReason: acceleratorReason, expectations: options.expectationsPath,
                                  testBinary: options.testBinary, kernels: results)
        report.name(tests: allTests)
        if StopSignals.received != 0 { report.ok = false }
        try report.write(to: options.output)
        return report
    }

    // MARK: One kernel

    /// A guest that died is a finding, not noise: its crash is kept (the judge read it from the
    /// kernel log), and the test that ran when it died, with those that never started, runs again
    /// in a fresh guest — which says whether the crash recurs, and gives the rest their verdicts.
    func rerunAfterDeath(_ result: inout KernelResult, tests: inout [TestRecord], kernel: Kernel, index: Int, accelerator: Accelerator) {
        // A test that never ended, whatever its cell says: the crash's warning, blamed on it, makes
        // its cell WARN (the crash drill showed it).
        let neverEnded = Set(tests.filter { $0.outcome == .didNotFinish }.map(\.id))
        let crashed = result.cells.filter { neverEnded.contains($0.key) || $0.value.verdict == .didNotFinish }.map(\.key)
        let unfinished = result.cells.filter { crashed.contains($0.key) || $0.value.verdict == .missing }.map(\.key).sorted()
        // No test results at all (it died before the first test): nothing to name, so the whole selection again.
        let filters = unfinished.isEmpty && result.cells.isEmpty ? nil : unfinished.map(SuiteRun.filter(for:))
        guard filters?.isEmpty != true else { return }
        progress.line("[\(index)] \(kernel.label): the guest died (\(result.crashes.first?.summary ?? result.statusDetail ?? "")); running \(filters.map { "\($0.count) unfinished test(s)" } ?? "its tests") again in a fresh guest")
        let (again, moreTests) = runKernel(kernel, index: index, of: options.kernels.count, accelerator: accelerator,
                                           rerun: filters ?? [])
        for t in moreTests where !tests.contains(where: { $0.id == t.id }) { tests.append(t) }
        let recurred = again.status == .guestDied
            || again.crashes.contains { c in result.crashes.contains { $0.fingerprint.prefix(3) == c.fingerprint.prefix(3) } }
        for i in result.crashes.indices { result.crashes[i].recurred = recurred }
        // The same crash again is the same crash, though its trace's tail may differ (the crash
        // drill's second panic once had one frame more): only a new one is added.
        for c in again.crashes where !result.crashes.contains(where: { $0.fingerprint.prefix(3) == c.fingerprint.prefix(3) }) { result.crashes.append(c) }
        result.warnings += again.warnings
        for (id, cell) in again.cells where cell.verdict != .notSelected && (unfinished.contains(id) || filters == nil) {
            var merged = cell
            if crashed.contains(id) {
                let death = "the first guest died during it (\(result.crashes.first?.headline ?? "no oops in the log"))"
                if cell.verdict == .pass {
                    merged.verdict = .flaky
                    merged.detail = death + "; in a fresh guest it passed" + (recurred ? "" : ": the crash did not recur")
                } else {
                    merged.detail = death + "; in a fresh guest: " + (cell.detail ?? cell.verdict.cell)
                }
            }
            result.cells[id] = merged
        }
        // On a kernel built without a report's fix, a crash in that report's test that came back in
        // a fresh guest is the bug showing: its detector fired, the kernel answering with an oops
        // instead of a refusal. The crash is then the mutant's known symptom, not a failure.
        if recurred, let mutations = kernel.mutations {
            for id in crashed {
                guard let test = tests.first(where: { $0.id == id }), let report = VerdictRecord.reportID(ofTest: test),
                      mutations.contains(report) else { continue }
                let crash = result.crashes.first { $0.test == id } ?? result.crashes.first
                let evidence = "the kernel crashed in it, and again in a fresh guest: " + (crash.map { "\($0.headline) at \($0.fingerprint.prefix(6).joined(separator: " ← "))" } ?? "no oops in the log")
                result.cells[id] = Cell(verdict: .pass, detail: evidence, expectation: "a mutant's crash is its detector firing",
                                        seconds: result.cells[id]?.seconds,
                                        report: ReportCell(id: report, verdict: "REPRODUCES", expected: "REPRODUCES", evidence: evidence))
                for i in result.crashes.indices where result.crashes[i].known == nil && (result.crashes[i].test == nil || result.crashes[i].test == id) {
                    result.crashes[i].known = "\(kernel.label) is built without \(report)'s fix: this crash is its symptom"
                }
                result.warnings.removeAll { $0.test == id || ($0.test == nil && $0.warning.isCrash) }
            }
        }
        result.notes.append("the guest died\(result.statusDetail.map { " (\($0))" } ?? ""); \(unfinished.count) unfinished test(s) ran again in a fresh guest (\(again.directory)): \(again.status == .ok ? "it finished" : again.status.rawValue)\(recurred ? ", and the crash recurred" : ", and the crash did not recur")")
        result.timings.wall = (result.timings.wall ?? 0) + (again.timings.wall ?? 0)
        // The death stays a failure unless every crash is one a rule names and the fresh guest finished.
        if again.status == .ok && !result.crashes.isEmpty && result.crashes.allSatisfy({ $0.known != nil }) {
            result.status = .ok
            result.statusDetail = nil
        } else if again.status != .ok {
            result.statusDetail = (result.statusDetail ?? "") + "; in a fresh guest: \(again.status.rawValue)\(again.statusDetail.map { " (\($0))" } ?? "")"
        }
    }

    func runKernel(_ kernel: Kernel, index: Int, of total: Int, accelerator: Accelerator, rerun: [String]? = nil) -> (KernelResult, [TestRecord]) {
        let directory = options.output + "/kernels/" + kernel.slug + (rerun == nil ? "" : "/rerun")
        let results = directory + "/results"
        try? FileManager.default.removeItem(atPath: results)
        try? FileManager.default.createDirectory(atPath: results, withIntermediateDirectories: true)
        let isHost = kernel.source == .host
        var result = KernelResult(kernel: kernel, status: .ok, statusDetail: nil, accelerator: isHost ? "none" : accelerator.rawValue,
                                  release: isHost ? Kernel.runningRelease : kernel.release,
                                  version: nil, procVersion: nil, configSource: nil, config: [:], capabilities: nil, probeNote: nil,
                                  timings: Timings(), cells: [:], warnings: [], notes: [], directory: directory, consoleTail: nil)
        result.version = KernelVersion.of(release: result.release, banner: kernel.banner)?.description
        let title = "[\(index)/\(total)] \(kernel.label)" + (isHost ? " (\(Kernel.runningRelease), on the host)" : " (\(kernel.release ?? "?"), \(accelerator.rawValue.uppercased()))")

        if let reason = unavailable(kernel) {
            result.status = .unavailable
            result.statusDetail = reason
            if let release = kernel.release, kernel.image != nil, let config = KernelConfig.read(release: release, path: kernel.config) {
                result.config = KernelConfig.highlights(config.options)
                result.configSource = config.source
            }
            progress.finish(title, "UNAVAILABLE: \(reason)")
            return (result, [])
        }

        // The guest side: `xfrmlab matrix-guest`, the same binary, writing into `results`. It stops
        // the tests in time to still write the kernel log before this side's timeout stops the VM:
        // a wall-clock deadline, as the guest's clock starts at boot (its RTC is the host's).
        let deadline = Date().timeIntervalSince1970 + options.timeout - (isHost ? 10 : 40)
        var driver = [options.xfrmlab, "matrix-guest", "--output", results, "--tests", options.testBinary,
                      "--deadline", String(Int(deadline))]
        if options.serial { driver.append("--serial") }
        if !options.retry { driver.append("--no-retry") }
        let only = options.only[kernel.label]
        // A rerun asks exactly its tests (filters are alternatives: adding the run's own would widen it).
        for f in rerun.flatMap({ $0.isEmpty ? nil : $0 }) ?? (options.filters + (only ?? [])) { driver += ["--filter", f] }
        result.only = only
        result.filters = options.filters.isEmpty ? nil : options.filters
        for e in rerun == nil ? options.except[kernel.label] ?? [] : [] { driver += ["--skip", e] }
        result.except = options.except[kernel.label]
        for a in options.alone { driver += ["--alone", a] }
        // (A rerun asks exactly its tests: nothing after them.)
        let aloneOnKernel = rerun == nil ? options.aloneOn[kernel.label] ?? [] : []
        for a in aloneOnKernel { driver += ["--last", a] }
        if isHost { driver.append("--host") }

        let launched = KernelLog.monotonic()
        var vm: VirtualMachine?
        var hostPID: pid_t = 0
        do {
            if isHost {
                let fd = open(results + "/driver.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                defer { close(fd) }
                hostPID = try Process.spawn(driver, namespaceFD: -1, stdin: -1, stdout: fd, stderr: fd)
            } else {
                let script = results + "/guest.sh"
                let path = (options.guestPath + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]).joined(separator: ":")
                let body = """
                    #!/bin/sh
                    # Run inside the guest by vng: the suite, with results into this directory.
                    export PATH='\(path)'
                    export TMPDIR=/tmp
                    \(ProcessInfo.processInfo.environment["XFRMLAB_CRASH_DRILL"] == "1" ? "export XFRMLAB_CRASH_DRILL=1  # make crash-drill" : "")
                    \(kernel.mutations.map { "export XFRMLAB_KERNEL_MUTATIONS='\($0.joined(separator: ","))'  # built without these reports' fixes (build.json)" } ?? "")
                    \(ProcessInfo.processInfo.environment[GuestDriver.reportFolderKey].map { "export \(GuestDriver.reportFolderKey)=\(shellQuote($0))  # xfrmlab reproduce PATH" } ?? "")
                    # vng's init leaves 1024 open files (hard 4096); a root shell on a workstation has
                    # far more, and the large-topology tests need more than 1024.
                    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
                    # A booted Debian has the static device nodes of modules.devname (/dev/net/tun,
                    # /dev/fuse …; opening one loads its module): systemd-tmpfiles makes them, vng's
                    # init does not. In the guest's own /dev. (A kernel built without modules has none.)
                    cat "/lib/modules/$(uname -r)/modules.devname" 2>/dev/null | while read -r module name dev; do
                        case "$module" in '#'*|'') continue ;; esac
                        [ -e "/dev/$name" ] && continue
                        kind=${dev%%[0-9]*}; numbers=${dev#?}
                        case "$name" in */*) mkdir -p "/dev/${name%/*}" ;; esac
                        mknod "/dev/$name" "$kind" "${numbers%%:*}" "${numbers#*:}" 2>/dev/null
                    done
                    exec \(driver.map(shellQuote).joined(separator: " ")) > '\(results)/driver.log' 2>&1

                    """
                try Data(body.utf8).write(to: URL(fileURLWithPath: script))
                chmod(script, 0o755)
                var configuration = VirtualMachine.Configuration(
                    kernel: kernel, accelerator: accelerator, cpus: options.cpus, memory: options.memory,
                    resultsDirectory: results, workDirectory: directory + "/vm", command: script,
                    consoleLog: directory + "/console.log", consoleLevel: options.console ? 7 : 2)
                // 9p before 6.1 costs in proportion to the msize per request (`Initramfs`): 64 KiB
                // made 5.10's execs 2.4× cheaper (6.1 itself is slower with it).
                if let version = KernelVersion.of(release: kernel.release, banner: kernel.banner), version < KernelVersion([6, 1]) {
                    configuration.ninePMessageSize = 65536
                    configuration.xfrmlab = options.xfrmlab
                }
                let machine = VirtualMachine(configuration)
                try machine.start()
                vm = machine
            }
        } catch {
            result.status = .error
            result.statusDetail = "\(error)"
            progress.finish(title, "ERROR: \(error)")
            return (result, [])
        }

        // Watch: the guest's record appears when user space runs the driver; the event stream grows per test.
        let bootTimeout = options.bootTimeout ?? (isHost ? 60 : (accelerator == .kvm ? 60 : 240))
        var tail = EventTail(path: results + "/events.jsonl")
        var retryTail = EventTail(path: results + "/events-retry.jsonl")
        // The tests the guest runs by themselves, in its order: the run's own (in a whole-suite run
        // only) and this kernel's.
        let filtered = !(rerun.flatMap { $0.isEmpty ? nil : $0 } ?? (options.filters + (only ?? []))).isEmpty
        let aloneHere = (filtered ? [] : options.alone) + aloneOnKernel
        var aloneTails = aloneHere.indices.map { EventTail(path: results + "/events-alone-\($0 + 1).jsonl") }
        var driverUp: Double?
        var firstTest: Double?
        var exit: Int32?
        var lastPlain = launched
        while true {
            let now = KernelLog.monotonic()
            exit = isHost ? reap(hostPID) : vm!.poll()
            if driverUp == nil && FileManager.default.fileExists(atPath: results + "/" + GuestRecord.fileName) { driverUp = now - launched }
            tail.advance()
            retryTail.advance()
            for i in aloneTails.indices { aloneTails[i].advance() }
            if firstTest == nil && tail.started > 0 { firstTest = now - launched }
            if exit != nil { break }
            if StopSignals.received != 0 {
                result.status = .error
                result.statusDetail = "stopped by signal \(StopSignals.received)"
                break
            }
            if driverUp == nil && now - launched > bootTimeout {
                result.status = .bootTimeout
                result.statusDetail = "the guest did not start the suite within \(Int(bootTimeout)) s (a hang or a panic during boot); qemu stopped"
                break
            }
            if now - launched > options.timeout {
                result.status = .suiteTimeout
                result.statusDetail = "not finished after \(Int(options.timeout)) s; \(isHost ? "driver" : "qemu") stopped"
                break
            }
            let phase: String
            if driverUp == nil { phase = "booting" } else if tail.total == 0 { phase = "starting the tests" } else if retryTail.total > 0 {
                phase = "retrying \(retryTail.total) failed test(s): \(retryTail.done)/\(retryTail.total)"
            } else if let i = aloneTails.lastIndex(where: { $0.total > 0 }) {
                phase = "\(tail.done)/\(tail.total) tests done; now by itself: \(aloneHere[i])" + (aloneTails[i].done == aloneTails[i].total ? " (done)" : "")
            } else {
                phase = "\(tail.done)/\(tail.total) tests done, \(tail.running) running" + (tail.failed > 0 ? ", \(tail.failed) failed" : "") + (tail.skipped > 0 ? ", \(tail.skipped) skipped" : "")
            }
            if progress.plain {
                if now - lastPlain >= 30 { progress.line("\(title): \(phase), \(Int(now - launched)) s"); lastPlain = now }
            } else {
                progress.status("\(title): \(phase)  \(Int(now - launched)) s")
            }
            usleep(250_000)
        }
        if isHost {
            if exit == nil {
                kill(hostPID, SIGTERM); usleep(500_000); kill(hostPID, SIGKILL)
                var s: Int32 = 0
                while waitpid(hostPID, &s, 0) < 0 && errno == EINTR {}
            }
        } else {
            vm!.stop()
            let left = Leftovers.processes(mentioning: results)
            if !left.isEmpty { result.notes.append("processes still holding the results after stop: \(left)") }
        }
        result.timings.wall = KernelLog.monotonic() - launched
        result.timings.bootToFirstTest = firstTest

        // What the guest wrote.
        let record = GuestRecord.load(from: results)
        func events(_ name: String) -> SuiteRun? {
            FileManager.default.fileExists(atPath: results + "/" + name)
                ? SuiteRun.parse((try? String(contentsOfFile: results + "/" + name, encoding: .utf8)) ?? "") : nil
        }
        let first = events("events.jsonl").map { main in
            SuiteRun.merged([main] + aloneHere.indices.compactMap { events("events-alone-\($0 + 1).jsonl") })
        }
        let retry = events("events-retry.jsonl")
        let kmsg = (try? String(contentsOfFile: results + "/kmsg.txt", encoding: .utf8)) ?? ""
        var log = kmsg.split(separator: "\n").compactMap { KernelLogRecord(kmsg: $0) }
        if kmsg.contains("# kernel log records lost") {
            result.notes.append("some kernel log records were overwritten before they could be read: a warning among them would be missed")
        }
        // On the host, what the kernel logged before the driver started is someone else's.
        if isHost {
            if let record, let offset = record.kernelLogOffset {
                let since = record.uptimeAtStart - offset - 0.001
                log.removeAll { $0.seconds < since }
            } else {
                log = []
                result.notes.append("the kernel log could not be tied to the run (no clock mark): not scanned")
            }
        }
        if let record {
            result.release = record.release
            result.procVersion = record.version
            result.version = KernelVersion.of(release: record.release, banner: record.version)?.description
            result.config = record.config
            result.configSource = record.configSource
            result.xfrmStatCounters = record.xfrmStatCounters
            let phases = record.phases.compactMap { p in p.ended.map { $0 - p.started } }
            if !phases.isEmpty { result.timings.suite = phases.reduce(0, +) }
            if let probe = record.probe {
                if !probe.available {
                    result.probeNote = "this xfrmlab has no `probe` command (\(probe.error?.split(separator: "\n").first ?? "")); no capability table"
                } else if let text = try? String(contentsOfFile: results + "/probe.json", encoding: .utf8), let table = ProbeTable.parse(text) {
                    result.capabilities = table
                    if probe.status != 0 { result.probeNote = "`xfrmlab probe --json` exited \(probe.status)" }
                } else {
                    result.probeNote = "`xfrmlab probe --json` failed (exit \(probe.status)): \(probe.error ?? "no JSON")"
                }
            }
            for p in record.phases where p.timedOut {
                result.notes.append("\(p.name): the test binary was stopped after the driver's timeout")
            }
            if result.status == .ok && !record.finished {
                result.status = .guestDied
                result.statusDetail = "the guest went away during the run (a panic or a crash; vng exit \(exit.map(String.init) ?? "?"))"
            }
            if let p = record.phases.first, result.status == .ok, let status = p.status, status != 0, status != 1 {
                result.notes.append("the test binary exited \(status)\(status > 128 ? " (signal \(status - 128))" : "")")
            }
        } else if result.status == .ok {
            result.status = isHost ? .error : .guestDied
            result.statusDetail = isHost ? "the driver wrote nothing (see \(results)/driver.log)"
                : "the guest never started the suite (vng exit \(exit.map(String.init) ?? "?")): a panic or a boot failure"
        }
        // The image's own config beats what the guest found (a guest has no /boot of its own).
        if !isHost, let release = result.release, let config = KernelConfig.read(release: release, path: kernel.config),
           result.config.isEmpty || kernel.config != nil {
            result.config = KernelConfig.highlights(config.options)
            result.configSource = config.source
        }
        if result.status == .guestDied, !isHost {
            let console = (try? String(contentsOfFile: directory + "/console.log", encoding: .utf8)) ?? ""
            log += KernelLog.consoleRecords(console, after: log.last?.microseconds ?? 0, sequence: log.last?.sequence ?? 0)
        }
        if let first, first.tests.isEmpty == false {
            judge.judge(&result, first: first, retry: retry, log: log, kernelLogOffset: record?.kernelLogOffset,
                        reports: VerdictRecord.load(path: results + "/verdicts.jsonl"))
        } else {
            judge.judge(&result, first: nil, retry: nil, log: log, kernelLogOffset: nil)
            if result.status == .ok {
                result.status = .error
                result.statusDetail = "no test results (see \(results)/driver.log and tests.log)"
            }
        }
        if result.status != .ok && !isHost {
            let console = (try? String(contentsOfFile: directory + "/console.log", encoding: .utf8)) ?? ""
            // The console ends lines with \r\n, one Character in Swift: split on any newline.
            result.consoleTail = console.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !$0.isEmpty }.suffix(40).map { $0 }
        }
        let counts = Verdict.allCases.compactMap { v -> String? in
            let n = result.count(v)
            return n == 0 ? nil : "\(n) \(v.rawValue)"
        }.joined(separator: ", ")
        let timing = [result.timings.bootToFirstTest.map { String(format: "first test after %.1f s", $0) },
                      result.timings.suite.map { String(format: "suite %.1f s", $0) }].compactMap { $0 }.joined(separator: ", ")
        let verdict = result.problems == 0 ? "ok" : "\(result.problems) unexpected"
        progress.finish(title, (result.status == .ok ? "" : result.status.rawValue.uppercased() + ": ") + "\(verdict) — \(counts.isEmpty ? "no results" : counts)" + (timing.isEmpty ? "" : " (\(timing))"))
        return (result, (first?.tests ?? []))
    }

    /// Why a kernel cannot run here, before trying.
    func unavailable(_ kernel: Kernel) -> String? {
        if let reason = kernel.unavailable { return reason }
        guard kernel.source == .image, let release = kernel.release else { return nil }
        // vng shares the root filesystem over 9p (virtiofs needs the Rust virtiofsd, which this
        // Debian lacks): a kernel without 9p cannot mount it.
        guard let config = KernelConfig.read(release: release, path: kernel.config)?.options else { return nil }
        let has9p = ["CONFIG_9P_FS", "CONFIG_NET_9P_VIRTIO"].allSatisfy { ["y", "m"].contains(config[$0] ?? "n") }
        if !has9p {
            return "\(release) is built without 9p (CONFIG_9P_FS=\(config["CONFIG_9P_FS"] ?? "n"), CONFIG_NET_9P_VIRTIO=\(config["CONFIG_NET_9P_VIRTIO"] ?? "n")), so vng cannot share the host's root filesystem with it (virtiofs would need the Rust virtiofsd)"
        }
        return nil
    }

    func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == pid ? exitCode(status) : nil
    }
}

func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// Reads an event stream as it grows, counting tests for the progress line.
struct EventTail {
    let path: String
    var offset: UInt64 = 0
    var pending = Data()
    var functions = Set<String>()
    var total = 0, started = 0, ended = 0, done = 0, failed = 0, skipped = 0
    var running: Int { started - ended }

    init(path: String) { self.path = path }

    mutating func advance() {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        try? handle.seek(toOffset: offset)
        let data = handle.readDataToEndOfFile()
        offset += UInt64(data.count)
        pending.append(data)
        while let newline = pending.firstIndex(of: 0x0A) {
            let line = pending[pending.startIndex..<newline]
            pending = Data(pending[(newline + 1)...])
            guard let o = try? JSONSerialization.jsonObject(with: line) as? [String: Any],
                  let payload = o["payload"] as? [String: Any] else { continue }
            if o["kind"] as? String == "test" {
                if payload["kind"] as? String == "function", let id = payload["id"] as? String { functions.insert(id); total += 1 }
                continue
            }
            guard let id = payload["testID"] as? String, functions.contains(id) else { continue }
            switch payload["kind"] as? String {
            case "testStarted": started += 1
            case "testSkipped": done += 1; skipped += 1
            case "testEnded":
                done += 1
                ended += 1
                let symbols = ((payload["messages"] as? [[String: Any]]) ?? []).compactMap { $0["symbol"] as? String }
                if symbols.contains("fail") { failed += 1 }
                if symbols.contains("skip") { skipped += 1 }
            default: break
            }
        }
    }
}

/// Progress on a terminal (one line rewritten in place), or plain lines (CI, a pipe).
final class Progress {
    let plain: Bool
    private var statusShown = false

    init(plain: Bool) { self.plain = plain }

    func status(_ text: String) {
        guard !plain else { return }
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
        statusShown = true
    }

    func line(_ text: String) {
        clear()
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    func finish(_ title: String, _ text: String) { line("\(title): \(text)") }

    private func clear() {
        if statusShown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)); statusShown = false }
    }
}

/// SIGINT/SIGTERM/SIGHUP are noted; the watch loop then stops the VM that runs, so nothing is
/// left behind, and the report is still written.
enum StopSignals {
    nonisolated(unsafe) static var received: Int32 = 0
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []

    static func install() {
        guard sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { received = sig }
            source.resume()
            sources.append(source)
        }
    }
}

/// One matrix at a time per output directory, held for as long as the matrix runs.
struct MatrixLock {
    let fd: Int32

    init(directory: String) throws {
        let path = directory + "/.lock"
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0, flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            throw VirtualMachineError("another matrix is running in \(directory)")
        }
    }

    /// Kills the qemu (and vng) of matrices that were killed before they could stop their VM:
    /// those under `root` whose lock nobody holds, found by the results path in their command line.
    static func sweep(root: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            let directory = root + "/" + name
            let fd = open(directory + "/.lock", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else { continue }  // a live matrix
            for pid in Leftovers.kill(mentioning: directory + "/kernels/") {
                FileHandle.standardError.write(Data("matrix: killed process \(pid) left by an earlier matrix in \(directory)\n".utf8))
            }
        }
    }

    func release() { close(fd) }
}
