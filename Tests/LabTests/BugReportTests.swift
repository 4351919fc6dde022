import Foundation
import Matrix
import Reports
import Testing
import XfrmLabTesting

extension Trait where Self == ConditionTrait {
    /// A destructive report (can oops, hang RTNL or leak a namespace on an affected kernel)
    /// runs only on a kernel that may break: a VM.
    static var disposableKernel: Self {
        let k = KernelSituation.current
        return .enabled(if: k.disposable, Comment(rawValue: "destructive: runs only in a VM (\(k.disposableReason))"))
    }
}

extension Trait where Self == ConditionTrait {
    /// strongSwan's charon with kernel-libipsec, as the report's `needs` probes it.
    static var needsLibIPsecReport: Self {
        let missing = Requirement.missing(Requirement.libipsec)
        return .enabled(if: missing == nil, Comment(rawValue: missing ?? ""))
    }
}

let reportsDirectory = repositoryRoot + "/Fixtures/reports"

/// Runs one report here and holds its verdict against the one its fix history expects.
func check(_ id: String) async throws {
    let report = try BugReport.load(directory: reportsDirectory + "/" + id)
    let outcome = try await ReportRunner.run(report, repositoryRoot: repositoryRoot)
    print(outcome)
    #expect(outcome.verdict.kind != .notApplicable, "the test's traits let it run, but: \(outcome.verdict.reason)")
    #expect(outcome.matches, "\(id): \(outcome.verdict.kind.title), expected \(outcome.expected.title) (\(outcome.expectedWhy)); evidence: \(outcome.verdict.reason)")
}

/// Every public bug report in Fixtures/reports, reproduced on this kernel: REPRODUCES or FIXED
/// as its fix history says for this kernel's version; skipped with the probed reason where the
/// kernel lacks what it needs, and on the host when it is destructive.
@Suite("Public bug reports reproduced on this kernel", .tags(.privileged), .needsNamespaces, .serialized)
struct BugReportTests {
    @Test("xfrmi-netns-teardown: namespaces holding xfrm interfaces are released in every deletion order (22d6552f827e, 5.3)",
          .requires(.xfrmInterface), .disposableKernel)
    func xfrmiNetnsTeardown() async throws { try await check("xfrmi-netns-teardown") }

    @Test("xfrmi-phydev-optional: an xfrm interface needs no lower device (22d6552f827e, 5.3)", .requires(.xfrmInterface))
    func xfrmiPhydevOptional() async throws { try await check("xfrmi-phydev-optional") }

    @Test("xfrmi-changelink-eexist: a refused if_id change leaves the if_id alone (e9e7e85d75f3, 5.3)", .requires(.xfrmInterface))
    func xfrmiChangelinkEexist() async throws { try await check("xfrmi-changelink-eexist") }

    @Test("xfrmi-cross-netns-delete: an xfrm interface moved and deleted leaves no stale entry (c5d1030f2300, 5.3)",
          .requires(.xfrmInterface), .disposableKernel)
    func xfrmiCrossNetnsDelete() async throws { try await check("xfrmi-cross-netns-delete") }

    @Test("xfrmi-if-id-zero: an xfrm interface with if_id 0 is refused (8dce43919566, 5.17)", .requires(.xfrmInterface))
    func xfrmiIfIdZero() async throws { try await check("xfrmi-if-id-zero") }

    @Test("xfrmi-external-mode: collect-metadata xfrm interfaces (abc340b38ba2)", .requires(.xfrmInterface))
    func xfrmiExternalMode() async throws { try await check("xfrmi-external-mode") }

    @Test("vti-duplicate-endpoints: a second VTI with the same endpoints is EEXIST (behaviour)", .requires(.vti))
    func vtiDuplicateEndpoints() async throws { try await check("vti-duplicate-endpoints") }

    @Test("policy-mark-mask-identity: policies are identified by mark and mask, not priority (4f47e8ab6ab7, 5.8)",
          .requires(.policyMark))
    func policyMarkMaskIdentity() async throws { try await check("policy-mark-mask-identity") }

    @Test("policy-if-id-zero: XFRMA_IF_ID 0 on a policy is accepted (behaviour: the refusal was reverted)",
          .requires(.policyInterfaceID))
    func policyIfIdZero() async throws { try await check("policy-if-id-zero") }

    @Test("sa-prefixlen-unspec: an AF_UNSPEC selector's prefix length is checked (CVE-2024-50142, 3f0ab59e6537, 6.12 / 6.1.115)",
          .requires(.xfrmPolicy))
    func saPrefixlenUnspec() async throws { try await check("sa-prefixlen-unspec") }

    @Test("migrate-direction: XFRM_MSG_MIGRATE refuses a direction out of range (CVE-2017-11600, 7bab09631c2a, 4.13)",
          .requires(.xfrmPolicy), .requires(.migrate), .disposableKernel)
    func migrateDirection() async throws { try await check("migrate-direction") }

    @Test("vti-mark-preserved: VTI keeps the packet's mark on transmit and restores it after receive (behaviour)",
          .requires(.esp), .requires(.vti), .requires(.nflog))
    func vtiMarkPreserved() async throws { try await check("vti-mark-preserved") }

    @Test("output-mark-inbound: an inbound SA's output mark lands on the decrypted packet, masked (9b42c1f179a6, 4.19)",
          .requires(.esp), .requires(.xfrmInterface), .requires(.outputMarkMask), .requires(.nftables), .requires(.nflog))
    func outputMarkInbound() async throws { try await check("output-mark-inbound") }

    @Test("xfrmi-host-to-host-loop: a /32-to-/32 tunnel over an xfrm interface loops without an output mark and a fwmark rule (behaviour)",
          .requires(.esp), .requires(.xfrmInterface))
    func xfrmiHostToHostLoop() async throws { try await check("xfrmi-host-to-host-loop") }

    @Test("connmark-inbound-sa: a restored connection mark picks the reply's SA, as strongSwan's connmark plugin does (behaviour)",
          .requires(.esp), .requires(.policyMark), .requires(.nftables), .requires(.conntrackMark), .requires(.nflog))
    func connmarkInboundSa() async throws { try await check("connmark-inbound-sa") }

    @Test("policy-optional-tunnel-template: an outbound policy with an optional tunnel-mode template is refused (3d776e31c841, 6.4 / 6.1.30)",
          .requires(.xfrmPolicy))
    func policyOptionalTunnelTemplate() async throws { try await check("policy-optional-tunnel-template") }

    @Test("sa-direction: an SA added with XFRMA_SA_DIR out reports its direction back (a4a87fa4e96c, 6.10)", .requires(.esp))
    func saDirection() async throws { try await check("sa-direction") }

    @Test("netlink-opener-credentials: a socket a user namespace's root opened does not administer the initial namespace's (CVE-2014-0181, behaviour)",
          .requires(.userNamespaces), .requires(.xfrmPolicy))
    func netlinkOpenerCredentials() async throws { try await check("netlink-opener-credentials") }

    @Test("libipsec-host-to-host: kernel-libipsec host to host loops into the TUN device without the fwmark options (behaviour)",
          .tags(.daemons), .needsLibIPsecReport)
    func libipsecHostToHost() async throws { try await check("libipsec-host-to-host") }
}

/// The reports themselves: files that load, one reproduction per folder, verdicts computed.
@Suite("Bug report files and verdicts")
struct BugReportFileTests {
    @Test("every folder in Fixtures/reports loads and has its steps (in report.yaml or registered Swift), and every Swift reproduction a folder")
    func catalogMatchesFolders() throws {
        let reports = try BugReport.loadAll(directory: reportsDirectory)
        let folders = try FileManager.default.contentsOfDirectory(atPath: reportsDirectory).filter {
            var dir: ObjCBool = false
            return FileManager.default.fileExists(atPath: reportsDirectory + "/" + $0, isDirectory: &dir) && dir.boolValue
        }
        #expect(Set(reports.map(\.id)) == Set(folders), "folders without report.yaml: \(Set(folders).subtracting(reports.map(\.id)))")
        // Steps in the file or in Swift, never both and never neither.
        #expect(Set(reports.filter { $0.script == nil }.map(\.id)) == Set(ReproductionCatalog.all.map(\.id)))
        #expect(reports.filter { $0.script != nil }.count >= 6, "reports in script form: \(reports.filter { $0.script != nil }.map(\.id))")
        #expect(reports.count >= 15, "\(reports.count) reports")
        for r in reports {
            #expect(!r.sources.isEmpty && r.sources.allSatisfy { $0.hasPrefix("https://") }, "\(r.id): \(r.sources)")
            // The loader refuses a fix without `release:` (a version or `unknown`).
            #expect(r.kind == .behaviour || !r.fixes.isEmpty, "\(r.id) names no fix")
        }
    }

    @Test("a fix in several commits, one with its mainline release unknown: fixed only with all, the unknown one judged by its backports alone, and said so")
    func severalFixes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xlreport-several-\(getpid())/tunnel-changelink-netns-admin").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path) }
        let text = """
            id: tunnel-changelink-netns-admin
            title: t
            kind: bug
            symptom: s
            sources: [https://example.org/x]
            fix:
              - { part: xfrmi, commit: 0123456789ab, subject: "xfrm: a", release: "6.14", backports: ["6.1.130", "6.12.20"] }
              - { part: vti, commit: 123456789abc, subject: "vti: b", release: unknown, backports: ["6.1.131"] }
            topology: topology.yaml
            observable: o

            """
        _ = FileManager.default.createFile(atPath: dir + "/topology.yaml", contents: Data("name: t\nhosts: [{ name: a }]\n".utf8))
        let report = try BugReport.parse(text, path: dir + "/report.yaml", directory: dir)
        #expect(report.fixes.map(\.part) == ["xfrmi", "vti"] && report.fixes[1].release == nil)
        func on(_ v: String) -> (kind: ReportVerdict.Kind, why: String) {
            report.expectedVerdict(on: KernelSituation(release: v, version: KernelVersion(parsing: v), disposable: true, disposableReason: ""))
        }
        #expect(on("6.1.131").kind == .fixed, "\(on("6.1.131"))")
        let between = on("6.1.130")  // the xfrmi commit is in, the vti one not yet
        #expect(between.kind == .reproduces && between.why.hasPrefix("vti: 6.1.130 predates 6.1.131") && !between.why.contains("xfrmi"), "\(between)")
        // 6.12.20 has the xfrmi commit; the vti one has no backport there and no known release.
        let unknown = on("6.12.30")
        #expect(unknown.kind == .reproduces && unknown.why.contains("mainline release with 123456789abc") && unknown.why.contains("no backport to 6.12"), "\(unknown)")
        #expect(on("6.18.1").kind == .reproduces, "a release after the xfrmi fix still lacks the vti one, as far as the history knows")
        // Each commit must say its release (or unknown), and name its part when there are several.
        let noRelease = text.replacingOccurrences(of: "release: unknown, ", with: "")
        let e1 = #expect(throws: ReportError.self) { try BugReport.parse(noRelease, path: "r.yaml", directory: dir) }
        #expect(e1?.field == "fix[1].release" && e1?.line == 8 && e1?.message.contains("or unknown") == true, "\(String(describing: e1))")
        let noPart = text.replacingOccurrences(of: "part: vti, ", with: "")
        let e2 = #expect(throws: ReportError.self) { try BugReport.parse(noPart, path: "r.yaml", directory: dir) }
        #expect(e2?.field == "fix[1].part" && e2?.line == 8, "\(String(describing: e2))")

        // A verdict per part, each held against its own commit's history.
        let kernel = KernelSituation(release: "6.1.130", version: KernelVersion(parsing: "6.1.130"), disposable: true, disposableReason: "")
        let asHistory = ReportRunner.judge(report, kernel: kernel, observation: Observation(parts: [
            .init("xfrmi", bugPresent: false, evidence: ["xfrmi changelink → EPERM"]),
            .init("vti", bugPresent: true, evidence: ["vti changelink → accepted"]),
        ]))
        #expect(asHistory.verdict.kind == .reproduces && asHistory.expected == .reproduces && asHistory.matches, "\(asHistory)")
        #expect(asHistory.parts.map(\.expected) == [.fixed, .reproduces])
        // The first newcomer run: vti reproduced while the xfrmi step failed for its own reason
        // (a bare EINVAL). The whole says REPRODUCES, as expected; the part says it could not tell.
        let blind = ReportRunner.judge(report, kernel: kernel, observation: Observation(parts: [
            .init("xfrmi", bugPresent: nil, evidence: ["xfrmi changelink → EINVAL (the request named a lower device)"]),
            .init("vti", bugPresent: true, evidence: ["vti changelink → accepted"]),
        ]))
        #expect(blind.verdict.kind == .reproduces && blind.expected == .reproduces)
        #expect(!blind.matches && blind.partsNotAsExpected.map(\.part.name) == ["xfrmi"], "\(blind)")
        #expect(blind.description.contains("part      xfrmi: INCONCLUSIVE, expected FIXED — NOT AS EXPECTED"), "\(blind)")
        // A part that contradicts its history (xfrmi still accepting on a kernel with its fix).
        let contradiction = ReportRunner.judge(report, kernel: kernel, observation: Observation(parts: [
            .init("xfrmi", bugPresent: true, evidence: ["xfrmi changelink → accepted"]),
            .init("vti", bugPresent: true, evidence: ["vti changelink → accepted"]),
        ]))
        #expect(!contradiction.matches && contradiction.partsNotAsExpected.map(\.part.name) == ["xfrmi"], "\(contradiction)")
        // Nothing reproduced, but a part could not tell: the whole is INCONCLUSIVE, never FIXED.
        let later = KernelSituation(release: "6.1.140", version: KernelVersion(parsing: "6.1.140"), disposable: true, disposableReason: "")
        let unsure = ReportRunner.judge(report, kernel: later, observation: Observation(parts: [
            .init("xfrmi", bugPresent: false, evidence: ["→ EPERM"]), .init("vti", bugPresent: nil, evidence: ["→ EINVAL"]),
        ]))
        #expect(unsure.verdict.kind == .inconclusive && unsure.expected == .fixed && !unsure.matches, "\(unsure)")
    }

    @Test("the expected verdict follows the fix's release and its stable backports")
    func expectedFromHistory() throws {
        let report = try BugReport.load(directory: reportsDirectory + "/sa-prefixlen-unspec")
        func on(_ v: String, disposable: Bool = true) -> ReportVerdict.Kind {
            report.expectedVerdict(on: KernelSituation(release: v, version: KernelVersion(parsing: v), disposable: disposable, disposableReason: "")).kind
        }
        #expect(on("6.12.117") == .fixed)
        #expect(on("6.1.192") == .fixed)   // Debian 6.1.0-56
        #expect(on("6.1.114") == .reproduces)
        #expect(on("6.1.115") == .fixed)
        #expect(on("6.11.5") == .reproduces)
        #expect(on("6.2.16") == .reproduces)  // a series without a backport
        #expect(on("6.18.44", disposable: false) == .fixed)
        // A kernel built without this fix (a mutant) must reproduce it whatever its version says;
        // another report's mutant changes nothing here.
        let mutant = KernelSituation(release: "6.1.192-xfrmlab-mutant", version: KernelVersion(parsing: "6.1.192"), disposable: true,
                                     disposableReason: "", mutations: ["sa-prefixlen-unspec"])
        #expect(report.expectedVerdict(on: mutant).kind == .reproduces)
        #expect(report.expectedVerdict(on: mutant).why.contains("3f0ab59e6537"))
        var other = mutant
        other.mutations = ["xfrmi-if-id-zero"]
        #expect(report.expectedVerdict(on: other).kind == .fixed)
    }

    @Test("every mutant patch belongs to a report with a fix, names that fix's commit, and is a diff of net/ only")
    func mutantsNameTheirFix() throws {
        let mutants = Mutants.all(series: "6.1", reportsDirectory: reportsDirectory)
        #expect(mutants.count >= 11, "\(mutants.map(\.report))")
        for m in mutants {
            let report = try BugReport.load(directory: reportsDirectory + "/" + m.report)
            let fix = try #require(report.fix, "\(m.report) has a mutant but no fix")
            #expect(m.summary.contains(String(fix.commit.prefix(12))), "\(m.path) does not name \(fix.commit.prefix(12))")
            let text = try String(contentsOfFile: m.path, encoding: .utf8)
            let files = text.split(separator: "\n").filter { $0.hasPrefix("+++ ") }
            #expect(!files.isEmpty && files.allSatisfy { $0.hasPrefix("+++ b/net/") }, "\(m.path): \(files)")
        }
    }

    @Test("a report file with a mistake is refused with file, line, column and field")
    func badFileNamesLineAndField() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xlreport-\(getpid())/bad-report").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path) }
        let text = """
            id: bad-report
            title: t
            kind: bug
            symptom: s
            sources: [https://example.org/x]
            fix:
              commit: 22d6552f827e
              subject: s
              release: "5.x"
            topology: north-east-west
            observable: o

            """
        let error = #expect(throws: ReportError.self) { try BugReport.parse(text, path: dir + "/report.yaml", directory: dir) }
        #expect(error?.description == dir + "/report.yaml:9:12: fix.release: \"5.x\" is not a kernel version (like 5.3 or 6.1.115)")
        let unknownNeed = text.replacingOccurrences(of: "observable: o", with: "observable: o\nneeds: [xfrmi, warp-drive]")
        let e2 = #expect(throws: ReportError.self) { try BugReport.parse(unknownNeed.replacingOccurrences(of: "5.x", with: "5.3"), path: "r.yaml", directory: dir) }
        #expect(e2?.field == "needs[1]" && e2?.line == 12, "\(String(describing: e2))")
    }

    @Test("`xfrmlab report new` lays out a folder whose report.yaml loads, and refuses a bad or existing ID")
    func scaffold() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("xlscaffold-\(getpid())").path
        try FileManager.default.createDirectory(atPath: root + "/Sources/Reports/Catalog", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let created = try ReportScaffold.create(id: "demo-report", repositoryRoot: root)
        #expect(created.files.count == 3 && created.files.last?.hasSuffix("Catalog/DemoReport.swift") == true)
        let report = try BugReport.load(directory: root + "/Fixtures/reports/demo-report")
        #expect(report.id == "demo-report" && report.kind == .bug && report.needs == ["xfrm-policy"])
        #expect(created.nextSteps.contains { $0.contains("ReproductionCatalog.all") })
        #expect(throws: ReportError.self) { try ReportScaffold.create(id: "demo-report", repositoryRoot: root) }
        for bad in ["Demo", "demo_report", "-demo", "demo--x", "9demo"] {
            #expect(throws: ReportError.self, "\(bad)") { try ReportScaffold.create(id: bad, repositoryRoot: root) }
        }
    }

    /// The verdict is computed from what the kernel did, not written in: the same reproduction,
    /// held against a copy of its report that claims the bug is still present everywhere (a fix
    /// in a release that does not exist), must come out as a mismatch, with the evidence.
    @Test("a deliberately wrong expectation (bug claimed present where it is fixed) fails, with the evidence",
          .tags(.privileged), .needsNamespaces, .requires(.policyMark))
    func wrongExpectationFails() async throws {
        var report = try BugReport.load(directory: reportsDirectory + "/policy-mark-mask-identity")
        // On a kernel built without this fix (the mutant kernel) the bug is there: the wrong claim
        // is then "fixed everywhere", held against the kernel as if it were not a mutant.
        var kernel = KernelSituation.current
        let undone = kernel.mutations.contains(report.id)
        kernel.mutations = []
        report.fix?.release = undone ? KernelVersion([1, 0]) : KernelVersion([99, 0])
        report.fix?.backports = []
        let outcome = try await ReportRunner.run(report, repositoryRoot: repositoryRoot, kernel: kernel)
        print(outcome)
        #expect(outcome.expected == (undone ? .fixed : .reproduces))
        #expect(outcome.verdict.kind == (undone ? .reproduces : .fixed), "\(outcome.verdict)")
        #expect(!outcome.matches)
        #expect(outcome.description.contains("NOT AS EXPECTED") && outcome.verdict.reason.contains("[duplicate] lab$ ip xfrm policy add"), "\(outcome)")
    }
}

/// Reports whose steps are written in report.yaml: how they load, what a mistake says, and a
/// reporter's shell script made into one outside the repository and reproduced here.
@Suite("Bug reports in script form")
struct BugReportScriptTests {
    static let topology = "name: t\nhosts:\n  lab: {}\nnetworks: []\n"

    /// A report folder in a temporary directory, with `body` (steps and observable) after the history.
    static func folder(_ id: String, _ body: String, topology: String = topology) throws -> (dir: String, text: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xlscript-\(getpid())-\(UInt32.random(in: 0...UInt32.max))/\(id)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/topology.yaml", contents: Data(topology.utf8))
        let text = """
            id: \(id)
            title: t
            kind: behaviour
            symptom: s
            sources: [https://example.org/x]
            topology: topology.yaml

            """ + body
        return (dir, text)
    }

    @Test("steps load with their conditions; a step the observable does not look at must succeed; mistakes name line and field")
    func stepsLoad() throws {
        let (dir, text) = try Self.folder("script-load", """
            steps:
              - on: lab
                run: ip link add d0 type dummy
              - id: change
                on: lab
                run: ip link set d0 mtu 100000
              - id: zero
                on: lab
                netlink:
                  type: RTM_NEWLINK
                  flags: [create, excl]
                  header: ifinfomsg
                  attributes:
                    - IFLA_IFNAME: ipsec0
                    - IFLA_LINKINFO:
                        - IFLA_INFO_KIND: xfrm
                        - IFLA_INFO_DATA:
                            - IFLA_XFRM_IF_ID: u32 0
                not-applicable-if: fails with EOPNOTSUPP
            observable:
              text: o
              bug:
                - change succeeds
                - all: [zero succeeds, "kernel log shows 'if_id'"]

            """)
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path) }
        let report = try BugReport.parse(text, path: dir + "/report.yaml", directory: dir)
        let script = try #require(report.script)
        #expect(script.steps.map(\.id) == ["s1", "change", "zero"])
        #expect(script.steps[0].must?.description == "s1 succeeds", "unwatched steps must succeed")
        #expect(script.steps[1].must == nil && script.steps[2].notApplicableIf?.description == "zero fails with EOPNOTSUPP")
        #expect(script.bug?.description == "change succeeds, or zero succeeds, and kernel log shows \"if_id\"")
        guard case .netlink(let request, let proto) = script.steps[2].action else { Issue.record("not a netlink step"); return }
        #expect(proto == "route" && request.type == 16 && request.header.count == 16)
        #expect(request.summary == "netlink RTM_NEWLINK IFLA_IFNAME=ipsec0 IFLA_LINKINFO[IFLA_INFO_KIND=xfrm IFLA_INFO_DATA[IFLA_XFRM_IF_ID=0]]")
        // The bytes iproute2 would not send: if_id 0 nested in IFLA_INFO_DATA.
        #expect(request.encoded().suffix(8) == [8, 0, 2, 0, 0, 0, 0, 0])

        func refused(_ from: String, _ to: String) -> ReportError? {
            #expect(throws: ReportError.self) { try BugReport.parse(text.replacingOccurrences(of: from, with: to), path: "r.yaml", directory: dir) }
        }
        let e1 = refused("- change succeeds", "- chnage succeeds")
        #expect(e1?.field == "observable.bug[0]" && e1?.line == 29 && e1?.message.contains("\"chnage\" is not a step") == true, "\(String(describing: e1))")
        let e2 = refused("  - on: lab\n    run: ip link add", "  - on: east\n    run: ip link add")
        #expect(e2?.field == "steps[0].on" && e2?.message.contains("not a host") == true, "\(String(describing: e2))")
        let e3 = refused("IFLA_XFRM_IF_ID: u32 0", "IFLA_XFRM_IFID: u32 0")
        #expect(e3?.field.hasSuffix("IFLA_XFRM_IFID") == true && e3?.line == 24, "\(String(describing: e3))")
        let e4 = refused("fails with EOPNOTSUPP", "fails with ENOTHING")
        #expect(e4?.field == "steps[2].not-applicable-if" && e4?.message.contains("not an errno name") == true, "\(String(describing: e4))")
        let e5 = refused("run: ip link set d0 mtu 100000", "run: ip link set d0 mtu 100000\n    netlink: {type: RTM_NEWLINK}")
        #expect(e5?.field == "steps[1]" && e5?.message.contains("one of run") == true, "\(String(describing: e5))")
    }

    @Test("on a host owned by a user namespace, a step runs as that namespace's root (nobody outside)",
          .tags(.privileged), .needsNamespaces, .requires(.userNamespaces))
    func stepOnUserNamespaceHost() async throws {
        let (dir, text) = try Self.folder("script-userns", """
            steps:
              - id: map
                on: lab
                run: cat /proc/self/uid_map
              - id: link
                on: lab
                run: ip link add br0 type bridge
            observable:
              text: o
              bug:
                all: [map shows /^ *0 +65534 +1$/, link succeeds]

            """, topology: "name: t\nhosts:\n  lab:\n    user-namespace: true\n")
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path) }
        _ = FileManager.default.createFile(atPath: dir + "/report.yaml", contents: Data(text.utf8))
        let outcome = try await ReportRunner.run(try BugReport.load(directory: dir, repositoryRoot: repositoryRoot), repositoryRoot: repositoryRoot)
        #expect(outcome.verdict.kind == .reproduces && outcome.matches, "\(outcome)")
    }

    @Test("on a mutant kernel, a folder from outside the catalogue that names an undone fix commit counts as mutated; a catalogue report sharing the commit does not")
    func undoneByCommit() throws {
        let kernel = KernelSituation(release: "6.1.192-xfrmlab-mutant", version: KernelVersion(parsing: "6.1.192"), disposable: true,
                                     disposableReason: "", mutations: ["xfrmi-phydev-optional"])
        // Its mutant undoes only phydev-optional's half of 22d6552f827e.
        let teardown = try BugReport.load(directory: reportsDirectory + "/xfrmi-netns-teardown")
        #expect(ReportRunner.undone(teardown, on: kernel, repositoryRoot: repositoryRoot).mutations == ["xfrmi-phydev-optional"])
        let text = try String(contentsOfFile: reportsDirectory + "/xfrmi-phydev-optional/report.yaml", encoding: .utf8)
            .replacingOccurrences(of: "id: xfrmi-phydev-optional", with: "id: phydev-from-a-script")
        let (dir, _) = try Self.folder("phydev-from-a-script", "")
        defer { try? FileManager.default.removeItem(atPath: URL(fileURLWithPath: dir).deletingLastPathComponent().path) }
        let copy = try BugReport.parse(text, path: dir + "/report.yaml", directory: dir)
        let mutated = ReportRunner.undone(copy, on: kernel, repositoryRoot: repositoryRoot)
        #expect(mutated.mutations.contains("phydev-from-a-script") && copy.expectedVerdict(on: mutated).kind == .reproduces)
        #expect(copy.expectedVerdict(on: kernel).kind == .fixed, "without the commit match, 6.1.192 ≥ 5.3 says fixed")
    }

    @Test("command lines split like a shell; pipes, variables and redirections go to sh")
    func shellWords() {
        #expect(ShellWords.split(#"ip link set xfrm1 type xfrm dev lo if_id 2"#) == ["ip", "link", "set", "xfrm1", "type", "xfrm", "dev", "lo", "if_id", "2"])
        #expect(ShellWords.split(#"nft 'add table inet t' "x y" a\ b"#) == ["nft", "add table inet t", "x y", "a b"])
        #expect(ShellWords.split("ip -d link show | grep if_id") == nil)
        #expect(ShellWords.split("echo $X") == nil && ShellWords.split("cat /proc/net/xfrm_stat > f") == nil)
        #expect(ShellWords.split("echo 'unterminated") == nil)
    }

    @Test("a reporter's shell script, imported with --from-script into a folder outside the repository, reproduces here with the verdict its history predicts",
          .tags(.privileged), .needsNamespaces, .requires(.xfrmPolicy))
    func fromScript() throws {
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("xlfromscript-\(getpid())").path
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let script = parent + "/repro.sh"
        // As sent to a list: the namespaces, the commands, a word on what shows the bug.
        let text = """
            #!/bin/sh
            # title: An outbound policy may carry an optional (level use) tunnel-mode template
            # source: https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/commit/?id=3d776e31c841
            # fix: 3d776e31c841 "xfrm: Reject optional tunnel/BEET mode templates in outbound policies" 6.4 backports 6.1.30 6.3.4
            # needs: xfrm-policy
            set -e
            ip netns add lab
            ip -n lab xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir in \\
                tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel level use
            ip -n lab xfrm policy add src 10.1.0.0/24 dst 10.2.0.0/24 dir out \\
                tmpl src 192.0.2.1 dst 192.0.2.2 proto esp mode tunnel level use
            # bug: succeeds
            # must: succeeds
            # must: shows "not allowed in outbound policy"
            ip netns exec lab ip xfrm policy list
            ip link add dummy0 type dummy
            for i in 1 2; do ip -n lab xfrm policy list; done
            ip netns del lab

            """
        _ = FileManager.default.createFile(atPath: script, contents: Data(text.utf8))
        let made = try xfrmlab(["report", "new", "optional-template-outbound", "--from-script", script, "--directory", parent])
        #expect(made.succeeded, "\(made)")
        let said = made.standardOutput
        // What could not be mapped, with its line: the machine's own namespace, a loop, the deletion.
        #expect(said.contains("line 16: `ip link add dummy0 type dummy`: runs in the machine's own namespace"), "\(said)")
        #expect(said.contains("line 17:") && said.contains("needs a shell") && said.contains("line 18:") && said.contains("deletes its namespaces"), "\(said)")
        #expect(!said.contains("still to write"), "every field came from the script: \(said)")
        let folder = parent + "/optional-template-outbound"
        let report = try BugReport.load(directory: folder, repositoryRoot: repositoryRoot)
        #expect(report.script?.steps.map(\.host) == ["lab", "lab", "lab"] && report.fix?.backports.map(\.description) == ["6.1.30", "6.3.4"])

        // Reproduced as a user would: `xfrmlab reproduce PATH`, from outside the repository.
        let run = try xfrmlab(["reproduce", folder, "--json"])
        let json = try JSONSerialization.jsonObject(with: Data(run.standardOutput.utf8)) as? [String: Any]
        // (On a kernel built without this fix, as the catalogue's report with the same commit.)
        let expected = report.expectedVerdict(on: ReportRunner.undone(report, on: .current, repositoryRoot: repositoryRoot))
        #expect(json?["verdict"] as? String == expected.kind.rawValue && json?["matches"] as? Bool == true && run.status == 0,
                "expected \(expected.kind.title) (\(expected.why)): \(run.standardOutput) \(run.standardError)")
    }
}

/// `xfrmlab reproduce PATH --kernel K`: the folder (copied beside the results) runs in the guest.
@Suite("A report folder from outside the repository, in a VM", .tags(.privileged), .needsNamespaces)
struct ReportFolderTests {
    static let folder = ProcessInfo.processInfo.environment[GuestDriver.reportFolderKey]

    @Test("the folder's report gives the verdict its history expects on this kernel (or says why it cannot run)",
          .enabled(if: folder != nil, "runs only for `xfrmlab reproduce PATH --kernel K` (\(GuestDriver.reportFolderKey) names the folder)"))
    func reportFolder() async throws {
        let report = try BugReport.load(directory: try #require(Self.folder), repositoryRoot: repositoryRoot)
        let outcome = try await ReportRunner.run(report, repositoryRoot: repositoryRoot)
        print(outcome)
        #expect(outcome.verdict.kind == .notApplicable || outcome.matches,
                "\(report.id): \(outcome.verdict.kind.title), expected \(outcome.expected.title) (\(outcome.expectedWhy)); evidence: \(outcome.verdict.reason)")
    }
}
