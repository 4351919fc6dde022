import Daemons
import Foundation
import Glibc
import Namespaces
import Testing
import Xfrm

/// Whether this process may create network namespaces, probed once by trying it.
public let namespaceProbe: (ok: Bool, reason: String) = {
    guard geteuid() == 0 else { return (false, "needs root: geteuid() = \(geteuid())") }
    do {
        let ns = try Namespace.create(name: "xlprobe\(getpid())")
        ns.delete()
        return (true, "")
    } catch {
        return (false, "cannot create a network namespace: \(error)")
    }
}()

extension Trait where Self == ConditionTrait {
    /// The test creates namespaces; skipped, with the probe's answer, where that fails.
    public static var needsNamespaces: Self {
        .enabled(if: namespaceProbe.ok, Comment(rawValue: namespaceProbe.reason))
    }

    /// The test needs `capability`; skipped, naming it and the kernel's answer, where the
    /// probe (run once per process in a throwaway namespace) found it missing:
    /// "kernel lacks xfrm interfaces: RTM_NEWLINK kind xfrm → EOPNOTSUPP (Unknown device type)".
    public static func requires(_ capability: Capability.Name) -> Self {
        let c = Capabilities.capability(capability)
        return .enabled(if: c.available, Comment(rawValue: c.skipReason))
    }

    /// The test is about the kernel refusing `capability`; skipped where the kernel has it.
    public static func lacks(_ capability: Capability.Name) -> Self {
        let c = Capabilities.capability(capability)
        return .enabled(if: !c.available, Comment(rawValue: "kernel has \(capability.title): \(c.answer)"))
    }

    /// The test runs `kind`; skipped, saying what was looked for, where it is not installed.
    public static func needsDaemon(_ kind: IKEDaemonKind) -> Self {
        let probe = Installation.probe(kind)
        return .enabled(if: probe.available, Comment(rawValue: "\(kind) not available: \(probe.reason)"))
    }

    /// The test runs `kind` from `installation` (a root filesystem or prefix, see
    /// `Installation.strongSwan(at:)`): skipped, saying what is missing, when it cannot.
    public static func needsDaemon(_ kind: IKEDaemonKind, from installation: String) -> Self {
        let found: Result<String, DaemonError> = kind == .strongSwan
            ? Installation.strongSwan(at: installation).map(\.description)
            : Installation.libreswan(at: installation).map(\.description)
        switch found {
        case .success: return .enabled(if: true)
        case .failure(let e): return .enabled(if: false, Comment(rawValue: "\(kind) from \(installation) not available: \(e.message)"))
        }
    }

    /// The test runs charon with kernel-libipsec (plugin and /dev/net/tun).
    public static var needsLibIPsec: Self {
        let reason: String
        switch Installation.libipsec {
        case .success: reason = ""
        case .failure(let e): reason = e.message
        }
        return .enabled(if: reason.isEmpty, Comment(rawValue: "kernel-libipsec not available: \(reason)"))
    }
}
