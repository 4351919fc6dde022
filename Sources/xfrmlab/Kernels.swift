import ArgumentParser
import Foundation
import Glibc
import Matrix
import Namespaces

/// The kernel catalogue: what the lock pins, fetching it into the cache, and what Debian serves beyond it.
struct KernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "The kernel catalogue (Fixtures/kernels/kernels.lock): list, fetch into the cache, compare with Debian's newest.",
        subcommands: [List.self, Fetch.self, Latest.self])

    struct Common: ParsableArguments {
        @Option(help: "The catalogue's lock (default: Fixtures/kernels/kernels.lock).")
        var lock: String?

        @Option(help: "The kernel cache (default: $XFRMLAB_KERNEL_CACHE or /var/lib/xfrmlab/kernels).")
        var cache: String?

        func load() throws -> (KernelLock, KernelCache, String) {
            let root = MatrixCommand().repositoryRoot()
            let path = lock ?? root + "/" + KernelLock.defaultPath
            return (try KernelLock.load(path: path), KernelCache(root: cache ?? KernelCache.defaultRoot), path)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every pinned kernel, its aliases, packages, and whether the cache has it.")
        @OptionGroup var common: Common

        func run() throws {
            let (lock, cache, path) = try common.load()
            print("\(path): \(lock.kernels.count) kernels; cache \(cache.root)")
            for e in lock.kernels {
                let aliases = lock.series.filter { $0.value == e.name }.map(\.key).sorted()
                let flavourAliases = e.flavour == .generic ? [] : lock.series.filter { a in lock.kernels.contains { $0.name == a.value && $0.version == e.version } }.map { $0.key + "-" + e.flavour.rawValue }
                let names = ([e.name] + aliases + flavourAliases).joined(separator: ", ")
                print("  \(names.padding(toLength: 26, withPad: " ", startingAt: 0)) \(e.release.padding(toLength: 28, withPad: " ", startingAt: 0)) \(e.suite.padding(toLength: 18, withPad: " ", startingAt: 0)) \(cache.cached(e) != nil ? "cached" : "-")")
                for p in e.packages { print("      \(p.name) \(p.version)") }
            }
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Download and unpack pinned kernels into the cache (those it lacks; checked against the lock's SHA-256).")
        @OptionGroup var common: Common
        @Argument(help: "Aliases (5.10, 6.1-cloud, 5.10.218 …); `host` and paths are skipped. Default: every generic series.")
        var kernels: [String] = []

        func run() throws {
            try requireRoot()
            let (lock, cache, _) = try common.load()
            let names = kernels.isEmpty ? lock.series.keys.sorted() : kernels
            for name in names where name != "host" && !name.contains("/") {
                guard let entry = lock.entry(for: name) else {
                    throw ValidationError("\(name) is not in the catalogue (aliases: \(lock.aliases.joined(separator: ", ")))")
                }
                let started = Date()
                let unpacked = try cache.fetch(entry) { warn($0) }
                print(String(format: "%@ → %@ (%@)%@", name, unpacked.image, entry.release,
                             Date().timeIntervalSince(started) > 1 ? String(format: ", %.0f s", Date().timeIntervalSince(started)) : ", cached"))
            }
        }
    }

    struct Latest: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Find the newest Debian build of each pinned series, and with --run, what changes on it: the drift report.",
            discussion: """
                Without --run: the pinned kernel and the newest one Debian serves, per series. With --run: both \
                fetched, the matrix run on both (the tests of --filter), and what changed printed — a test that \
                fails or passes now, a bug report whose verdict moved, a guest that died (with its oops), a kernel \
                warning, a capability or config option — for a maintainer to read before bumping the lock.
                """)
        @OptionGroup var common: Common
        @Option(help: "Series to look at (repeatable; default: every generic series of the lock).")
        var series: [String] = []
        @Flag(name: .customLong("run"), help: "Fetch the newest kernels and run the matrix on them beside the pinned ones.")
        var runMatrix = false
        @Option(help: "Tests to run with --run (the matrix's --filter; default: the bug reports and scenarios).")
        var filter: [String] = ["BugReport|Scenario|MarkInheritance|OverlappingSubnets"]
        @Option(help: "Where the matrix writes (default: .build/matrix/drift-DATE-TIME).")
        var output: String?

        func run() throws {
            try requireRoot()
            let (lock, cache, _) = try common.load()
            let apt = try PrivateApt(directory: cache.root + "/.apt", suites: lock.kernels.map(\.suite))
            warn("kernels: updating the private package lists in \(apt.directory)")
            try apt.update()
            let wanted = series.isEmpty ? lock.series.keys.sorted { (KernelVersion(parsing: $0) ?? KernelVersion([0])) < (KernelVersion(parsing: $1) ?? KernelVersion([0])) } : series
            var drifted: [(alias: String, pinned: KernelLock.Entry, latest: KernelLock.Entry)] = []
            for alias in wanted {
                guard let pinned = lock.entry(for: alias) else { throw ValidationError("\(alias) is not a series of the catalogue") }
                let latest = try DebianKernels.newest(like: pinned, apt: apt)
                if latest.packages == pinned.packages {
                    print("\(alias): pinned \(pinned.name) (\(pinned.packages[0].name) \(pinned.packages[0].version)) is Debian's newest")
                } else {
                    print("\(alias): pinned \(pinned.name) (\(pinned.packages[0].name) \(pinned.packages[0].version)); Debian's newest: \(latest.version) (\(latest.packages[0].name) \(latest.packages[0].version), \(latest.suite))")
                    drifted.append((alias, pinned, latest))
                }
            }
            guard runMatrix, !drifted.isEmpty else { return }

            // The newest kernels as entries of a lock of the run's own (the repository's stays as it is).
            let out = URL(fileURLWithPath: output ?? MatrixCommand().repositoryRoot() + "/.build/matrix/drift-" + Self.stamp()).standardized.path
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            var driftLock = lock
            for d in drifted { var e = d.latest; e.name = d.alias + "-latest"; driftLock.kernels.append(e) }
            let lockPath = out + "/drift.lock"
            try Data(try driftLock.yaml().utf8).write(to: URL(fileURLWithPath: lockPath))
            var arguments = [selfPath(), "matrix", "--lock", lockPath, "--output", out + "/matrix"]
            for d in drifted { arguments += ["--kernel", d.alias, "--kernel", d.alias + "-latest"] }
            for f in filter { arguments += ["--filter", f] }
            warn("kernels: \(arguments.joined(separator: " "))")
            let status = try runCommand(arguments)
            let decoder = JSONDecoder()
            decoder.dateDecodingStrategy = .iso8601
            let report = try decoder.decode(MatrixReport.self, from: Data(contentsOf: URL(fileURLWithPath: out + "/matrix/report.json")))
            let text = DriftReport(report: report, pairs: drifted.map { ($0.alias, $0.alias + "-latest") }).text()
            try Data(text.utf8).write(to: URL(fileURLWithPath: out + "/drift.txt"))
            print(text, terminator: "")
            print("drift report: \(out)/drift.txt (the matrix's own: \(out)/matrix/report.txt; exit \(status))")
        }

        static func stamp() -> String {
            let f = DateFormatter()
            f.dateFormat = "yyyyMMdd-HHmmss"
            f.locale = Locale(identifier: "en_US_POSIX")
            return f.string(from: Date())
        }
    }
}

/// Runs a command with this process's standard output and error; its exit status.
func runCommand(_ arguments: [String]) throws -> Int32 {
        let pid = try Namespaces.Process.spawn(arguments, namespaceFD: -1, stdin: -1, stdout: STDOUT_FILENO, stderr: STDERR_FILENO)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
}
