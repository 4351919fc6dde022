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

    @Test("libipsec-host-to-host: kernel-libipsec host to host loops into the TUN device without the fwmark options (behaviour)",
          .tags(.daemons), .needsLibIPsecReport)
    func libipsecHostToHost() async throws { try await check("libipsec-host-to-host") }
}

/// The reports themselves: files that load, one reproduction per folder, verdicts computed.
@Suite("Bug report files and verdicts")
struct BugReportFileTests {
    @Test("every folder in Fixtures/reports loads and has a registered reproduction, and every reproduction a folder")
    func catalogMatchesFolders() throws {
        let reports = try BugReport.loadAll(directory: reportsDirectory)
        let folders = try FileManager.default.contentsOfDirectory(atPath: reportsDirectory).filter {
            var dir: ObjCBool = false
            return FileManager.default.fileExists(atPath: reportsDirectory + "/" + $0, isDirectory: &dir) && dir.boolValue
        }
        #expect(Set(reports.map(\.id)) == Set(folders), "folders without report.yaml: \(Set(folders).subtracting(reports.map(\.id)))")
        #expect(Set(reports.map(\.id)) == Set(ReproductionCatalog.all.map(\.id)))
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
        #expect(outcome.description.contains("NOT AS EXPECTED") && outcome.verdict.reason.contains("EEXIST"), "\(outcome)")
    }
}
