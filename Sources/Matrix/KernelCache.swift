import Foundation
import Glibc
import Namespaces

/// Where the catalogue's kernels are unpacked, one directory per lock entry, reused across runs:
/// /var/lib/xfrmlab/kernels (or $XFRMLAB_KERNEL_CACHE). Never /boot, never the machine's apt
/// state: packages come through a private apt configuration under `.apt/` here, whose sources are
/// the machine's own Debian mirrors. Not under /var/cache: virtme-ng mounts a tmpfs there in the
/// guest, which would hide the modules the guest loads from here.
///
///     .apt/sources.list, .apt/lists/    the private apt state (`apt-get update` only when needed)
///     .downloads/                       .deb files while they are checked and unpacked
///     NAME/                             an unpacked entry: boot/vmlinuz-RELEASE, (usr/)lib/modules/RELEASE
///     NAME/.xfrmlab-entry.json          the lock entry it was unpacked from (a changed pin refetches)
public struct KernelCache: Sendable {
    public var root: String

    public init(root: String = KernelCache.defaultRoot) { self.root = root }

    public static var defaultRoot: String {
        ProcessInfo.processInfo.environment["XFRMLAB_KERNEL_CACHE"] ?? "/var/lib/xfrmlab/kernels"
    }

    /// An unpacked kernel: what the matrix boots.
    public struct Unpacked: Sendable {
        public var image: String
        public var modules: String?
        public var config: String?
    }

    /// The entry unpacked in the cache, or nil when it is not (or was unpacked from another pin).
    public func cached(_ entry: KernelLock.Entry) -> Unpacked? {
        let dir = root + "/" + entry.name
        guard let data = FileManager.default.contents(atPath: dir + "/.xfrmlab-entry.json"),
              let stored = try? JSONDecoder().decode(KernelLock.Entry.self, from: data), stored == entry else { return nil }
        return locate(entry, in: dir)
    }

    /// The entry, downloaded and unpacked if the cache does not have it yet. Two runs side by
    /// side wait for each other here rather than unpack the same kernel twice.
    public func fetch(_ entry: KernelLock.Entry, log: (String) -> Void = { _ in }) throws -> Unpacked {
        if let found = cached(entry) { return found }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let lockFD = open(root + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lockFD >= 0 else { throw KernelLockError("cannot open \(root)/.lock: \(String(cString: strerror(errno)))") }
        defer { close(lockFD) }
        while flock(lockFD, LOCK_EX) != 0 && errno == EINTR {}
        if let found = cached(entry) { return found }

        let apt = try PrivateApt(directory: root + "/.apt", suites: [entry.suite])
        let downloads = root + "/.downloads/" + entry.name
        try? FileManager.default.removeItem(atPath: downloads)
        try FileManager.default.createDirectory(atPath: downloads, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: downloads) }
        let started = Date()
        let total = entry.packages.reduce(0) { $0 + $1.size }
        log("kernels: fetching \(entry.name) (\(entry.packages.map { "\($0.name) \($0.version)" }.joined(separator: ", ")), \(total / 1_000_000) MB, \(entry.suite))")
        var debs: [String] = []
        for p in entry.packages {
            let file = try apt.download(p, into: downloads)
            let sum = try Process.execute(["sha256sum", file], timeout: 120)
            let actual = String(sum.standardOutput.prefix { !$0.isWhitespace })
            guard sum.succeeded, actual == p.sha256 else {
                throw KernelLockError("\(p.name) \(p.version): SHA-256 \(actual.isEmpty ? "unreadable" : actual), the lock pins \(p.sha256): not the package the lock names")
            }
            debs.append(file)
        }
        let dir = root + "/" + entry.name
        let staging = dir + ".unpacking"
        try? FileManager.default.removeItem(atPath: staging)
        try? FileManager.default.removeItem(atPath: dir)
        for deb in debs {
            let r = try Process.execute(["dpkg-deb", "-x", deb, staging], timeout: 600)
            guard r.succeeded else { throw KernelLockError("dpkg-deb -x \(deb): \(r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))") }
        }
        guard let unpacked = locate(entry, in: staging) else {
            throw KernelLockError("\(entry.name): no boot/vmlinuz-\(entry.release) nor (usr/)lib/modules/\(entry.release)/vmlinuz in \(entry.packages.map(\.name).joined(separator: ", "))")
        }
        // A package's postinst runs depmod; unpacking does not, and the guest's modprobe needs modules.dep.
        if let modules = unpacked.modules, !FileManager.default.fileExists(atPath: modules + "/modules.dep") {
            let base = URL(fileURLWithPath: modules).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
            let r = try Process.execute(["depmod", "-b", base, entry.release], timeout: 300)
            guard r.succeeded else { throw KernelLockError("depmod -b \(base) \(entry.release): \(r.standardError)") }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(entry).write(to: URL(fileURLWithPath: staging + "/.xfrmlab-entry.json"))
        try FileManager.default.moveItem(atPath: staging, toPath: dir)
        log(String(format: "kernels: %@ unpacked into %@ in %.0f s", entry.name, dir, Date().timeIntervalSince(started)))
        guard let found = cached(entry) else { throw KernelLockError("\(entry.name): unpacked, but not found in \(dir)") }
        return found
    }

    /// The image, modules and config of an entry unpacked in `dir`: older packages put the image
    /// in boot/ and the modules in lib/modules, the split ones of 7.x both in usr/lib/modules/RELEASE
    /// (`vmlinuz`, `config`).
    func locate(_ entry: KernelLock.Entry, in dir: String) -> Unpacked? {
        let fm = FileManager.default
        let modules = [dir + "/lib/modules/" + entry.release, dir + "/usr/lib/modules/" + entry.release].first { fm.fileExists(atPath: $0) }
        let images = [dir + "/boot/vmlinuz-" + entry.release] + (modules.map { [$0 + "/vmlinuz"] } ?? [])
        guard let image = images.first(where: { fm.fileExists(atPath: $0) }) else { return nil }
        return Unpacked(image: image, modules: modules, config: KernelConfig.locate(image: image, modules: modules, release: entry.release))
    }
}

/// apt with a sources list and state of its own: the machine's apt configuration and lists stay
/// as they are. Its mirrors are the machine's own (`/etc/apt/sources.list{,.d}`): the archive for
/// ordinary suites, the security archive for `*-security`.
public struct PrivateApt: Sendable {
    public var directory: String
    public var suites: [String]

    /// Every suite that serves kernels of a catalogue series (the drift report asks them all).
    public static let catalogueSuites = ["bullseye", "bullseye-security", "bookworm", "bookworm-security", "bookworm-backports",
                                         "trixie", "trixie-security", "sid", "experimental"]

    public init(directory: String, suites: [String]) throws {
        self.directory = directory
        self.suites = Array(Set(suites + PrivateApt.catalogueSuites)).sorted()
        try FileManager.default.createDirectory(atPath: directory + "/lists/partial", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: directory + "/cache/archives/partial", withIntermediateDirectories: true)
        let (archive, security) = try PrivateApt.mirrors()
        let lines = self.suites.map { "deb \($0.hasSuffix("-security") ? security : archive) \($0) main" }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: directory + "/sources.list"))
    }

    var options: [String] {
        ["-o", "Dir::Etc::sourcelist=\(directory)/sources.list", "-o", "Dir::Etc::sourceparts=/nonexistent",
         "-o", "Dir::State::Lists=\(directory)/lists", "-o", "Dir::Cache=\(directory)/cache",
         "-o", "Dir::State::status=/dev/null", "-o", "APT::Get::List-Cleanup=0", "-o", "Debug::NoLocking=1", "-q"]
    }

    /// `apt-get update` of the private lists.
    public func update() throws {
        let r = try Process.execute(["apt-get"] + options + ["update"], timeout: 600)
        guard r.succeeded else { throw KernelLockError("apt-get update (private lists in \(directory)): \(r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }

    /// `apt-cache show NAME=VERSION` knows it.
    public func knows(_ name: String, version: String) -> Bool {
        (try? Process.execute(["apt-cache"] + options + ["show", "\(name)=\(version)"], timeout: 120))?.succeeded == true
    }

    /// Downloads exactly this package version into `directory` (its lists updated first when
    /// they do not know it); returns the .deb's path.
    public func download(_ p: KernelLock.Package, into target: String) throws -> String {
        if !knows(p.name, version: p.version) { try update() }
        guard knows(p.name, version: p.version) else {
            throw KernelLockError("\(p.name) \(p.version) is not served by \(suites.joined(separator: ", ")) any more: pin a kernel Debian still serves (`xfrmlab kernels latest`), or keep a cache that has it")
        }
        let r = try Process.execute(["sh", "-c", "cd \"$0\" && exec apt-get \"$@\"", target] + options + ["download", "\(p.name)=\(p.version)"], timeout: 1200)
        guard r.succeeded else { throw KernelLockError("apt-get download \(p.name)=\(p.version): \(r.standardError.trimmingCharacters(in: .whitespacesAndNewlines))") }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        guard let deb = files.first(where: { $0.hasPrefix(p.name + "_") && $0.hasSuffix(".deb") }) else {
            throw KernelLockError("apt-get download \(p.name)=\(p.version) left no .deb in \(target)")
        }
        return target + "/" + deb
    }

    /// Every version of every package whose name matches `pattern` (a regular expression), with
    /// the suite serving it: one `apt-cache madison` over all the names.
    public func versions(matching pattern: String) throws -> [(name: String, version: String, suite: String)] {
        let r = try Process.execute(["apt-cache"] + options + ["search", "--names-only", pattern], timeout: 120)
        let names = r.standardOutput.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        guard !names.isEmpty else { return [] }
        let madison = try Process.execute(["apt-cache"] + options + ["madison"] + names, timeout: 120)
        // `linux-image-6.1.0-57-amd64 | 6.1.192-3 | http://… bookworm-security/main amd64 Packages`
        return madison.standardOutput.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3, let suite = fields[2].split(separator: " ").dropFirst().first?.split(separator: "/").first else { return nil }
            return (fields[0], fields[1], String(suite))
        }
    }

    /// The machine's Debian archive and security archive URIs, from its apt sources (deb822
    /// `.sources` files or one-line `sources.list`); XFRMLAB_DEBIAN_MIRROR and
    /// XFRMLAB_DEBIAN_SECURITY_MIRROR override them.
    static func mirrors() throws -> (archive: String, security: String) {
        let env = ProcessInfo.processInfo.environment
        var archive = env["XFRMLAB_DEBIAN_MIRROR"], security = env["XFRMLAB_DEBIAN_SECURITY_MIRROR"]
        var pairs: [(uri: String, suites: [String])] = []
        let dir = "/etc/apt/sources.list.d"
        let files = ["/etc/apt/sources.list"] + ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted().map { dir + "/" + $0 }
        for file in files {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { continue }
            if file.hasSuffix(".sources") {
                for stanza in text.components(separatedBy: "\n\n") {
                    var fields: [String: String] = [:]
                    for line in stanza.split(separator: "\n") where !line.hasPrefix("#") {
                        guard let colon = line.firstIndex(of: ":") else { continue }
                        fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                    }
                    guard fields["types"]?.split(separator: " ").contains("deb") == true, let uri = fields["uris"]?.split(separator: " ").first else { continue }
                    pairs.append((String(uri), (fields["suites"] ?? "").split(separator: " ").map(String.init)))
                }
            } else if file.hasSuffix(".list") {
                for line in text.split(separator: "\n") {
                    let words = line.split(separator: " ").filter { !$0.hasPrefix("[") && !$0.hasSuffix("]") }
                    guard words.count >= 3, words[0] == "deb" else { continue }
                    pairs.append((String(words[1]), [String(words[2])]))
                }
            }
        }
        for (uri, suites) in pairs where uri.hasPrefix("http") {
            let trimmed = uri.hasSuffix("/") ? String(uri.dropLast()) : uri
            if suites.contains(where: { $0.hasSuffix("-security") }) { security = security ?? trimmed } else { archive = archive ?? trimmed }
        }
        guard let archive else {
            throw KernelLockError("no Debian archive in /etc/apt/sources.list{,.d}: set XFRMLAB_DEBIAN_MIRROR (and XFRMLAB_DEBIAN_SECURITY_MIRROR)")
        }
        return (archive, security ?? archive + "-security")
    }
}
