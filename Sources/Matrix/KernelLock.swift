import Foundation
import Yams

/// The kernel catalogue's lock (Fixtures/kernels/kernels.lock): every kernel the matrix may boot,
/// by exact Debian package, version and SHA-256. A run's kernels change only when this file does.
public struct KernelLock: Codable, Sendable {
    /// `5.10` → `5.10.262`: the point release a series alias stands for.
    public var series: [String: String]
    public var kernels: [Entry]
    /// Kernel sources the mutant and control kernels are built from (`xfrmlab kernels build`).
    public var sources: [Source]?

    /// A Debian `linux-source-SERIES` package, pinned as the kernels are.
    public struct Source: Codable, Sendable, Hashable {
        /// The series it is the source of, its alias: `6.1`, `6.12`.
        public var name: String
        /// The upstream version (its Makefile's).
        public var version: String
        public var suite: String
        public var package: Package
    }

    public func source(for alias: String) -> Source? { sources?.first { $0.name == alias } }

    public struct Entry: Codable, Sendable, Hashable {
        /// Its own alias: `5.10.218`, `6.1.192-cloud`.
        public var name: String
        public var flavour: Flavour
        /// The upstream version the fix histories are compared with.
        public var version: String
        /// `uname -r`.
        public var release: String
        /// The Debian suite that serves it (`bullseye-security` comes from the security archive).
        public var suite: String
        public var packages: [Package]

        public var series: String {
            let v = KernelVersion(parsing: version)
            return v.map { $0.parts.prefix(2).map(String.init).joined(separator: ".") } ?? version
        }
    }

    public enum Flavour: String, Codable, Sendable, CaseIterable { case generic, cloud, rt }

    public struct Package: Codable, Sendable, Hashable {
        public var name: String
        public var version: String
        public var size: Int
        public var sha256: String
    }

    public static let defaultPath = "Fixtures/kernels/kernels.lock"

    public static func load(path: String) throws -> KernelLock {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw KernelLockError("\(path): cannot read: \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> KernelLock {
        let lock: KernelLock
        do { lock = try YAMLDecoder().decode(KernelLock.self, from: text) } catch let error as DecodingError {
            throw KernelLockError("\(path): \(Expectations.describe(error))")
        } catch {
            throw KernelLockError("\(path): \(error)")
        }
        // Mistakes a reader would not see at once: two entries with one name, an alias to
        // nothing, a checksum that is not one.
        var seen = Set<String>()
        for (i, e) in lock.kernels.enumerated() {
            guard seen.insert(e.name).inserted else { throw KernelLockError("\(path): kernels[\(i)].name: \"\(e.name)\" given twice") }
            guard KernelVersion(parsing: e.version) != nil else { throw KernelLockError("\(path): kernels[\(i)].version: \"\(e.version)\" is not a kernel version") }
            guard !e.packages.isEmpty else { throw KernelLockError("\(path): kernels[\(i)].packages: empty") }
            for (j, p) in e.packages.enumerated() where p.sha256.count != 64 || !p.sha256.allSatisfy(\.isHexDigit) {
                throw KernelLockError("\(path): kernels[\(i)].packages[\(j)].sha256: \"\(p.sha256)\" is not a SHA-256")
            }
        }
        var seenSources = Set<String>()
        for (i, src) in (lock.sources ?? []).enumerated() {
            guard seenSources.insert(src.name).inserted else { throw KernelLockError("\(path): sources[\(i)].name: \"\(src.name)\" given twice") }
            guard KernelVersion(parsing: src.version) != nil else { throw KernelLockError("\(path): sources[\(i)].version: \"\(src.version)\" is not a kernel version") }
            guard src.package.sha256.count == 64, src.package.sha256.allSatisfy(\.isHexDigit) else {
                throw KernelLockError("\(path): sources[\(i)].package.sha256: \"\(src.package.sha256)\" is not a SHA-256")
            }
        }
        for (alias, name) in lock.series where !seen.contains(name) {
            throw KernelLockError("\(path): series.\(alias): \"\(name)\" is no kernel of the lock")
        }
        return lock
    }

    /// The entry an alias names: an entry's name (`5.10.218`, `6.1.192-rt`), a series
    /// (`6.1` → its pinned point release), or a series with a flavour (`6.12-cloud`).
    public func entry(for alias: String) -> Entry? {
        if let e = kernels.first(where: { $0.name == alias }) { return e }
        if let name = series[alias] { return kernels.first { $0.name == name } }
        for flavour in Flavour.allCases where flavour != .generic && alias.hasSuffix("-" + flavour.rawValue) {
            let base = String(alias.dropLast(flavour.rawValue.count + 1))
            guard let name = series[base] ?? kernels.first(where: { $0.name == base })?.name,
                  let generic = kernels.first(where: { $0.name == name }) else { return nil }
            return kernels.first { $0.flavour == flavour && $0.version == generic.version }
        }
        return nil
    }

    /// Every alias, for help texts and errors.
    public var aliases: [String] {
        var out = series.keys.sorted { (KernelVersion(parsing: $0) ?? KernelVersion([0])) < (KernelVersion(parsing: $1) ?? KernelVersion([0])) }
        for (alias, name) in series.sorted(by: { $0.key < $1.key }) {
            let version = kernels.first { $0.name == name }?.version
            for f in Flavour.allCases where f != .generic && kernels.contains(where: { $0.flavour == f && $0.version == version }) {
                out.append(alias + "-" + f.rawValue)
            }
        }
        return out + kernels.map(\.name)
    }
}

public struct KernelLockError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
