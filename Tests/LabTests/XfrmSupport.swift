import Foundation
import Testing
import Xfrm

extension Tag {
    /// Needs a kernel with ESP (and usually VTI or xfrm interfaces): runs in a VM (`make test`
    /// boots Debian's kernel with virtme-ng); skipped elsewhere with the probed reason.
    @Tag static var vm: Self
}

extension Trait where Self == ConditionTrait {
    /// The test needs `capability`; skipped, naming it and the kernel's answer, where the
    /// probe (run once per process in a throwaway namespace) found it missing:
    /// "kernel lacks xfrm interfaces: RTM_NEWLINK kind xfrm → EOPNOTSUPP (Unknown device type)".
    static func requires(_ capability: Capability.Name) -> Self {
        let c = Capabilities.capability(capability)
        return .enabled(if: c.available, Comment(rawValue: c.skipReason))
    }

    /// The test is about the kernel refusing `capability`; skipped where the kernel has it.
    static func lacks(_ capability: Capability.Name) -> Self {
        let c = Capabilities.capability(capability)
        return .enabled(if: !c.available, Comment(rawValue: "kernel has \(capability.title): \(c.answer)"))
    }
}
