import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink

/// One thing the kernel (or this machine's tools) can or cannot do, with the answer it gave
/// when asked: the request tried and the kernel's own words back.
public struct Capability: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Name: String, CaseIterable, Sendable, Hashable, Codable {
        case xfrmPolicy = "xfrm-policy"
        case policyMark = "policy-mark"
        case policyInterfaceID = "policy-if-id"
        case esp = "esp-aead"
        case espCBCHMAC = "esp-cbc-hmac"
        case udpEncapsulation = "udp-encap"
        case outputMarkMask = "output-mark-mask"
        case xfrmStatistics = "xfrm-stat"
        case vti
        case vti6
        case xfrmInterface = "xfrmi"
        case xfrmInterfaceExternal = "xfrmi-external"
        case migrate = "xfrm-migrate"
        case ipcomp
        case userNamespaces = "user-namespaces"
        case nftables
        case nflog
        case conntrackMark = "ct-mark"
        case iptablesNFT = "iptables-nft"
        case iptablesLegacy = "iptables-legacy"

        /// What it is, in words ("xfrm interfaces").
        public var title: String {
            switch self {
            case .xfrmPolicy: return "XFRM policies"
            case .policyMark: return "XFRM policy marks"
            case .policyInterfaceID: return "if_id on XFRM policies"
            case .esp: return "ESP with rfc4106(gcm(aes))"
            case .espCBCHMAC: return "ESP with cbc(aes) and hmac(sha256)"
            case .udpEncapsulation: return "ESP in UDP"
            case .outputMarkMask: return "SA output marks with a mask"
            case .xfrmStatistics: return "XFRM statistics"
            case .vti: return "VTI"
            case .vti6: return "VTI6"
            case .xfrmInterface: return "xfrm interfaces"
            case .xfrmInterfaceExternal: return "xfrm interfaces in external mode"
            case .migrate: return "XFRM_MSG_MIGRATE (CONFIG_XFRM_MIGRATE)"
            case .ipcomp: return "IPcomp with deflate (CONFIG_INET_IPCOMP)"
            case .userNamespaces: return "user namespaces an unprivileged user may make (CONFIG_USER_NS)"
            case .nftables: return "nftables"
            case .nflog: return "NFLOG from nftables"
            case .conntrackMark: return "conntrack marks"
            case .iptablesNFT: return "iptables-nft"
            case .iptablesLegacy: return "iptables-legacy"
            }
        }

        /// Kernel features are probed over netlink; tools by running them.
        var isTool: Bool { [.nftables, .nflog, .conntrackMark, .iptablesNFT, .iptablesLegacy].contains(self) }
    }

    public var name: Name
    public var available: Bool
    /// What was tried and what came back: `RTM_NEWLINK kind xfrm → EOPNOTSUPP (Unknown device type)`.
    public var answer: String

    public init(name: Name, available: Bool, answer: String) {
        self.name = name
        self.available = available
        self.answer = answer
    }

    /// Why a test needing it is skipped: `kernel lacks xfrm interfaces: RTM_NEWLINK kind xfrm → …`.
    public var skipReason: String {
        "\(name.isTool ? "this machine" : "kernel") lacks \(name.title): \(answer)"
    }

    public var description: String { "\(name.rawValue): \(available ? "yes" : "no") — \(answer)" }
}

/// What this kernel and machine can do for IPsec labs, found by trying each thing in a
/// throwaway namespace (always deleted) and keeping the kernel's answer. Probed once per
/// process and group (kernel features over netlink; tools by running them).
public struct Capabilities: Sendable, Codable {
    public var kernel: String
    public var entries: [Capability]

    public subscript(name: Capability.Name) -> Capability {
        entries.first { $0.name == name } ?? Capability(name: name, available: false, answer: "not probed")
    }

    // MARK: - The per-process cache

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [Capability.Name: Capability] = [:]

    /// Every capability, probing what was not probed yet in this process.
    public static var current: Capabilities {
        Capabilities(kernel: kernelRelease(), entries: Capability.Name.allCases.map { capability($0) })
    }

    /// One capability, probing its group the first time.
    public static func capability(_ name: Capability.Name) -> Capability {
        lock.lock()
        defer { lock.unlock() }
        if let known = cache[name] { return known }
        let found = name.isTool ? probeTools() : probeKernel()
        for c in found { cache[c.name] = c }
        return cache[name] ?? Capability(name: name, available: false, answer: "not probed")
    }

    public static func kernelRelease() -> String { Namespaces.kernelRelease() }

    // MARK: - Probing

    nonisolated(unsafe) private static var counter = 0

    /// Runs `body` in a fresh namespace that is deleted afterwards; when none can be made,
    /// every capability of `names` is unavailable with that reason.
    static func inThrowawayNamespace(_ names: [Capability.Name], _ body: (Namespace) -> [Capability]) -> [Capability] {
        counter += 1
        let name = "xlprobe\(getpid())-caps\(counter)"
        let ns: Namespace
        do {
            ns = try Namespace.create(name: name)
        } catch {
            return names.map { Capability(name: $0, available: false, answer: "cannot create a network namespace to probe in: \(error)") }
        }
        defer { ns.delete() }
        return body(ns)
    }

    /// `PROBE → ERRNO (kernel message)`, the kernel's words verbatim.
    static func refusal(_ probe: String, _ error: Error) -> String {
        if let e = error as? NetlinkError {
            return "\(probe) → \(errnoName(e.errno)) (\(e.kernelMessage.map { $0.isEmpty ? errnoText(e.errno) : $0 } ?? errnoText(e.errno)))"
        }
        return "\(probe) → \(error)"
    }

    static func probeKernel() -> [Capability] {
        let names = Capability.Name.allCases.filter { !$0.isTool }
        return inThrowawayNamespace(names) { ns in
            var out: [Capability] = []
            func record(_ name: Capability.Name, _ available: Bool, _ answer: String) {
                out.append(Capability(name: name, available: available, answer: answer))
            }
            // Devices first: they need only rtnetlink.
            let lo = Int32(1)
            let links: [(Capability.Name, String, device: String, Request, (TunnelLinkInfo) -> String?)] = [
                (.vti, "RTM_NEWLINK kind vti", "xlvti",
                 LinkRequest.vti(namespace: ns.name, name: "xlvti", local: [192, 0, 2, 1], remote: [192, 0, 2, 2],
                                 inputKey: 1, outputKey: 1, up: false),
                 { $0.inputKey == 1 ? nil : "ikey read back as \($0.inputKey.map(String.init) ?? "nothing")" }),
                (.vti6, "RTM_NEWLINK kind vti6", "xlvti6",
                 LinkRequest.vti(namespace: ns.name, name: "xlvti6", local: parseAddress("2001:db8::1")!,
                                 remote: parseAddress("2001:db8::2")!, inputKey: 1, outputKey: 1, up: false),
                 { $0.inputKey == 1 ? nil : "ikey read back as \($0.inputKey.map(String.init) ?? "nothing")" }),
                (.xfrmInterface, "RTM_NEWLINK kind xfrm", "xlxfrm",
                 LinkRequest.xfrmInterface(namespace: ns.name, name: "xlxfrm", interfaceID: 7, link: lo, linkName: "lo", up: false),
                 { $0.interfaceID == 7 ? nil : "if_id read back as \($0.interfaceID.map(String.init) ?? "nothing")" }),
                // Kernels before 6.2 ignore IFLA_XFRM_COLLECT_METADATA: accepted is not enough, it must read back.
                (.xfrmInterfaceExternal, "RTM_NEWLINK kind xfrm external", "xlxfrmext",
                 LinkRequest.xfrmInterface(namespace: ns.name, name: "xlxfrmext", interfaceID: nil, external: true, up: false),
                 { $0.external ? nil : "IFLA_XFRM_COLLECT_METADATA not read back" }),
            ]
            for (name, probe, device, request, check) in links {
                do {
                    try ns.route.request(request)
                    let info = try ns.route.tunnelLinks().first { $0.link.name == device }
                    if let info, let problem = check(info) {
                        record(name, false, "\(probe) → accepted, but \(problem)")
                    } else if info == nil {
                        record(name, false, "\(probe) → accepted, but the device is not in the link dump")
                    } else {
                        record(name, true, "\(probe) → accepted")
                    }
                } catch {
                    record(name, false, refusal(probe, error))
                }
            }

            do {
                let stats = try ns.run { try String(contentsOfFile: "/proc/thread-self/net/xfrm_stat", encoding: .utf8) }
                let count = stats.split(separator: "\n").count
                record(.xfrmStatistics, count > 0, "read /proc/net/xfrm_stat → \(count) counters")
            } catch {
                record(.xfrmStatistics, false, "read /proc/net/xfrm_stat → \(error)")
            }

            // User namespaces: made as an unprivileged user would (nobody), owning a new network
            // namespace; off without CONFIG_USER_NS or with user.max_user_namespaces 0.
            let userProbe = "setpriv --reuid=65534 --regid=65534 --clear-groups unshare --user --map-root-user --net true"
            if Executable.find("setpriv") == nil || Executable.find("unshare") == nil {
                record(.userNamespaces, false, "\(userProbe) → setpriv or unshare not found on PATH (util-linux)")
            } else {
                do {
                    let r = try ns.execute(userProbe.split(separator: " ").map(String.init), timeout: 20)
                    let said = (r.standardError + r.standardOutput).trimmingCharacters(in: .whitespacesAndNewlines)
                    record(.userNamespaces, r.succeeded, "\(userProbe) → " + (r.succeeded ? "made" : "exit \(r.status) (\(said))"))
                } catch {
                    record(.userNamespaces, false, "\(userProbe) → \(error)")
                }
            }

            let xfrm: NetlinkSocket
            do {
                xfrm = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
            } catch {
                for name in [Capability.Name.xfrmPolicy, .policyMark, .policyInterfaceID, .migrate, .ipcomp, .esp, .espCBCHMAC, .udpEncapsulation, .outputMarkMask] {
                    record(name, false, "socket(AF_NETLINK, NETLINK_XFRM) → \(error)")
                }
                return out
            }
            defer { xfrm.close() }

            // Policies: plain, with a mark, with an if_id; each read back from a dump.
            let selector = XfrmSelector(source: "192.0.2.0/24", destination: "198.51.100.0/24")!
            let template = XfrmTemplate(source: [192, 0, 2, 1], destination: [198, 51, 100, 1], reqid: 1)
            let policies: [(Capability.Name, XfrmPolicy, (XfrmPolicy) -> Bool, String)] = [
                (.xfrmPolicy, XfrmPolicy(selector: selector, direction: .out, priority: 10, templates: [template]),
                 { $0.priority == 10 && $0.templates.count == 1 }, "priority and template"),
                (.policyMark, XfrmPolicy(selector: selector, direction: .out, priority: 10, mark: XfrmMark(0x1, mask: 0xff), templates: [template]),
                 { $0.mark == XfrmMark(0x1, mask: 0xff) }, "mark 0x1/0xff"),
                (.policyInterfaceID, XfrmPolicy(selector: selector, direction: .out, priority: 10, interfaceID: 7, templates: [template]),
                 { $0.interfaceID == 7 }, "if_id 7"),
            ]
            for (name, policy, check, what) in policies {
                let probe = "XFRM_MSG_NEWPOLICY " + policy.arguments
                do {
                    try xfrm.request(XfrmPolicyRequest.add(namespace: nil, policy))
                    let back = try xfrm.xfrmPolicies()
                    if back.contains(where: { $0.selector == policy.selector && $0.mark == policy.mark && $0.interfaceID == policy.interfaceID && check($0) }) {
                        record(name, true, "\(probe) → accepted, \(what) read back")
                    } else {
                        record(name, false, "\(probe) → accepted, but \(what) not read back (dump: \(back))")
                    }
                } catch {
                    record(name, false, refusal(probe, error))
                }
            }

            // Migration: moving a policy that does not exist reaches the policy lookup (ENOENT)
            // only where CONFIG_XFRM_MIGRATE is built in; elsewhere the kernel says ENOPROTOOPT.
            let migrate = XfrmPolicyRequest.migrate(
                namespace: nil, selector: XfrmSelector(source: "203.0.113.1/32", destination: "203.0.113.2/32")!, direction: .out,
                migrations: [XfrmMigration(oldSource: [203, 0, 113, 1], oldDestination: [203, 0, 113, 2],
                                           newSource: [203, 0, 113, 3], newDestination: [203, 0, 113, 4], reqid: 1)])
            let migrateProbe = "XFRM_MSG_MIGRATE of a policy that does not exist"
            do {
                try xfrm.request(migrate)
                record(.migrate, false, "\(migrateProbe) → accepted, where ENOENT was due")
            } catch let e as NetlinkError where e.errno == ENOENT {
                record(.migrate, true, refusal(migrateProbe, e) + ": built in, it looked the policy up")
            } catch {
                record(.migrate, false, refusal(migrateProbe, error))
            }

            // IPcomp: an SA with proto comp and deflate (its SPI is the 16-bit CPI).
            let comp = XfrmState(source: [192, 0, 2, 1], destination: [198, 51, 100, 1], proto: .comp, spi: 0x4242, reqid: 1,
                                 algorithms: [.compression(name: "deflate")])
            let compProbe = "XFRM_MSG_NEWSA proto comp spi 0x4242 comp deflate"
            do {
                try xfrm.request(XfrmStateRequest.add(namespace: nil, comp))
                record(.ipcomp, true, "\(compProbe) → accepted")
            } catch {
                record(.ipcomp, false, refusal(compProbe, error))
            }

            // States: ESP with each algorithm, then UDP encapsulation and the output mark with
            // whichever algorithm worked.
            var spi: UInt32 = 0x100
            func state(_ algorithms: [XfrmAlgorithm], encapsulation: XfrmEncapsulation? = nil, outputMark: XfrmMark? = nil) -> XfrmState {
                spi += 1
                return XfrmState(source: [192, 0, 2, 1], destination: [198, 51, 100, 1], spi: spi, reqid: 1,
                                 algorithms: algorithms, encapsulation: encapsulation, outputMark: outputMark)
            }
            let aead = [XfrmAlgorithm.aesGCM(key: .random(bits: 160))]
            let cbc = [XfrmAlgorithm.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))]
            // UDP encapsulation and the output mark are tried with an algorithm that worked, or
            // else with cbc-hmac, whose refusal is about ESP itself rather than an algorithm.
            var working: [XfrmAlgorithm]?
            for (name, algorithms) in [(Capability.Name.esp, aead), (.espCBCHMAC, cbc)] {
                let s = state(algorithms)
                let probe = "XFRM_MSG_NEWSA proto esp " + algorithms.map { "\($0)" }.joined(separator: " ")
                do {
                    try xfrm.request(XfrmStateRequest.add(namespace: nil, s))
                    record(name, true, "\(probe) → accepted")
                    if working == nil { working = algorithms }
                } catch {
                    record(name, false, refusal(probe, error))
                }
            }
            let extras: [(Capability.Name, XfrmState, (XfrmState) -> Bool, String)] = [
                (.udpEncapsulation, state(working ?? cbc, encapsulation: XfrmEncapsulation()),
                 { $0.encapsulation?.destinationPort == 4500 }, "encap espinudp 4500 4500"),
                (.outputMarkMask, state(working ?? cbc, outputMark: XfrmMark(0x10, mask: 0xff0)),
                 { $0.outputMark == XfrmMark(0x10, mask: 0xff0) }, "output-mark 0x10/0xff0"),
            ]
            for (name, s, check, what) in extras {
                let probe = "XFRM_MSG_NEWSA proto esp \(s.algorithms.first!.name) " + (name == .udpEncapsulation ? "\(s.encapsulation!)" : "output-mark 0x10 mask 0xff0")
                do {
                    try xfrm.request(XfrmStateRequest.add(namespace: nil, s))
                    if let back = try xfrm.xfrmState(destination: s.destination, spi: s.spi), check(back) {
                        record(name, true, "\(probe) → accepted, \(what) read back")
                    } else {
                        record(name, false, "\(probe) → accepted, but \(what) not read back")
                    }
                } catch {
                    record(name, false, refusal(probe, error))
                }
            }
            return out
        }
    }

    static func probeTools() -> [Capability] {
        let names = Capability.Name.allCases.filter(\.isTool)
        return inThrowawayNamespace(names) { ns in
            var out: [Capability] = []
            func run(_ name: Capability.Name, _ command: [String], input: String? = nil, shown: String) {
                guard let first = command.first, Executable.find(first) != nil else {
                    out.append(Capability(name: name, available: false, answer: "\(shown) → \(command.first ?? "?") not found on PATH"))
                    return
                }
                do {
                    let r = try ns.execute(command, input: input, timeout: 20)
                    let said = (r.standardError + r.standardOutput).trimmingCharacters(in: .whitespacesAndNewlines)
                        .replacingOccurrences(of: "\n", with: " ")
                    out.append(Capability(name: name, available: r.succeeded,
                                          answer: r.succeeded ? "\(shown) → loaded" : "\(shown) → exit \(r.status) (\(said))"))
                } catch {
                    out.append(Capability(name: name, available: false, answer: "\(shown) → \(error)"))
                }
            }
            let hook = "type filter hook output priority 0; policy accept;"
            func ruleset(_ table: String, _ rule: String) -> String {
                "table inet \(table) {\n  chain c {\n    \(hook)\n    \(rule)\n  }\n}\n"
            }
            run(.nftables, ["nft", "-f", "-"], input: ruleset("xlprobe", "counter"),
                shown: "nft add chain inet xlprobe c { \(hook) }")
            run(.nflog, ["nft", "-f", "-"], input: ruleset("xlprobe_log", "log group 1"),
                shown: "nft add rule inet xlprobe_log c log group 1")
            run(.conntrackMark, ["nft", "-f", "-"], input: ruleset("xlprobe_ct", "ct mark set 1"),
                shown: "nft add rule inet xlprobe_ct c ct mark set 1")
            run(.iptablesNFT, ["iptables-nft", "-w", "-A", "OUTPUT", "-j", "ACCEPT"], shown: "iptables-nft -A OUTPUT -j ACCEPT")
            run(.iptablesLegacy, ["iptables-legacy", "-w", "-A", "OUTPUT", "-j", "ACCEPT"], shown: "iptables-legacy -A OUTPUT -j ACCEPT")
            return out
        }
    }
}
