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
        subcommands: [List.self, Fetch.self, Build.self, Latest.self])

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
        static let configuration = CommandConfiguration(commandName: "list", abstract: "Every pinned kernel, its aliases, packages, and whether the cache has it.")
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
            for src in lock.sources ?? [] {
                let images = ((try? FileManager.default.contentsOfDirectory(atPath: cache.root + "/builds/" + src.package.version + "/images")) ?? [])
                    .filter { !$0.hasSuffix(".new") }
                let aliases = [src.name + "-control", src.name + "-mutant", src.name + "-mutant-ID"].joined(separator: ", ")
                print("  source \(src.name.padding(toLength: 19, withPad: " ", startingAt: 0)) \(src.package.name) \(src.package.version) (\(src.suite)); builds \(aliases); \(images.count) image(s) built")
            }
        }
    }

    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "fetch", abstract: "Download and unpack pinned kernels into the cache (those it lacks; checked against the lock's SHA-256).")
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

    struct Build: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "build",
            abstract: "Build kernels from source: the catalogue's pinned linux-source packages with mutants, or your own tree.",
            discussion: """
                ALIAS is SERIES-control (the pinned source of a series with Fixtures/kernels/xfrmlab.config on top of \
                virtme-ng's minimal config), SERIES-mutant (the same with every mutant of the series that can share \
                a guest: Fixtures/reports/*/mutant-SERIES.patch), SERIES-mutant-ID (one report's mutant alone), or \
                SERIES with --patch files of your own. --source DIR builds a tree of yours out of tree (O= in the \
                cache; your tree is never written to). Builds are cached by source, config and patches in the kernel \
                cache's builds/; another set of patches reuses the build tree, so only the files they touch compile. \
                The image printed is what `xfrmlab matrix --kernel` takes (the aliases work there too).
                """)
        @OptionGroup var common: Common
        @Argument(help: "What to build: 6.1-control, 6.1-mutant, 6.1-mutant-ID, or a series with --patch.")
        var aliases: [String] = []
        @Option(name: .customLong("source"), help: "Your kernel tree instead of a pinned source.")
        var sourceTree: String?
        @Option(name: .customLong("patch"), help: "A patch (-p1) to apply on top of the pinned source (repeatable, in order).")
        var patches: [String] = []
        @Option(help: "The config fragment (default: Fixtures/kernels/xfrmlab.config).")
        var config: String?
        @Option(help: "make -j (default: the number of CPUs).")
        var jobs: Int?

        func validate() throws {
            if sourceTree == nil && aliases.isEmpty { throw ValidationError("name what to build (6.1-control, 6.1-mutant …) or give --source DIR") }
            if sourceTree != nil && !patches.isEmpty { throw ValidationError("--patch applies to pinned sources only: XfrmLab never writes to your tree (commit the change there)") }
        }

        func run() throws {
            try requireRoot()
            let missing = ["make", "gcc", "flex", "bison", "bc", "patch", "vng"].filter { tool in
                (try? Namespaces.Process.execute(["sh", "-c", "command -v \"$0\"", tool], timeout: 10))?.succeeded != true
            }
            guard missing.isEmpty else {
                throw ValidationError("missing \(missing.joined(separator: ", ")): Scripts/install-build-deps.sh and Scripts/install-vm-deps.sh install what a build needs")
            }
            let (lock, cache, _) = try common.load()
            let root = MatrixCommand().repositoryRoot()
            var builder = KernelBuilder(cache: cache, log: { warn($0) })
            if let jobs { builder.jobs = jobs }
            let fragment = config ?? root + "/" + BuiltKernels.fragment
            var requests: [(String, KernelBuilder.Request)] = []
            if let sourceTree {
                requests.append((sourceTree, KernelBuilder.Request(tree: .directory(sourceTree), fragment: fragment)))
            }
            for alias in aliases {
                if var request = try BuiltKernels.request(for: alias, lock: lock, repositoryRoot: root) {
                    request.fragment = fragment
                    requests.append((alias, request))
                } else if let source = lock.source(for: alias) {
                    let extra = try patches.map { try KernelBuilder.Patch.load(path: URL(fileURLWithPath: $0).standardized.path) }
                    requests.append((alias, KernelBuilder.Request(tree: .pinned(source), fragment: fragment, patches: extra,
                                                                  localVersion: extra.isEmpty ? "-xfrmlab" : "-xfrmlab-patched")))
                } else {
                    let series = (lock.sources ?? []).map(\.name)
                    throw ValidationError("\(alias): not a source of the catalogue (\(series.flatMap { [$0, $0 + "-control", $0 + "-mutant", $0 + "-mutant-ID"] }.joined(separator: ", ")))")
                }
            }
            for (alias, request) in requests {
                let built = try builder.build(request)
                let how = built.seconds == 0 ? "cached" : String(format: "built in %.0f s, %d objects compiled", built.seconds, built.compiled)
                print("\(alias) → \(built.image) (\(built.release), \(how))")
                if !built.mutations.isEmpty { print("  without the fixes of: \(built.mutations.joined(separator: ", "))") }
            }
        }
    }

    struct Latest: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "latest",
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
            let report = try MatrixReport.load(directory: out + "/matrix")
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
