import Foundation
import Glibc
import Namespaces

/// Kernels built here from source: the catalogue's pinned Debian `linux-source-SERIES` (its Debian
/// patches already applied) or a tree a developer names, configured by virtme-ng's minimal config
/// plus our fragment (Fixtures/kernels/xfrmlab.config), with patches on top — the mutants, which
/// undo one fix each (Fixtures/reports/ID/mutant-SERIES.patch).
///
/// Cached in the kernel cache's `builds/`, never in the repository or the developer's tree:
///
///     builds/VERSION/source/              the unpacked tarball (VERSION: its package's, 6.1.192-3);
///                                         patches are applied in place
///     builds/VERSION/applied.json         which patches are applied now, with their text
///     builds/VERSION/objects-CONFIG/      the O= build tree of one config (Kbuild's own state)
///     builds/VERSION/images/KEY/          vmlinuz-RELEASE, config-RELEASE, build.json
///     builds/tree-HASH/                   the same for a developer's tree (objects and images only)
///
/// KEY is a hash of (source, config, patches), so a build asked for again is a lookup. Switching
/// the patches reverts only those that differ and applies the new ones: make then recompiles
/// only the files they touch (one object per mutant, and the link).
public struct KernelBuilder: Sendable {
    public var cache: KernelCache
    public var jobs: Int
    public var log: @Sendable (String) -> Void

    public init(cache: KernelCache = KernelCache(), jobs: Int = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN))), log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.cache = cache
        self.jobs = jobs
        self.log = log
    }

    /// Where the source comes from.
    public enum Tree: Sendable, Hashable {
        /// The catalogue's pinned `linux-source-SERIES` package.
        case pinned(KernelLock.Source)
        /// A developer's tree (git or not), built out of tree with O=; never written to.
        case directory(String)
    }

    /// A patch on top of the source: a mutant (its report's ID) or any file.
    public struct Patch: Codable, Sendable, Hashable {
        public var name: String
        /// The report whose fix it undoes, when it is a mutant.
        public var report: String?
        public var text: String

        public init(name: String, report: String?, text: String) {
            self.name = name
            self.report = report
            self.text = text
        }

        public static func load(path: String, report: String? = nil) throws -> Patch {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw KernelBuildError("\(path): cannot read the patch") }
            return Patch(name: path, report: report, text: text)
        }
    }

    public struct Request: Sendable {
        public var tree: Tree
        /// The config fragment's path (its text is part of the cache key).
        public var fragment: String
        public var patches: [Patch]
        /// Appended to the release (`6.1.192-xfrmlab-mutant`): which build it is, in `uname -r`.
        public var localVersion: String

        public init(tree: Tree, fragment: String, patches: [Patch] = [], localVersion: String = "-xfrmlab") {
            self.tree = tree
            self.fragment = fragment
            self.patches = patches
            self.localVersion = localVersion
        }
    }

    /// What a build left: the image the matrix boots, and what went into it.
    public struct Built: Codable, Sendable {
        public var image: String
        public var config: String
        public var release: String
        /// `linux-source-6.1 6.1.192-3`, or the tree's path.
        public var source: String
        public var patches: [String]
        /// The reports whose fix this kernel undoes.
        public var mutations: [String]
        /// How long make took (0 when the image came from the cache).
        public var seconds: Double
        /// Objects make compiled for this image (a measure of how incremental it was).
        public var compiled: Int

        public static func manifest(beside image: String) -> Built? {
            let path = URL(fileURLWithPath: image).deletingLastPathComponent().path + "/build.json"
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            return try? JSONDecoder().decode(Built.self, from: data)
        }
    }

    /// virtme-ng's version is part of the config key: its minimal config changes between releases.
    static let configRecipe = "vng --kconfig --config FRAGMENT; DEBUG_INFO off; olddefconfig (v1)"

    public func build(_ request: Request) throws -> Built {
        let fragmentText: String
        do { fragmentText = try String(contentsOfFile: request.fragment, encoding: .utf8) } catch {
            throw KernelBuildError("\(request.fragment): cannot read the config fragment")
        }
        let vng = (try? Process.execute(["vng", "--version"], timeout: 60))?.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) ?? "vng ?"
        let configKey = try Self.hash(Self.configRecipe + "\n" + vng + "\n" + fragmentText)

        let (name, sourceDescription): (String, String)
        switch request.tree {
        case .pinned(let s): (name, sourceDescription) = (s.package.version, "\(s.package.name) \(s.package.version)")
        case .directory(let d):
            let path = URL(fileURLWithPath: d).standardized.path
            guard FileManager.default.fileExists(atPath: path + "/Makefile"), FileManager.default.fileExists(atPath: path + "/Kconfig") else {
                throw KernelBuildError("--source \(path): not a kernel tree (no Makefile and Kconfig)")
            }
            guard request.patches.isEmpty else {
                throw KernelBuildError("--source \(path): patches go into your own tree (a commit, or `patch -p1`), XfrmLab never writes to it")
            }
            (name, sourceDescription) = ("tree-" + String(try Self.hash(path).prefix(12)), path)
        }
        let dir = cache.root + "/builds/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // One build per source at a time: two runs side by side wait here rather than patch one tree twice.
        let lockFD = open(dir + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw KernelBuildError("cannot open \(dir)/.lock: \(String(cString: strerror(errno)))") }
        defer { close(lockFD) }
        while flock(lockFD, LOCK_EX) != 0 && errno == EINTR {}

        let patchKey = try request.patches.map { try Self.hash($0.text) }.joined(separator: ",")
        let key: String
        if case .pinned = request.tree {
            key = String(try Self.hash([name, configKey, patchKey, request.localVersion].joined(separator: "\n")).prefix(16))
            if let found = cached(dir: dir, key: key) { return found }
        } else {
            key = "latest-" + String(configKey.prefix(8))  // a developer's tree changes under us: always make
        }

        let source: String
        switch request.tree {
        case .pinned(let s): source = try unpack(s, into: dir)
        case .directory(let d): source = URL(fileURLWithPath: d).standardized.path
        }
        if case .pinned = request.tree { try switchPatches(to: request.patches, source: source, state: dir + "/applied.json") }
        let objects = dir + "/objects-" + String(configKey.prefix(12))
        try configure(source: source, objects: objects, fragment: request.fragment, fragmentText: fragmentText, key: configKey)

        let logPath = dir + "/build-\(key).log"
        log("kernels: make -j\(jobs) bzImage in \(objects) (log: \(logPath))")
        let started = Date()
        let make = try Process.execute(["sh", "-c", "exec make -C \"$0\" O=\"$1\" -j\"$2\" LOCALVERSION=\"$3\" bzImage >\"$4\" 2>&1",
                                        source, objects, String(jobs), request.localVersion, logPath], timeout: 4 * 3600)
        let seconds = Date().timeIntervalSince(started)
        let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        guard make.succeeded else {
            let tail = output.split(separator: "\n").suffix(25).joined(separator: "\n")
            let patches = request.patches.isEmpty ? "" : " with \(request.patches.map(\.name).joined(separator: ", "))"
            throw KernelBuildError("make bzImage failed\(patches) (\(logPath)):\n\(tail)")
        }
        let compiled = output.split(separator: "\n").filter { $0.hasPrefix("  CC ") }.count
        guard let release = try? String(contentsOfFile: objects + "/include/config/kernel.release", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines), !release.isEmpty else {
            throw KernelBuildError("\(objects)/include/config/kernel.release: missing after a successful make")
        }
        let images = dir + "/images/" + key
        let staging = images + ".new"
        try? FileManager.default.removeItem(atPath: staging)
        try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: objects + "/arch/x86/boot/bzImage", toPath: staging + "/vmlinuz-" + release)
        try FileManager.default.copyItem(atPath: objects + "/.config", toPath: staging + "/config-" + release)
        let built = Built(image: images + "/vmlinuz-" + release, config: images + "/config-" + release, release: release,
                          source: sourceDescription, patches: request.patches.map(\.name),
                          mutations: request.patches.compactMap(\.report), seconds: seconds, compiled: compiled)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(built).write(to: URL(fileURLWithPath: staging + "/build.json"))
        try? FileManager.default.removeItem(atPath: images)
        try FileManager.default.moveItem(atPath: staging, toPath: images)
        log(String(format: "kernels: built %@ in %.0f s (%d objects compiled)%@", release, seconds, compiled,
                   built.mutations.isEmpty ? "" : ", undoing the fixes of " + built.mutations.joined(separator: ", ")))
        return built
    }

    func cached(dir: String, key: String) -> Built? {
        guard var built = Built.manifest(beside: dir + "/images/" + key + "/vmlinuz"),
              FileManager.default.fileExists(atPath: built.image) else { return nil }
        built.seconds = 0
        built.compiled = 0
        return built
    }

    /// The pinned source package, downloaded (checked against the lock) and unpacked once.
    func unpack(_ s: KernelLock.Source, into dir: String) throws -> String {
        let source = dir + "/source"
        if FileManager.default.fileExists(atPath: source + "/.xfrmlab-unpacked") { return source }
        let started = Date()
        log("kernels: fetching \(s.package.name) \(s.package.version) (\(s.package.size / 1_000_000) MB, \(s.suite))")
        let apt = try PrivateApt(directory: cache.root + "/.apt", suites: [s.suite])
        let downloads = dir + "/.download"
        try? FileManager.default.removeItem(atPath: downloads)
        try FileManager.default.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: downloads) }
        let deb = try apt.download(s.package, into: downloads)
        let sum = try Process.execute(["sha256sum", deb], timeout: 300)
        let actual = String(sum.standardOutput.prefix { !$0.isWhitespace })
        guard sum.succeeded, actual == s.package.sha256 else {
            throw KernelLockError("\(s.package.name) \(s.package.version): SHA-256 \(actual.isEmpty ? "unreadable" : actual), the lock pins \(s.package.sha256)")
        }
        // The .deb holds usr/src/linux-source-SERIES.tar.xz; unpack the tarball beside, rename it.
        let r = try Process.execute(["sh", "-c", "set -e; dpkg-deb --fsys-tarfile \"$0\" | tar -x -C \"$1\" --wildcards './usr/src/*.tar.xz'; "
                                        + "rm -rf \"$2.new\"; mkdir \"$2.new\"; tar -xJf \"$1\"/usr/src/*.tar.xz -C \"$2.new\" --strip-components=1",
                                     deb, downloads, source], timeout: 1800)
        guard r.succeeded else { throw KernelBuildError("unpacking \(deb): \(r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))") }
        try? FileManager.default.removeItem(atPath: source)
        try? FileManager.default.removeItem(atPath: dir + "/applied.json")
        try FileManager.default.moveItem(atPath: source + ".new", toPath: source)
        _ = FileManager.default.createFile(atPath: source + "/.xfrmlab-unpacked", contents: Data("\(s.package.name) \(s.package.version)\n".utf8))
        log(String(format: "kernels: %@ unpacked into %@ in %.0f s", s.package.name, source, Date().timeIntervalSince(started)))
        return source
    }

    /// Makes the tree carry exactly `patches`, in order: the applied ones that differ are reverted
    /// (with the text they were applied with), the missing ones applied. The state is written after
    /// every step, so a killed build leaves a tree whose state file is true.
    func switchPatches(to patches: [Patch], source: String, state: String) throws {
        var applied = (FileManager.default.contents(atPath: state)).flatMap { try? JSONDecoder().decode([Patch].self, from: $0) } ?? []
        let common = zip(applied, patches).prefix { $0.text == $1.text }.count
        func save() throws { try JSONEncoder().encode(applied).write(to: URL(fileURLWithPath: state)) }
        while applied.count > common {
            let p = applied.removeLast()
            try runPatch(p, reverse: true, source: source)
            try save()
            log("kernels: reverted \(p.name)")
        }
        for p in patches.dropFirst(common) {
            let dry = try Process.execute(["patch", "-p1", "--dry-run", "--forward", "-s", "-d", source], input: p.text, timeout: 120)
            guard dry.succeeded else {
                throw KernelBuildError("\(p.name): does not apply to \(source) on top of \(applied.count) other patches:\n\(dry.standardOutput)\(dry.standardError)")
            }
            try runPatch(p, reverse: false, source: source)
            applied.append(p)
            try save()
            log("kernels: applied \(p.name)")
        }
    }

    func runPatch(_ p: Patch, reverse: Bool, source: String) throws {
        let r = try Process.execute(["patch", "-p1", "--no-backup-if-mismatch", "-s", "-d", source] + (reverse ? ["-R"] : ["--forward"]), input: p.text, timeout: 120)
        guard r.succeeded else {
            throw KernelBuildError("patch \(reverse ? "-R " : "")\(p.name) in \(source): \(r.standardOutput)\(r.standardError) — the tree is now in doubt: delete \(URL(fileURLWithPath: source).deletingLastPathComponent().path) to unpack it afresh")
        }
    }

    /// The O= tree's .config: virtme-ng's minimal config (x86_64_defconfig and its lists) with the
    /// fragment on top, debug info off (vng forces it on; it only costs build time here), then
    /// checked: Kconfig silently drops a symbol whose dependencies fail, and a kernel without what
    /// the suite needs would make every test skip for the wrong reason.
    func configure(source: String, objects: String, fragment: String, fragmentText: String, key: String) throws {
        let stamp = objects + "/.xfrmlab-config"
        if (try? String(contentsOfFile: stamp, encoding: .utf8)) == key, FileManager.default.fileExists(atPath: objects + "/.config") { return }
        try FileManager.default.createDirectory(atPath: objects, withIntermediateDirectories: true)
        // vng reads ~/.config/virtme-ng/kernel.config too: a home of its own keeps the user's out.
        let home = objects + "/.home"
        try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
        let fragmentPath = URL(fileURLWithPath: fragment).standardized.path
        let steps = [
            "cd \"$0\" && HOME=\"$2\" vng --kconfig --config \"$3\" -- O=\"$1\"",
            "cd \"$0\" && scripts/config --file \"$1/.config\" -d DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT -d DEBUG_INFO -d DEBUG_INFO_DWARF4 -d DEBUG_INFO_DWARF5 -e DEBUG_INFO_NONE",
            "make -s -C \"$0\" O=\"$1\" olddefconfig",
        ]
        for step in steps {
            let r = try Process.execute(["sh", "-c", step, source, objects, home, fragmentPath], timeout: 600)
            guard r.succeeded else { throw KernelBuildError("configuring \(objects): \(step): \(r.standardError.split(separator: "\n").suffix(15).joined(separator: "\n"))") }
        }
        let config = Set(((try? String(contentsOfFile: objects + "/.config", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init))
        var dropped: [String] = []
        for (n, line) in fragmentText.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.trimmingCharacters(in: .whitespaces)
            guard l.hasPrefix("CONFIG_") || (l.hasPrefix("# CONFIG_") && l.hasSuffix(" is not set")) else { continue }
            if !config.contains(l) { dropped.append("\(fragment):\(n + 1): \(l)") }
        }
        guard dropped.isEmpty else {
            throw KernelBuildError("Kconfig did not keep these lines of the fragment (a dependency is missing, or something selects it):\n  " + dropped.joined(separator: "\n  "))
        }
        try Data(key.utf8).write(to: URL(fileURLWithPath: stamp))
    }

    static func hash(_ text: String) throws -> String {
        let r = try Process.execute(["sha256sum"], input: text, timeout: 60)
        guard r.succeeded else { throw KernelBuildError("sha256sum: \(r.standardError)") }
        return String(r.standardOutput.prefix { !$0.isWhitespace })
    }
}

/// The mutants kept beside the bug reports: `Fixtures/reports/ID/mutant-SERIES.patch`.
public enum Mutants {
    public struct Mutant: Sendable {
        public var report: String
        public var path: String
        /// Its first comment lines: what it undoes.
        public var summary: String
    }

    public static func all(series: String, reportsDirectory: String) -> [Mutant] {
        let ids = ((try? FileManager.default.contentsOfDirectory(atPath: reportsDirectory)) ?? []).sorted()
        return ids.compactMap { id in
            let path = "\(reportsDirectory)/\(id)/mutant-\(series).patch"
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            let summary = text.split(separator: "\n").prefix { $0.hasPrefix("#") }.map { $0.dropFirst().trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
            return Mutant(report: id, path: path, summary: summary)
        }
    }
}

public struct KernelBuildError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The built kernels the catalogue's sources give, by alias.
public enum BuiltKernels {
    public static let fragment = "Fixtures/kernels/xfrmlab.config"
    public static let reports = "Fixtures/reports"

    /// A mutant whose patch says `# XfrmLab: alone …` takes the guest down (a panic is its symptom):
    /// it is built by itself (`SERIES-mutant-ID`), never into the shared mutant kernel.
    public static func isAlone(_ m: Mutants.Mutant) -> Bool {
        ((try? String(contentsOfFile: m.path, encoding: .utf8)) ?? "").split(separator: "\n").contains { $0.hasPrefix("# XfrmLab: alone") }
    }

    /// `6.1-control`, `6.1-mutant`, `6.1-mutant-ID` → what to build; nil for any other argument.
    public static func request(for alias: String, lock: KernelLock, repositoryRoot root: String) throws -> KernelBuilder.Request? {
        for source in lock.sources ?? [] {
            let prefix = source.name + "-"
            guard alias.hasPrefix(prefix) else { continue }
            let rest = String(alias.dropFirst(prefix.count))
            let mutants = Mutants.all(series: source.name, reportsDirectory: root + "/" + reports)
            let chosen: [Mutants.Mutant]
            let local: String
            if rest == "control" {
                (chosen, local) = ([], "-xfrmlab")
            } else if rest == "mutant" {
                (chosen, local) = (mutants.filter { !isAlone($0) }, "-xfrmlab-mutant")
            } else if rest.hasPrefix("mutant-") {
                let id = String(rest.dropFirst("mutant-".count))
                guard let m = mutants.first(where: { $0.report == id }) else {
                    throw KernelNotFound(argument: alias, reason: "no \(root)/\(reports)/\(id)/mutant-\(source.name).patch (mutants of \(source.name): \(mutants.map(\.report).joined(separator: ", ")))")
                }
                (chosen, local) = ([m], "-xfrmlab-mutant-" + String(id.prefix(40)))
            } else { continue }
            let patches = try chosen.map { try KernelBuilder.Patch.load(path: $0.path, report: $0.report) }
            return KernelBuilder.Request(tree: .pinned(source), fragment: root + "/" + fragment, patches: patches, localVersion: local)
        }
        return nil
    }
}
