import Foundation
import Namespaces
import Yams

/// What Debian serves beyond the lock.
public enum DebianKernels {
    /// The newest build of the same line as `pinned` (same package names with another ABI number
    /// or point release: `linux-image-6.1.0-56-amd64` → `linux-image-6.1.0-57-amd64`,
    /// `linux-image-6.12.117+deb12-amd64` → `…6.12.118+deb12…`), as a lock entry.
    public static func newest(like pinned: KernelLock.Entry, apt: PrivateApt) throws -> KernelLock.Entry {
        let first = pinned.packages[0].name
        guard let range = first.range(of: pinned.release) else { throw KernelLockError("\(first) does not name its release \(pinned.release)") }
        let prefix = String(first[..<range.lowerBound]), suffix = String(first[range.upperBound...])
        let pattern = "^" + escape(prefix) + releasePattern(pinned.release) + escape(suffix) + "$"
        let candidates = try apt.versions(matching: pattern)
        guard let best = candidates.max(by: { older($0.version, than: $1.version) }) else { return pinned }
        let release = String(best.name.dropFirst(prefix.count).dropLast(suffix.count))
        var entry = pinned
        entry.release = release
        entry.version = upstream(best.version)
        entry.name = entry.version
        entry.suite = best.suite
        entry.packages = []
        for p in pinned.packages {
            let name = p.name.replacingOccurrences(of: pinned.release, with: release)
            let show = try Process.execute(["apt-cache"] + apt.options + ["show", "\(name)=\(best.version)"], timeout: 60)
            guard show.succeeded else { throw KernelLockError("apt-cache show \(name)=\(best.version): \(show.standardError)") }
            var fields: [String: String] = [:]
            for line in show.standardOutput.split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":"), fields[String(line[..<colon])] == nil else { continue }
                fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
            entry.packages.append(KernelLock.Package(name: name, version: best.version, size: Int(fields["Size"] ?? "") ?? 0, sha256: fields["SHA256"] ?? ""))
        }
        return entry
    }

    /// The release with its varying number as a pattern: `6.1.0-56-amd64` → `6\.1\.0-[0-9]+-amd64`,
    /// `6.12.117+deb12-amd64` → `6\.12\.[0-9]+\+deb12-amd64`; a release without one stays as it is.
    static func releasePattern(_ release: String) -> String {
        if let r = release.range(of: #"^\d+\.\d+\.0-\d+"#, options: .regularExpression) {
            let head = release[r].split(separator: "-")[0]
            return escape(head + "-") + "[0-9]+" + escape(String(release[r.upperBound...]))
        }
        if let r = release.range(of: #"^\d+\.\d+\.\d+"#, options: .regularExpression) {
            let parts = release[r].split(separator: ".")
            return escape(parts[0] + "." + parts[1] + ".") + "[0-9]+" + escape(String(release[r.upperBound...]))
        }
        return escape(release)
    }

    static func escape(_ s: String) -> String {
        s.map { ".+*?()[]{}|^$\\".contains($0) ? "\\\($0)" : String($0) }.joined()
    }

    /// `7.3~rc7-1~exp1` → `7.3-rc7`; `6.1.192-3` → `6.1.192`.
    static func upstream(_ debian: String) -> String {
        let base = debian.split(separator: "-")[0]
        return base.replacingOccurrences(of: "~", with: "-")
    }

    /// Debian's version order (dpkg --compare-versions), after the upstream version (which
    /// settles all but ties without a process).
    static func older(_ a: String, than b: String) -> Bool {
        if a == b { return false }
        if let x = KernelVersion(parsing: a), let y = KernelVersion(parsing: b), x != y { return x < y }
        return (try? Process.execute(["dpkg", "--compare-versions", a, "lt", b], timeout: 10))?.succeeded == true
    }
}

extension KernelLock {
    /// The lock as YAML, as Fixtures/kernels/kernels.lock is written (drift writes one of its own).
    public func yaml() throws -> String { try YAMLEncoder().encode(self) }
}

/// What changed between pinned kernels and Debian's newest builds of the same series, from one
/// matrix run over both: in words a maintainer can act on before bumping the lock.
public struct DriftReport {
    public var report: MatrixReport
    /// (pinned label, newest label) per series.
    public var pairs: [(String, String)]

    public init(report: MatrixReport, pairs: [(String, String)]) {
        self.report = report
        self.pairs = pairs
    }

    public func text() -> String {
        var out: [String] = []
        for (old, new) in pairs {
            guard let a = report.kernels.first(where: { $0.kernel.label == old }),
                  let b = report.kernels.first(where: { $0.kernel.label == new }) else { continue }
            out.append("\(old): pinned \(a.version ?? "?") (\(a.release ?? "?")) → newest \(b.version ?? "?") (\(b.release ?? "?"))")
            out.append("  packages: \((a.kernel.packages ?? []).joined(separator: ", ")) → \((b.kernel.packages ?? []).joined(separator: ", "))")
            var changes = changesBetween(a, b)
            if changes.isEmpty { changes = ["nothing changed: every test \(b.problems == 0 ? "is as expected" : "fails as it did") on both; the pin can move"] }
            out += changes.map { "  - " + $0 }
            out.append("")
        }
        return out.joined(separator: "\n") + "\n"
    }

    func changesBetween(_ a: KernelResult, _ b: KernelResult) -> [String] {
        var out: [String] = []
        if a.status != b.status {
            out.append("run: \(a.status.rawValue) → \(b.status.rawValue)" + (b.statusDetail.map { ": \($0)" } ?? ""))
        }
        for crash in b.crashes where !a.crashes.contains(where: { $0.fingerprint == crash.fingerprint }) {
            out.append("new crash: \(crash.summary)")
        }
        for w in b.warnings where !a.warnings.contains(where: { $0.warning.headline == w.warning.headline }) {
            out.append("new kernel warning\(w.test.map { " during \($0)" } ?? ""): \(w.warning.headline)")
        }
        for id in Set(a.cells.keys).union(b.cells.keys).sorted() {
            let x = a.cells[id], y = b.cells[id]
            guard let x, let y, x.verdict != .notSelected, y.verdict != .notSelected else { continue }
            let name = report.rows.first { $0.id == id }?.name ?? id
            if x.verdict.isProblem != y.verdict.isProblem || x.verdict.behaviour != y.verdict.behaviour {
                out.append("\(y.verdict.isProblem ? "new failure" : x.verdict.isProblem ? "fixed failure" : "changed") \(name): \(x.verdict.cell) → \(y.verdict.cell)" + (y.detail.map { " (\($0.prefix(300)))" } ?? ""))
            }
            if let r = x.report?.verdict, let s = y.report?.verdict, r != s {
                out.append("verdict of \(name): \(r) → \(s): \(y.report!.evidence.prefix(300))")
            }
        }
        for key in Set(a.config.keys).union(b.config.keys).sorted() where a.config[key] != b.config[key] {
            out.append("config \(key): \(a.config[key] ?? "n") → \(b.config[key] ?? "n")")
        }
        let caps = Dictionary((a.capabilities ?? []).map { ($0.name, $0.value) }, uniquingKeysWith: { x, _ in x })
        for c in b.capabilities ?? [] where caps[c.name] != nil && caps[c.name] != c.value {
            out.append("capability \(c.name): \(caps[c.name]!) → \(c.value)")
        }
        return out
    }
}
