import Foundation
import Matrix
import Topology
import Yams

/// One public bug report (Fixtures/reports/<id>/report.yaml): where it comes from, what the
/// reporter saw, what separates a buggy kernel from a fixed one, and what the scenario needs.
public struct BugReport: Sendable {
    /// A kernel bug (its fix decides the verdict), or a behaviour of every kernel that a
    /// configuration must account for (its expectation holds on every kernel).
    public enum Kind: String, Sendable, CaseIterable { case bug, behaviour }

    public struct Commit: Sendable {
        public var commit: String
        public var subject: String
        /// The first upstream release with it ("5.3"); nil when not known (`release: unknown`):
        /// the verdict then rests on the backports alone.
        public var release: KernelVersion?
        /// First fixed point releases of older stable series ("6.1.115").
        public var backports: [KernelVersion]
        /// What part of the bug this commit fixes, when a fix is several commits (`xfrmi`, `vti6`).
        public var part: String?

        public init(commit: String, subject: String, release: KernelVersion?, backports: [KernelVersion] = [], part: String? = nil) {
            self.commit = commit
            self.subject = subject
            self.release = release
            self.backports = backports
            self.part = part
        }

        /// "e9e7e85d75f3 (\"subject\")", with its part when it has one.
        public var label: String { (part.map { "\($0): " } ?? "") + "\(commit.prefix(12)) (\"\(subject)\")" }
    }

    /// A per-kernel expectation that beats the computed one (a stable backport the history
    /// does not show, a distribution patch).
    public struct Override: Sendable {
        public var kernel: Expectations.Selector
        public var expect: ReportVerdict.Kind
        public var why: String
    }

    public var id: String
    public var title: String
    public var kind: Kind
    /// In the reporter's words.
    public var symptom: String
    /// List messages, issue URLs, commits: every report names its public source.
    public var sources: [String]
    /// The commits that fix the bug, each with its own release and backports (a fix made per
    /// device kind is several commits): the kernel is fixed when it has every one.
    public var fixes: [Commit]
    /// The first (for a one-commit fix, the only) fix.
    public var fix: Commit? {
        get { fixes.first }
        set {
            guard let newValue else { fixes = []; return }
            if fixes.isEmpty { fixes = [newValue] } else { fixes[0] = newValue }
        }
    }
    public var introduced: Commit?
    /// Capability names (Sources/Xfrm Capabilities: `xfrmi`, `esp-aead` …) or `strongswan-libipsec`.
    public var needs: [String]
    /// Can oops, hang RTNL or leak a namespace on an affected kernel: runs only in a VM.
    public var destructive: Bool
    /// A topology file in the report's folder, or the name of one in Topologies/.
    public var topology: String
    /// The sentence that separates a buggy kernel from a fixed one.
    public var observable: String
    /// For behaviour reports: what every kernel shows (default: reproduces).
    public var expect: ReportVerdict.Kind?
    public var overrides: [Override]
    /// The folder it was loaded from.
    public var directory: String
    /// Steps written in report.yaml (`steps:` and an `observable` with `bug` or `parts`); nil
    /// for a report whose steps are Swift (Sources/Reports/Catalog).
    public var script: ScriptSteps?

    /// The topology file's path.
    public func topologyPath(repositoryRoot: String) -> String {
        let local = directory + "/" + topology
        if FileManager.default.fileExists(atPath: local) { return local }
        let shared = repositoryRoot + "/Topologies/" + (topology.hasSuffix(".yaml") ? topology : topology + ".yaml")
        return shared
    }
}

/// A mistake in a report file: `Fixtures/reports/x/report.yaml:7:3: fix.release: "5.x" is not a kernel version`.
public struct ReportError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var line: Int
    public var column: Int
    public var field: String
    public var message: String
    public var description: String {
        let place = file.isEmpty ? "" : line == 0 ? "\(file): " : "\(file):\(line):\(column): "
        return place + (field.isEmpty ? "" : field + ": ") + message
    }
}

extension BugReport {
    /// What a report ID may look like: lower-case words joined by dashes (`xfrmi-changelink-eexist`).
    public static func isValid(id: String) -> Bool {
        guard let first = id.first, first.isLetter, id.count <= 60, !id.hasSuffix("-"), !id.contains("--") else { return false }
        return id.allSatisfy { ($0.isASCII && ($0.isLowercase || $0.isNumber)) || $0 == "-" }
    }

    static let keys: Set<String> = ["id", "title", "kind", "symptom", "sources", "fix", "introduced", "needs", "destructive",
                                    "topology", "observable", "expect", "kernels", "steps"]

    /// Loads `directory/report.yaml`; every mistake names file, line, column and field.
    /// A folder outside the repository finds a shared topology in `repositoryRoot`'s Topologies/.
    public static func load(directory: String, repositoryRoot: String? = nil) throws -> BugReport {
        let path = directory + "/report.yaml"
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ReportError(file: path, line: 0, column: 0, field: "", message: "cannot read: \(error.localizedDescription)")
        }
        return try parse(text, path: path, directory: directory, repositoryRoot: repositoryRoot)
    }

    public static func parse(_ text: String, path: String, directory: String, repositoryRoot: String? = nil) throws -> BugReport {
        let root: Node
        do {
            guard let node = try Yams.compose(yaml: text) else {
                throw ReportError(file: path, line: 1, column: 1, field: "", message: "empty file")
            }
            root = node
        } catch let e as ReportError {
            throw e
        } catch let e as YamlError {
            throw ReportError(file: path, line: 0, column: 0, field: "", message: "not YAML: \(e)")
        }
        let r = Reader(path: path)
        let top = try r.mapping(root, "")
        for (key, value) in top where !keys.contains(key) {
            throw r.error(value.key, key, "unknown key (known: \(keys.sorted().joined(separator: ", ")))")
        }
        func required(_ key: String) throws -> Node {
            guard let n = top[key]?.value else { throw r.error(root, key, "missing (required)") }
            return n
        }
        let id = try r.string(required("id"), "id")
        let folder = URL(fileURLWithPath: directory).lastPathComponent
        guard isValid(id: id) else { throw r.error(try required("id"), "id", "\"\(id)\" is not a report ID (lower-case words and digits joined by dashes)") }
        guard id == folder else { throw r.error(try required("id"), "id", "\"\(id)\" differs from its folder's name \"\(folder)\"") }
        let kindText = try r.string(required("kind"), "kind")
        guard let kind = Kind(rawValue: kindText) else {
            throw r.error(try required("kind"), "kind", "\"\(kindText)\" is not one of \(Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let sourcesNode = try required("sources")
        let sources = try r.strings(sourcesNode, "sources")
        if sources.isEmpty { throw r.error(sourcesNode, "sources", "name at least one public source") }
        for (i, s) in sources.enumerated() where !(s.hasPrefix("https://") || s.hasPrefix("http://")) {
            throw r.error(sourcesNode.sequence?[i] ?? sourcesNode, "sources[\(i)]", "\"\(s)\" is not a URL")
        }
        /// One commit's mapping; a fix's must say its release, or `unknown`.
        func commit(_ node: Node, _ key: String, releaseRequired: Bool) throws -> Commit {
            let m = try r.mapping(node, key)
            let known = ["backports", "commit", "part", "release", "subject"]
            for (k, v) in m where !known.contains(k) {
                throw r.error(v.key, "\(key).\(k)", "unknown key (known: \(known.joined(separator: ", ")))")
            }
            guard let c = m["commit"]?.value else { throw r.error(node, "\(key).commit", "missing (required)") }
            let hash = try r.string(c, "\(key).commit")
            guard hash.count >= 12, hash.allSatisfy(\.isHexDigit) else { throw r.error(c, "\(key).commit", "\"\(hash)\" is not a commit hash (12 hex digits or more)") }
            guard let s = m["subject"]?.value else { throw r.error(node, "\(key).subject", "missing (required)") }
            var release: KernelVersion?
            if let v = m["release"]?.value {
                if v.scalar?.string == "unknown" { release = nil } else { release = try r.version(v, "\(key).release") }
            } else if releaseRequired {
                throw r.error(node, "\(key).release", "missing: the first mainline release with it (\"6.2\"), or unknown")
            }
            var backports: [KernelVersion] = []
            if let b = m["backports"]?.value {
                for (i, item) in (b.sequence.map(Array.init) ?? [b]).enumerated() {
                    backports.append(try r.version(item, "\(key).backports[\(i)]"))
                }
            }
            let part = try m["part"].map { try r.string($0.value, "\(key).part") }
            return Commit(commit: hash, subject: try r.string(s, "\(key).subject"), release: release, backports: backports, part: part)
        }
        var fixes: [Commit] = []
        if let (_, node) = top["fix"] {
            if let items = node.sequence {
                if items.isEmpty { throw r.error(node, "fix", "an empty list: name the fix's commits") }
                fixes = try items.enumerated().map { try commit($0.element, "fix[\($0.offset)]", releaseRequired: true) }
                if items.count > 1, let i = fixes.firstIndex(where: { $0.part == nil }) {
                    throw r.error(items[i], "fix[\(i)].part", "missing: with several commits, each names the part it fixes (xfrmi, vti …)")
                }
            } else {
                fixes = [try commit(node, "fix", releaseRequired: true)]
            }
        }
        if kind == .bug && fixes.isEmpty { throw r.error(root, "fix", "missing: a bug report names its fix (commit, subject, release)") }
        let introduced = try top["introduced"].map { try commit($0.value, "introduced", releaseRequired: false) }
        var needs: [String] = []
        if let n = top["needs"]?.value {
            needs = try r.strings(n, "needs")
            for (i, name) in needs.enumerated() where !Requirement.known.contains(name) {
                throw r.error(n.sequence?[i] ?? n, "needs[\(i)]", "\"\(name)\" is not a capability (known: \(Requirement.known.sorted().joined(separator: ", ")))")
            }
        }
        var destructive = false
        if let d = top["destructive"]?.value {
            guard let b = d.bool else { throw r.error(d, "destructive", "\"\(d.string ?? "")\" is not true or false") }
            destructive = b
        }
        var expect: ReportVerdict.Kind?
        if let e = top["expect"]?.value { expect = try r.verdict(e, "expect") }
        var overrides: [Override] = []
        if let k = top["kernels"]?.value {
            guard let items = k.sequence else { throw r.error(k, "kernels", "expected a list") }
            for (i, item) in items.enumerated() {
                let m = try r.mapping(item, "kernels[\(i)]")
                guard let sel = m["kernel"]?.value, let ex = m["expect"]?.value, let why = m["why"]?.value else {
                    throw r.error(item, "kernels[\(i)]", "needs kernel, expect and why")
                }
                let patterns = try sel.sequence.map { try $0.map { try r.string($0, "kernels[\(i)].kernel") } } ?? [r.string(sel, "kernels[\(i)].kernel")]
                overrides.append(Override(kernel: Expectations.Selector(patterns), expect: try r.verdict(ex, "kernels[\(i)].expect"),
                                          why: try r.string(why, "kernels[\(i)].why")))
            }
        }
        let topology = try r.string(required("topology"), "topology")
        var report = BugReport(
            id: id, title: try r.string(required("title"), "title"), kind: kind, symptom: try r.string(required("symptom"), "symptom"),
            sources: sources, fixes: fixes, introduced: introduced, needs: needs, destructive: destructive,
            topology: topology, observable: "", expect: expect,
            overrides: overrides, directory: directory)
        let repo = repositoryRoot
            ?? URL(fileURLWithPath: directory).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let topologyFile = report.topologyPath(repositoryRoot: repo)
        if !FileManager.default.fileExists(atPath: topologyFile) {
            throw r.error(try required("topology"), "topology", "\"\(topology)\" is neither a file in \(directory) nor in Topologies/")
        }
        let observable = try required("observable")
        if let steps = top["steps"]?.value {
            let hosts: Set<String>
            do { hosts = Set(try Topology.load(path: topologyFile).hosts.map(\.name)) } catch {
                throw r.error(try required("topology"), "topology", "\(topologyFile) does not load: \(error)")
            }
            let (script, text) = try ScriptSteps.parse(steps: steps, observable: observable, hosts: hosts, reader: r)
            report.script = script
            report.observable = text
        } else {
            guard observable.scalar != nil else {
                throw r.error(observable, "observable", "a mapping (text, bug, parts) goes with steps: written here; without them, the sentence alone")
            }
            report.observable = try r.string(observable, "observable")
        }
        return report
    }

    /// Every report under `directory` (Fixtures/reports), sorted by ID.
    public static func loadAll(directory: String) throws -> [BugReport] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return try names.sorted().filter { FileManager.default.fileExists(atPath: directory + "/" + $0 + "/report.yaml") }
            .map { try load(directory: directory + "/" + $0) }
    }
}

/// Node access with positions for the errors.
struct Reader {
    var path: String

    func error(_ node: Node, _ field: String, _ message: String) -> ReportError {
        ReportError(file: path, line: node.mark.map { $0.line } ?? 0, column: node.mark.map { $0.column } ?? 0,
                    field: field, message: message)
    }

    func mapping(_ node: Node, _ field: String) throws -> [String: (key: Node, value: Node)] {
        guard let m = node.mapping else { throw error(node, field, "expected a mapping") }
        var out: [String: (key: Node, value: Node)] = [:]
        for (k, v) in m {
            guard let name = k.string else { throw error(k, field, "keys must be strings") }
            if out[name] != nil { throw error(k, field.isEmpty ? name : field + "." + name, "given twice") }
            out[name] = (k, v)
        }
        return out
    }

    func string(_ node: Node, _ field: String) throws -> String {
        guard let s = node.scalar?.string, !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            throw error(node, field, "expected non-empty text")
        }
        return s.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func strings(_ node: Node, _ field: String) throws -> [String] {
        if node.scalar != nil { return [try string(node, field)] }
        guard let items = node.sequence else { throw error(node, field, "expected a list of text") }
        return try items.enumerated().map { try string($0.element, "\(field)[\($0.offset)]") }
    }

    func version(_ node: Node, _ field: String) throws -> KernelVersion {
        let text = try string(node, field)
        guard let v = KernelVersion(parsing: text), v.description == text else {
            throw error(node, field, "\"\(text)\" is not a kernel version (like 5.3 or 6.1.115)")
        }
        return v
    }

    func verdict(_ node: Node, _ field: String) throws -> ReportVerdict.Kind {
        let text = try string(node, field)
        guard let k = ReportVerdict.Kind(rawValue: text), k == .reproduces || k == .fixed else {
            throw error(node, field, "\"\(text)\" is not reproduces or fixed")
        }
        return k
    }
}
