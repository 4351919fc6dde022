import Foundation

/// `xfrmlab report new ID`: the folder, the report file with every field, a topology stub and
/// the reproduction's Swift file, ready to fill in.
public enum ReportScaffold {
    public struct Created: Sendable {
        public var files: [String]
        public var nextSteps: [String]
    }

    /// The Swift name a report's code and test use: `xfrmi-if-id-zero` → `XfrmiIfIDZero`-like
    /// `XfrmiIfIdZero` (type) and `xfrmiIfIdZero` (test function).
    public static func typeName(_ id: String) -> String {
        id.split(separator: "-").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }

    public static func testName(_ id: String) -> String {
        let t = typeName(id)
        return t.prefix(1).lowercased() + t.dropFirst()
    }

    public static func create(id: String, repositoryRoot: String) throws -> Created {
        guard BugReport.isValid(id: id) else {
            throw ReportError(file: "", line: 0, column: 0, field: "ID",
                              message: "\"\(id)\" is not a report ID: lower-case words and digits joined by dashes, starting with a letter (xfrmi-changelink-eexist)")
        }
        let folder = repositoryRoot + "/Fixtures/reports/" + id
        let swift = repositoryRoot + "/Sources/Reports/Catalog/\(typeName(id)).swift"
        for path in [folder, swift] where FileManager.default.fileExists(atPath: path) {
            throw ReportError(file: path, line: 0, column: 0, field: "ID", message: "report \(id) exists already")
        }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let report = """
            # Bug report \(id): fill in every field; `xfrmlab reproduce \(id)` checks the file first.
            id: \(id)
            title: ONE LINE
            # bug: a kernel bug whose fix decides the verdict; behaviour: what every kernel does.
            kind: bug
            # In the reporter's words (quote the list message or issue).
            symptom: >-
              WHAT THE REPORTER SAW
            # Public sources: list message, issue, commit URLs (at least one).
            sources:
              - https://lore.kernel.org/…
            # The fix (kind bug): commit (12+ hex digits), subject, first mainline release, or
            # unknown (then only the backports decide); backports: first fixed point releases
            # of older stable series. A fix in several commits is a list, each with a part:
            #   fix:
            #     - { part: xfrmi, commit: …, subject: …, release: unknown, backports: [6.1.190] }
            #     - { part: vti, commit: …, subject: …, release: "6.13" }
            fix:
              commit: 000000000000
              subject: "SUBJECT OF THE FIX"
              release: "6.2"
              # backports: ["6.1.115"]
            # introduced: { commit: …, subject: …, release: … }
            # Capabilities from `xfrmlab probe` (xfrmi, vti, esp-aead, output-mark-mask …).
            needs: [xfrm-policy]
            # true when an affected kernel can oops, hang RTNL or leak a namespace: VMs only.
            destructive: false
            # A file in this folder, or the name of one in Topologies/.
            topology: topology.yaml
            # The sentence that separates a buggy kernel from a fixed one.
            observable: >-
              WHAT THE STEPS LOOK AT
            # Per-kernel overrides (a backport the history does not show):
            # kernels:
            #   - { kernel: ">=6.1 <6.2", expect: fixed, why: "…" }

            """
        let topology = """
            # One host for request/answer reports; add hosts and networks as the scenario needs.
            name: \(id)
            hosts:
              lab: {}
            networks: []

            """
        let code = """
            import Foundation
            import Glibc
            import Lab
            import Netlink
            import Xfrm

            /// \(id): WHAT THE BUG IS AND WHICH COMMIT FIXED IT (one paragraph, why this observable).
            enum \(typeName(id)) {
                static let reproduction = Reproduction("\(id)") { lab in
                    let ns = try lab.namespace("lab")
                    // The steps, in the harness's vocabulary; `ask` keeps the kernel's answer as evidence.
                    let answer = ask(ns.route, LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec0", interfaceID: 1, up: false))
                    return Observation(bugPresent: !answer.accepted, evidence: ["\\(answer)"])
                }
            }

            """
        try report.write(toFile: folder + "/report.yaml", atomically: true, encoding: .utf8)
        try topology.write(toFile: folder + "/topology.yaml", atomically: true, encoding: .utf8)
        try code.write(toFile: swift, atomically: true, encoding: .utf8)
        return Created(files: [folder + "/report.yaml", folder + "/topology.yaml", swift], nextSteps: [
            "fill in Fixtures/reports/\(id)/report.yaml (sources, fix, needs, observable)",
            "write the steps in Sources/Reports/Catalog/\(typeName(id)).swift",
            "register it: add \(typeName(id)).reproduction to ReproductionCatalog.all (Sources/Reports/Reproduction.swift)",
            "add its test to Tests/LabTests/BugReportTests.swift: @Test(\"\(id)\", <.requires for each need>) func \(testName(id))() async throws { try await check(\"\(id)\") }",
            "swift build --build-tests && xfrmlab reproduce \(id), then xfrmlab reproduce \(id) --kernel 6.1",
        ])
    }
}
