import Foundation
import Glibc

/// One column of the matrix: the machine's own kernel (the suite runs directly on the host), or a
/// kernel image booted in a VM with the host's root filesystem.
public struct Kernel: Codable, Sendable, Hashable, CustomStringConvertible {
    public enum Source: String, Codable, Sendable { case host, image }

    /// What the user asked for (`host`, `6.12`, `6.1-cloud`, `/path/to/bzImage`): the column title.
    public var label: String
    public var source: Source
    /// The kernel image (bzImage / vmlinuz) booted in the VM.
    public var image: String?
    /// A modules directory given with `--modules` (else /lib/modules/RELEASE, as vng looks it up).
    public var modules: String?
    /// `uname -r`, read from the image's header before it boots.
    public var release: String?
    /// The version banner from the image (`6.1.0-56-amd64 (debian-kernel@…) #1 SMP … Debian 6.1.192-2 …`).
    public var banner: String?
    /// Why it cannot run at all (reported in its column, the matrix goes on with the others).
    public var unavailable: String? = nil
    /// The image's own build config (beside the image, or in its modules directory).
    public var config: String? = nil
    /// The catalogue entry it came from (`6.1.192`), with its Debian packages and versions.
    public var pinned: String? = nil
    public var packages: [String]? = nil
    /// Built here (`xfrmlab kernels build`): the source and patches it was built from.
    public var built: String? = nil
    /// The bug reports whose fix this kernel was built without (its mutants): their detectors
    /// must answer REPRODUCES here, and the guest is told so (XFRMLAB_KERNEL_MUTATIONS).
    public var mutations: [String]? = nil

    public static let host = Kernel(label: "host", source: .host)

    public var description: String {
        switch source {
        case .host: return "host (\(Kernel.runningRelease), no VM)"
        case .image: return "\(label) (\(release ?? image ?? "?"))"
        }
    }

    /// A name safe as a directory name: the label, or for a path its file name and release.
    public var slug: String {
        let base = label.contains("/") ? URL(fileURLWithPath: label).lastPathComponent + (release.map { "-" + $0 } ?? "") : label
        return String(base.map { $0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" || $0 == "+" ? $0 : "_" })
            .trimmingCharacters(in: CharacterSet(charactersIn: "._"))
    }

    public static var runningRelease: String {
        var u = utsname()
        uname(&u)
        return withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }
}

/// An upstream kernel version (6.1.192), compared numerically.
public struct KernelVersion: Codable, Sendable, Comparable, CustomStringConvertible {
    public var parts: [Int]

    public init(_ parts: [Int]) { self.parts = parts }

    /// Parses the leading `MAJOR.MINOR[.PATCH]` of a string ("6.12.117+deb12-amd64" → 6.12.117).
    public init?(parsing text: some StringProtocol) {
        var parts: [Int] = []
        var digits = ""
        for c in text {
            if c.isASCII && c.isNumber { digits.append(c); continue }
            if c == "." && !digits.isEmpty { parts.append(Int(digits)!); digits = ""; continue }
            break
        }
        if !digits.isEmpty { parts.append(Int(digits)!) }
        guard parts.count >= 2 else { return nil }
        self.parts = Array(parts.prefix(3))
    }

    /// The upstream version a kernel reports. Debian's release names carry an ABI number, not
    /// the version (`6.1.0-56-amd64` is 6.1.192): its banner says `Debian 6.1.192-2`, so that
    /// wins over the release.
    /// (/proc/version also names the compiler's Debian version: "gcc-12 (Debian 12.2.0-14)", so
    /// the one that counts is the one in the release's series.)
    public static func of(release: String?, banner: String?) -> KernelVersion? {
        let fromRelease = release.flatMap { KernelVersion(parsing: $0) }
        if let banner {
            var rest = banner[...]
            while let range = rest.range(of: "Debian ") {
                if let v = KernelVersion(parsing: rest[range.upperBound...]),
                   fromRelease == nil || v.parts.prefix(2) == fromRelease!.parts.prefix(2) {
                    return v
                }
                rest = rest[range.upperBound...]
            }
        }
        return fromRelease
    }

    public static func < (a: KernelVersion, b: KernelVersion) -> Bool {
        for i in 0..<max(a.parts.count, b.parts.count) {
            let x = i < a.parts.count ? a.parts[i] : 0, y = i < b.parts.count ? b.parts[i] : 0
            if x != y { return x < y }
        }
        return false
    }

    public static func == (a: KernelVersion, b: KernelVersion) -> Bool { !(a < b) && !(b < a) }

    public var description: String { parts.map(String.init).joined(separator: ".") }
}

/// A `--kernel` argument that names no kernel this machine has.
public struct KernelNotFound: Error, CustomStringConvertible, Sendable {
    public var argument: String
    public var reason: String
    public var description: String { "--kernel \(argument): \(reason)" }
}

/// Turns `--kernel` arguments into kernels.
///
/// - `host`: the suite on this machine's kernel, no VM.
/// - an alias of the kernel catalogue (Fixtures/kernels/kernels.lock): a series (`5.10`, `6.1`,
///   `6.12`, `7.2`, `7.3-rc`), a series' flavour (`6.1-cloud`, `6.12-rt`) or an exact point release
///   (`5.10.218`, `6.1.176`): the pinned Debian packages, fetched into the kernel cache when missing.
/// - a kernel built here from a pinned source (`xfrmlab kernels build`): `6.1-control` (the source
///   with the repository's config fragment), `6.1-mutant` (every mutant of the series that can share
///   a guest, Fixtures/reports/*/mutant-6.1.patch), `6.1-mutant-ID` (one report's mutant alone).
/// - a release with an image in /boot (`6.1.0-56-amd64`), or the path of any bzImage (one built
///   here keeps its mutations: build.json beside it says which).
public enum KernelCatalog {
    public static func resolve(_ argument: String, modules: [String] = [], lock: KernelLock? = nil,
                               cache: KernelCache = KernelCache(), boot: String = "/boot", repositoryRoot: String? = nil,
                               log: @escaping @Sendable (String) -> Void = { _ in }) throws -> Kernel {
        // NAME=KERNEL: any of the forms below, shown and filed (kernels/NAME) under the name given.
        if let eq = argument.firstIndex(of: "="), eq != argument.startIndex, !argument[..<eq].contains("/") {
            let name = String(argument[..<eq])
            guard name.allSatisfy({ $0.isLetter || $0.isNumber || ".-_+".contains($0) }) else {
                throw KernelNotFound(argument: argument, reason: "\"\(name)\" is not a kernel name (letters, digits, . - _ +)")
            }
            var kernel = try resolve(String(argument[argument.index(after: eq)...]), modules: modules, lock: lock, cache: cache,
                                     boot: boot, repositoryRoot: repositoryRoot, log: log)
            kernel.label = name
            return kernel
        }
        if argument == "host" { return .host }
        var image: String?
        var pinned: (KernelLock.Entry, KernelCache.Unpacked)?
        if let lock, let root = repositoryRoot, let request = try BuiltKernels.request(for: argument, lock: lock, repositoryRoot: root) {
            let built: KernelBuilder.Built
            do { built = try KernelBuilder(cache: cache, log: log).build(request) } catch {
                throw KernelNotFound(argument: argument, reason: "building it failed: \(error)")
            }
            image = built.image
        } else if argument.contains("/") || FileManager.default.fileExists(atPath: argument) {
            guard FileManager.default.fileExists(atPath: argument) else {
                throw KernelNotFound(argument: argument, reason: "no such file")
            }
            image = URL(fileURLWithPath: argument).standardized.path
        } else if let entry = lock?.entry(for: argument) {
            do {
                let unpacked = try cache.fetch(entry, log: log)
                pinned = (entry, unpacked)
                image = unpacked.image
            } catch {
                throw KernelNotFound(argument: argument, reason: "the catalogue's \(entry.name) could not be fetched: \(error)")
            }
        } else if FileManager.default.fileExists(atPath: "\(boot)/vmlinuz-\(argument)") {
            image = "\(boot)/vmlinuz-\(argument)"
        } else if argument == Kernel.runningRelease {
            // Asked for by name: a column that says why, rather than no matrix.
            return Kernel(label: argument, source: .image, image: nil, modules: nil, release: argument, banner: nil,
                          unavailable: "this machine's own kernel (\(argument)) has no image in \(boot) or /lib/modules/\(argument), so it cannot boot in a VM; `--kernel host` runs the suite on it directly, no VM")
        } else {
            let known = lock.map { "one of host, " + $0.aliases.joined(separator: ", ") } ?? "host"
            throw KernelNotFound(argument: argument, reason: "not a file, not a release with an image in \(boot), not \(known)")
        }
        let banner = try? KernelImage.banner(of: image!)
        let release = banner.map { String($0.prefix { $0 != " " }) }
        var kernel = Kernel(label: argument, source: .image, image: image, modules: nil, release: release, banner: banner)
        if let (entry, unpacked) = pinned {
            kernel.modules = unpacked.modules
            kernel.config = unpacked.config
            kernel.pinned = entry.name
            kernel.packages = entry.packages.map { "\($0.name) \($0.version)" }
        } else if let manifest = KernelBuilder.Built.manifest(beside: image!) {
            kernel.config = manifest.config
            kernel.built = ([manifest.source] + manifest.patches.map { URL(fileURLWithPath: $0).pathComponents.suffix(2).joined(separator: "/") }).joined(separator: " + ")
            kernel.mutations = manifest.mutations
        } else {
            kernel.modules = try modulesDirectory(for: kernel, among: modules)
            if let release { kernel.config = KernelConfig.locate(image: image!, modules: kernel.modules, release: release) }
        }
        return kernel
    }

    /// The `--modules` directory that belongs to this kernel: the one named after its release
    /// (`…/lib/modules/RELEASE`), or holding `lib/modules/RELEASE`.
    static func modulesDirectory(for kernel: Kernel, among candidates: [String]) throws -> String? {
        guard let release = kernel.release else { return nil }
        for dir in candidates {
            let url = URL(fileURLWithPath: dir).standardized
            if url.lastPathComponent == release && FileManager.default.fileExists(atPath: url.path + "/modules.order")
                || url.lastPathComponent == release && FileManager.default.fileExists(atPath: url.path + "/modules.dep") {
                return url.path
            }
            let nested = url.path + "/lib/modules/" + release
            if FileManager.default.fileExists(atPath: nested) { return nested }
        }
        return nil
    }
}

/// Reads what an x86 kernel image says about itself without booting it.
public enum KernelImage {
    /// The version banner at `kernel_version` in the real-mode header (boot protocol ≥ 2.00):
    /// a 16-bit offset at 0x20E, relative to 0x200.
    public static func banner(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KernelNotFound(argument: path, reason: "cannot read the image")
        }
        defer { try? handle.close() }
        let head = handle.readData(ofLength: 0x10000)
        guard head.count > 0x210, head[0x202..<0x206] == Data("HdrS".utf8) else {
            throw KernelNotFound(argument: path, reason: "not an x86 bzImage (no HdrS header)")
        }
        let offset = Int(head[0x20E]) | Int(head[0x20F]) << 8
        let start = 0x200 + offset
        guard offset > 0, start < head.count else { throw KernelNotFound(argument: path, reason: "no version string in the header") }
        let bytes = head[start...].prefix { $0 != 0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}
