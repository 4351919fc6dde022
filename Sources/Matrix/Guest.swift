import Foundation
import Glibc
import Namespaces
import Kmsg

/// What the guest side of a matrix run leaves in its results directory (the shared `--rwdir`):
/// never the console, which is unreliable under TCG. The same driver runs on the host for
/// `--kernel host`.
///
///     guest.json            this record (written at start, rewritten at the end)
///     events.jsonl          the test binary's event stream; events-retry.jsonl for the retry
///     xunit.xml             the binary's own JUnit output; xunit-retry.xml
///     tests.log             the binary's stdout and stderr; tests-retry.log
///     probe.json            `xfrmlab probe --json`, when that command exists
///     kmsg.txt              the kernel log, raw /dev/kmsg records
public struct GuestRecord: Codable, Sendable {
    public var release: String
    /// /proc/version.
    public var version: String
    /// Seconds since the kernel booted when the driver started (CLOCK_MONOTONIC).
    public var uptimeAtStart: Double
    /// Kernel log time = test clock − this (from a record the driver wrote and timed).
    public var kernelLogOffset: Double?
    /// Where the config came from (/boot/config-RELEASE, /proc/config.gz), and selected options.
    public var configSource: String?
    public var config: [String: String]
    public var phases: [Phase]
    /// Tests the retry ran again.
    public var retried: [String]
    public var probe: Probe?
    /// The counters /proc/net/xfrm_stat has: each kernel version adds some (SA direction in 6.10, IP-TFS in 6.14).
    public var xfrmStatCounters: [String]?
    public var finished: Bool

    public struct Phase: Codable, Sendable {
        /// `tests`, `tests-alone-N` (a test that must run by itself), `tests-retry`.
        public var name: String
        /// Its event stream, in the results directory.
        public var events: String
        public var command: [String]
        public var status: Int32?
        public var timedOut: Bool
        public var started: Double
        public var ended: Double?
    }

    public struct Probe: Codable, Sendable {
        /// False when this xfrmlab has no `probe` command.
        public var available: Bool
        public var status: Int32
        public var error: String?
    }

    public static let fileName = "guest.json"

    public static func load(from directory: String) -> GuestRecord? {
        guard let data = FileManager.default.contents(atPath: directory + "/" + fileName) else { return nil }
        return try? JSONDecoder().decode(GuestRecord.self, from: data)
    }
}

/// The config options the report shows for each kernel.
public let highlightedConfigOptions = [
    "CONFIG_XFRM", "CONFIG_XFRM_USER", "CONFIG_XFRM_INTERFACE", "CONFIG_NET_IPVTI", "CONFIG_IPV6_VTI",
    "CONFIG_INET_ESP", "CONFIG_INET6_ESP", "CONFIG_INET_ESP_OFFLOAD", "CONFIG_INET_ESPINTCP", "CONFIG_INET6_ESPINTCP",
    "CONFIG_XFRM_IPTFS", "CONFIG_INET_IPCOMP", "CONFIG_NET_KEY", "CONFIG_XFRM_OFFLOAD", "CONFIG_XFRM_STATISTICS",
    "CONFIG_XFRM_MIGRATE", "CONFIG_CRYPTO_GCM", "CONFIG_CRYPTO_CHACHA20POLY1305", "CONFIG_NETFILTER_XT_MATCH_POLICY",
    "CONFIG_NETFILTER_NETLINK_LOG", "CONFIG_NETFILTER_NETLINK_GLUE_CT", "CONFIG_NF_TABLES", "CONFIG_VETH", "CONFIG_DUMMY", "CONFIG_WIREGUARD",
    "CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS", "CONFIG_VIRTIO_FS", "CONFIG_PREEMPT_RT", "CONFIG_DEBUG_NET",
    "CONFIG_NET_DEV_REFCNT_TRACKER", "CONFIG_KASAN", "CONFIG_PROVE_LOCKING", "CONFIG_MODULES",
]

public enum KernelConfig {
    /// The kernel's build config: `path` when given (the image's own, found by `locate`), else
    /// /boot/config-RELEASE, else /proc/config.gz — but only when RELEASE is the running kernel:
    /// another kernel's config is never the running one's.
    public static func read(release: String, path: String? = nil) -> (source: String, options: [String: String])? {
        for file in [path, "/boot/config-\(release)"].compactMap({ $0 }) {
            if let text = try? String(contentsOfFile: file, encoding: .utf8) { return (file, parse(text)) }
        }
        if release == Kernel.runningRelease, FileManager.default.fileExists(atPath: "/proc/config.gz"),
           let r = try? Process.execute(["gzip", "-dc", "/proc/config.gz"], timeout: 20), r.succeeded {
            return ("/proc/config.gz", parse(r.standardOutput))
        }
        return nil
    }

    /// Where an image's config is: beside it (`config-RELEASE`, as /boot has it), in its modules
    /// directory (`config`, as the split linux-modules packages have it), or in the /boot of the
    /// root its modules directory is under.
    public static func locate(image: String, modules: String?, release: String) -> String? {
        let beside = URL(fileURLWithPath: image).deletingLastPathComponent().path + "/config-" + release
        var candidates = [beside]
        if let modules {
            let url = URL(fileURLWithPath: modules)
            candidates.append(url.path + "/config")
            var root = url.deletingLastPathComponent().deletingLastPathComponent()  // …/lib
            root = root.deletingLastPathComponent()
            candidates.append(root.path + "/boot/config-" + release)
            if root.lastPathComponent == "usr" { candidates.append(root.deletingLastPathComponent().path + "/boot/config-" + release) }
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// `CONFIG_X=y` → "y"; `# CONFIG_X is not set` → "n".
    public static func parse(_ text: String) -> [String: String] {
        var options: [String: String] = [:]
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# CONFIG_"), line.hasSuffix(" is not set") {
                options[String(line.dropFirst(2).dropLast(" is not set".count))] = "n"
            } else if line.hasPrefix("CONFIG_"), let eq = line.firstIndex(of: "=") {
                options[String(line[..<eq])] = String(line[line.index(after: eq)...]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        return options
    }

    public static func highlights(_ options: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for key in highlightedConfigOptions { out[key] = options[key] ?? "n" }
        return out
    }
}

/// Runs the suite where it is started (inside the VM, or on the host) and writes what it saw.
public struct GuestDriver {
    /// Tests the guest skips unless asked (`XFRMLAB_CRASH_DRILL=1`): the one that panics the kernel.
    public static let skippedByDefault = "CrashDrill"
    /// The test that runs a report folder from outside the repository (`xfrmlab reproduce PATH
    /// --kernel K`): skipped unless the environment names the folder.
    public static let reportFolderTest = "ReportFolderTests"
    public static let reportFolderKey = "XFRMLAB_REPORT_FOLDER"

    public var output: String
    public var testBinary: String
    public var xfrmlab: String
    public var filters: [String]
    /// Tests (regular expressions) that run after the rest, each by itself (the 1,000-host test
    /// holds the RTNL lock for seconds: beside others it makes them time out).
    public var alone: [String]
    /// Tests run by themselves after the rest, in a filtered run too.
    public var last: [String] = []
    /// Tests not run at all here (regular expressions, the test binary's --skip).
    public var skips: [String] = []
    public var serial: Bool
    public var retry: Bool
    /// On the host: the kernel log before the driver started is not ours.
    public var onHost: Bool = false
    /// Seconds for the test runs, counted from the driver's start (the probe and the kernel log
    /// come after); the host's own timeout is a backstop.
    public var timeout: Double

    public init(output: String, testBinary: String, xfrmlab: String, filters: [String], alone: [String] = [],
                serial: Bool, retry: Bool, timeout: Double) {
        self.output = output
        self.testBinary = testBinary
        self.xfrmlab = xfrmlab
        self.filters = filters
        self.alone = alone
        self.serial = serial
        self.retry = retry
        self.timeout = timeout
    }

    public func run() throws {
        let start = KernelLog.monotonic()
        let release = Kernel.runningRelease
        let config = KernelConfig.read(release: release)
        var record = GuestRecord(
            release: release,
            version: (try? String(contentsOfFile: "/proc/version", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "",
            uptimeAtStart: start, kernelLogOffset: nil, configSource: config?.source,
            config: config.map { KernelConfig.highlights($0.options) } ?? [:],
            phases: [], retried: [], probe: nil,
            xfrmStatCounters: (try? String(contentsOfFile: "/proc/net/xfrm_stat", encoding: .utf8))?
                .split(separator: "\n").compactMap { $0.split(separator: " ", omittingEmptySubsequences: true).first.map(String.init) },
            finished: false)
        // The kernel log, recorded from now on (and from boot in a fresh guest), tied to the
        // test binary's clock by a line written and timed here.
        let recorder = try? KernelLogRecorder(output: output + "/kmsg.txt", fromStart: !onHost)
        if let marked = recorder?.mark("xfrmlab-matrix: clock \(getpid()) \(UInt64(start * 1e6))") {
            record.kernelLogOffset = (marked.before + marked.after) / 2 - marked.logged
        }
        try save(record)

        let deadline = start + timeout
        // Tests run alone only in a whole-suite run: --filter options are alternatives, so a
        // filtered run cannot be split into "the rest" and "that one".
        // Tests named by --last run by themselves after the rest even then (the caller vouches
        // that the filters select them).
        let alone = (filters.isEmpty ? self.alone : []) + last
        var main: [String] = serial ? ["--no-parallel"] : []
        // The crash drill (a test that panics the kernel) runs only when asked for.
        if ProcessInfo.processInfo.environment["XFRMLAB_CRASH_DRILL"] != "1" { main += ["--skip", GuestDriver.skippedByDefault] }
        if ProcessInfo.processInfo.environment[GuestDriver.reportFolderKey] == nil { main += ["--skip", GuestDriver.reportFolderTest] }
        for f in filters { main += ["--filter", f] }
        for s in skips { main += ["--skip", s] }
        for a in alone { main += ["--skip", a] }
        record.phases.append(runTests(name: "tests", events: "events.jsonl", arguments: main, until: deadline))
        try save(record)
        for (i, a) in alone.enumerated() where KernelLog.monotonic() < deadline {
            record.phases.append(runTests(name: "tests-alone-\(i + 1)", events: "events-alone-\(i + 1).jsonl",
                                          arguments: ["--filter", a] + skips.flatMap { ["--skip", $0] }, until: deadline))
            try save(record)
        }
        if retry {
            let first = SuiteRun.merged(record.phases.map { SuiteRun.parse((try? String(contentsOfFile: output + "/" + $0.events, encoding: .utf8)) ?? "") })
            // Shortest first, as many as should fit before the deadline (at their first run's pace,
            // with a margin); more than 20 failures is no flake, and not worth the time.
            var failed = first.tests.filter { $0.outcome == .failed || $0.outcome == .didNotFinish }
            failed.sort { ($0.seconds ?? .infinity) < ($1.seconds ?? .infinity) }
            var budget = deadline - KernelLog.monotonic() - 30
            let again = failed.count > 20 ? [] : failed.prefix { t in
                budget -= 1.5 * (t.seconds ?? 60) + 5
                return budget > 0
            }.map(\.id)
            if !again.isEmpty {
                record.retried = again
                // One at a time: a failure that came from crowding shows up as flaky.
                record.phases.append(runTests(name: "tests-retry", events: "events-retry.jsonl",
                                              arguments: ["--no-parallel"] + again.flatMap { ["--filter", SuiteRun.filter(for: $0)] }, until: deadline))
                try save(record)
            }
        }
        record.probe = probe(timeout: min(120, max(10, deadline + 25 - KernelLog.monotonic())))
        // A moment for the teardown's last words (netns cleanup runs in a workqueue).
        usleep(500_000)
        recorder?.stop()
        if recorder == nil { record.kernelLogOffset = nil }
        record.finished = true
        try save(record)
    }

    func runTests(name: String, events: String, arguments: [String], until deadline: Double) -> GuestRecord.Phase {
        let xunit = events.replacingOccurrences(of: "events", with: "xunit").replacingOccurrences(of: ".jsonl", with: ".xml")
        let command = [testBinary, "--testing-library", "swift-testing",
                       "--event-stream-output-path", "\(output)/\(events)", "--event-stream-version", "0",
                       "--xunit-output", "\(output)/\(xunit)"] + arguments
        var phase = GuestRecord.Phase(name: name, events: events, command: command, status: nil, timedOut: false,
                                      started: KernelLog.monotonic(), ended: nil)
        let logPath = "\(output)/\(name).log"
        let logFD = open(logPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        defer { if logFD >= 0 { close(logFD) } }
        do {
            // Failed path expectations draw their trace beside the results, for report.html.
            var environment = ProcessInfo.processInfo.environment
            environment["XFRMLAB_TRACE_PICTURES"] = "\(output)/pictures"
            // Bug-report tests write their REPRODUCES / FIXED verdicts here, for the report's cells.
            environment[VerdictRecord.environmentKey] = "\(output)/verdicts.jsonl"
            let pid = try Process.spawn(command, namespaceFD: -1, stdin: -1, stdout: logFD, stderr: logFD, environment: environment)
            let (status, timedOut) = wait(pid, until: deadline)
            phase.status = status
            phase.timedOut = timedOut
        } catch {
            if logFD >= 0 { _ = write(logFD, "\(error)\n", "\(error)\n".utf8.count) }
            phase.status = 127
        }
        phase.ended = KernelLog.monotonic()
        return phase
    }

    /// `xfrmlab probe --json`: the capability table, if this xfrmlab has that command.
    func probe(timeout: Double) -> GuestRecord.Probe {
        guard let r = try? Process.execute([xfrmlab, "probe", "--json"], timeout: timeout) else {
            return GuestRecord.Probe(available: false, status: 127, error: "\(xfrmlab) could not be started")
        }
        let unknownCommand = r.status == 64 && (r.standardError + r.standardOutput).contains("probe")
        if r.succeeded || !r.standardOutput.isEmpty {
            try? Data(r.standardOutput.utf8).write(to: URL(fileURLWithPath: output + "/probe.json"))
        }
        return GuestRecord.Probe(available: !unknownCommand, status: r.status,
                                 error: r.succeeded ? nil : r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    func save(_ record: GuestRecord) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(record).write(to: URL(fileURLWithPath: output + "/" + GuestRecord.fileName), options: .atomic)
    }

}

/// Waits for a child until a CLOCK_MONOTONIC deadline; kills it (SIGTERM, then SIGKILL) after.
func wait(_ pid: pid_t, until deadline: Double) -> (status: Int32, timedOut: Bool) {
    var status: Int32 = 0
    while true {
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid { return (exitCode(status), false) }
        if r < 0 && errno != EINTR { return (-1, false) }
        if KernelLog.monotonic() >= deadline {
            kill(pid, SIGTERM)
            let grace = KernelLog.monotonic() + 5
            while KernelLog.monotonic() < grace {
                if waitpid(pid, &status, WNOHANG) == pid { return (exitCode(status), true) }
                usleep(50_000)
            }
            kill(pid, SIGKILL)
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            return (exitCode(status), true)
        }
        usleep(50_000)
    }
}

func exitCode(_ status: Int32) -> Int32 { (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
