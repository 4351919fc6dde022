import Daemons
import Foundation
import Matrix
import Namespaces
import Xfrm

/// What a report's reproduction says about the running kernel.
public struct ReportVerdict: Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case reproduces
        case fixed
        case notApplicable = "not-applicable"
        /// A part of the observation could not tell (never expected: it fails the report).
        case inconclusive

        public var title: String {
            switch self {
            case .reproduces: return "REPRODUCES"
            case .fixed: return "FIXED"
            case .notApplicable: return "NOT APPLICABLE"
            case .inconclusive: return "INCONCLUSIVE"
            }
        }
    }

    public var kind: Kind
    /// Why: the evidence (what was seen) or, when not applicable, the probed reason.
    public var reason: String

    public var description: String { "\(kind.title): \(reason)" }
}

/// The running kernel as the verdicts see it.
public struct KernelSituation: Sendable, CustomStringConvertible {
    public var release: String
    /// The upstream version (Debian's 6.1.0-56 is the 6.1.192 its /proc/version names).
    public var version: KernelVersion?
    /// A kernel that may break: a virtme-ng guest (`virtme` on /proc/cmdline), or one declared
    /// so with XFRMLAB_DISPOSABLE_KERNEL=1.
    public var disposable: Bool
    public var disposableReason: String
    /// The reports whose fix this kernel was built without (a mutant kernel, `xfrmlab kernels
    /// build`; the matrix passes its build.json's list as XFRMLAB_KERNEL_MUTATIONS).
    public var mutations: Set<String>

    public init(release: String, version: KernelVersion?, disposable: Bool, disposableReason: String, mutations: Set<String> = []) {
        self.release = release
        self.version = version
        self.disposable = disposable
        self.disposableReason = disposableReason
        self.mutations = mutations
    }

    public static var current: KernelSituation {
        let release = kernelRelease()
        let banner = try? String(contentsOfFile: "/proc/version", encoding: .utf8)
        let cmdline = (try? String(contentsOfFile: "/proc/cmdline", encoding: .utf8)) ?? ""
        let declared = ProcessInfo.processInfo.environment["XFRMLAB_DISPOSABLE_KERNEL"] == "1"
        let vm = cmdline.contains("virtme")
        let mutations = (ProcessInfo.processInfo.environment["XFRMLAB_KERNEL_MUTATIONS"] ?? "").split(separator: ",").map(String.init)
        return KernelSituation(release: release, version: KernelVersion.of(release: release, banner: banner),
                               disposable: vm || declared,
                               disposableReason: vm ? "a virtme-ng guest (/proc/cmdline names virtme)"
                                   : declared ? "XFRMLAB_DISPOSABLE_KERNEL=1" : "the host's kernel (no virtme on /proc/cmdline)",
                               mutations: Set(mutations))
    }

    public var facts: Expectations.KernelFacts {
        Expectations.KernelFacts(label: disposable ? release : "host", isHost: !disposable, release: release, version: version)
    }

    public var description: String { "\(release) (upstream \(version?.description ?? "unknown"))" }
}

extension BugReport {
    /// The verdict this kernel should give, from the report's own history: its fix's first
    /// release and stable backports, when the bug came in, and per-kernel overrides.
    public func expectedVerdict(on kernel: KernelSituation) -> (kind: ReportVerdict.Kind, why: String) {
        // A mutant kernel: built on purpose without this report's fix, so its detector must fire.
        if kernel.mutations.contains(id) {
            let undone = fixes.isEmpty ? "its fix" : fixes.map(\.label).joined(separator: ", ")
            return (.reproduces, "\(kernel.release) was built with \(undone) undone (a mutant kernel, its mutant-*.patch): its detector must fire")
        }
        if let o = overrides.first(where: { $0.kernel.matches(kernel.facts) }) {
            return (o.expect, "\(o.kernel): \(o.why)")
        }
        if kind == .behaviour {
            let e = expect ?? .reproduces
            return (e, "a behaviour, not a bug: the same on every kernel")
        }
        guard !fixes.isEmpty else { return (.reproduces, "no fix known") }
        guard let version = kernel.version else {
            return (.fixed, "kernel version unknown (\(kernel.release)): assumed newer than the fix")
        }
        if let introduced, let since = introduced.release, version < since {
            return (.fixed, "\(version) predates the bug (introduced in \(since) by \(introduced.commit.prefix(12)))")
        }
        // Fixed only with every commit of the fix; each missing one is named.
        let judged = fixes.map { ($0, Self.has($0, version)) }
        let missing = judged.filter { !$0.1.has }
        if missing.isEmpty {
            return (.fixed, judged.map { judged.count > 1 ? "\($0.0.part ?? ""): \($0.1.why)" : $0.1.why }.joined(separator: "; "))
        }
        return (.reproduces, missing.map { judged.count > 1 ? "\($0.0.part ?? ""): \($0.1.why)" : $0.1.why }.joined(separator: "; "))
    }

    /// What one named part of the observation should show: judged by the fix commit with that
    /// `part` when there is one (a fix in several commits), else as the whole report.
    public func expectedVerdict(on kernel: KernelSituation, part: String) -> (kind: ReportVerdict.Kind, why: String) {
        let whole = expectedVerdict(on: kernel)
        guard kind == .bug, !kernel.mutations.contains(id), !overrides.contains(where: { $0.kernel.matches(kernel.facts) }),
              let fix = fixes.first(where: { $0.part == part }), let version = kernel.version else { return whole }
        if let introduced, let since = introduced.release, version < since { return whole }
        let judged = Self.has(fix, version)
        return (judged.has ? .fixed : .reproduces, judged.why)
    }

    /// Whether `version` has one fix commit, from its release and backports, and why.
    static func has(_ fix: Commit, _ version: KernelVersion) -> (has: Bool, why: String) {
        let name = "\(fix.commit.prefix(12)) (\"\(fix.subject)\")"
        if let first = fix.release, version >= first {
            return (true, "\(version) ≥ \(first), the first release with \(name)")
        }
        let series = version.parts.prefix(2)
        for b in fix.backports where b.parts.prefix(2) == series && version >= b {
            return (true, "\(version) ≥ \(b), where \(name) was backported to \(series.map(String.init).joined(separator: "."))")
        }
        if let first = fix.release {
            return (false, "\(version) predates \(first), the first release with \(name)")
        }
        // Mainline release unknown: only the backports decide, and the words say so.
        let backport = fix.backports.first { $0.parts.prefix(2) == series }
        return (false, backport.map { "\(version) predates \($0), where \(name) was backported (its mainline release is unknown)" }
                ?? "the mainline release with \(name) is unknown and no backport to \(series.map(String.init).joined(separator: ".")) is listed: expected still affected")
    }
}

/// What a report may need besides capabilities of the kernel.
public enum Requirement {
    /// strongSwan's charon with kernel-libipsec (the plugin and /dev/net/tun).
    public static let libipsec = "strongswan-libipsec"

    public static var known: Set<String> { Set(Capability.Name.allCases.map(\.rawValue)).union([libipsec]) }

    /// Why the requirement is missing here (the probe's answer), or nil when it is met.
    public static func missing(_ name: String) -> String? {
        if let c = Capability.Name(rawValue: name) {
            let found = Capabilities.capability(c)
            return found.available ? nil : found.skipReason
        }
        if name == libipsec {
            let probe = Installation.probe(.strongSwan)
            guard probe.available else { return "strongSwan not available: \(probe.reason)" }
            if case .failure(let e) = Installation.libipsec { return "kernel-libipsec not available: \(e.message)" }
            return nil
        }
        return "unknown requirement \(name)"
    }
}
