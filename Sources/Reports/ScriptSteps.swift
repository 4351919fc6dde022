import Foundation
import Glibc
import Netlink
import Yams

/// A report's steps written in report.yaml instead of Swift: per host, the commands as the
/// reporter wrote them (or a raw netlink request where iproute2 refuses to send one), what each
/// must show, and the conditions that decide "bug present".
public struct ScriptSteps: Sendable {
    public var steps: [ScriptStep]
    /// The whole report's condition, or one per named part.
    public var bug: ScriptCondition?
    public var parts: [(name: String, condition: ScriptCondition)]
}

public struct ScriptStep: Sendable {
    public enum Action: Sendable {
        /// A command line, run inside the host's network namespace with the real tool.
        case run(String)
        /// A netlink request sent as given, answered with the kernel's errno and extended ack.
        case netlink(Request, protocolName: String)
    }
    /// `change`, or `s3` for the third step when it has no name.
    public var id: String
    public var host: String
    public var action: Action
    /// What the step must show for the scenario to mean anything; unmet: INCONCLUSIVE. Steps the
    /// observable does not look at must succeed unless they say otherwise.
    public var must: ScriptCondition?
    /// When met: the kernel cannot run the report (NOT APPLICABLE, with the step's words).
    public var notApplicableIf: ScriptCondition?
    public var timeout: Double
    /// Where it was written (report.yaml:LINE), for the evidence.
    public var origin: String
}

/// A condition over the steps' results and the kernel log.
public indirect enum ScriptCondition: Sendable, CustomStringConvertible {
    public enum Test: Sendable, CustomStringConvertible {
        case succeeds, fails
        /// For a command: its output names the error (strerror text or the errno's name); for a
        /// netlink step: the kernel's errno exactly.
        case failsWith(Int32)
        case exits(Int32)
        case shows(Pattern), lacks(Pattern)

        public var description: String {
            switch self {
            case .succeeds: return "succeeds"
            case .fails: return "fails"
            case .failsWith(let e): return "fails with \(errnoName(e))"
            case .exits(let n): return "exits \(n)"
            case .shows(let p): return "shows \(p)"
            case .lacks(let p): return "lacks \(p)"
            }
        }
    }

    /// Literal text ("…" or '…') or a regular expression (/…/).
    public struct Pattern: Sendable, CustomStringConvertible {
        public var text: String
        public var regex: Bool
        /// A regular expression's ^ and $ match at each line of the output.
        public func matches(_ s: String) -> Bool {
            guard regex else { return s.contains(text) }
            guard let r = try? NSRegularExpression(pattern: text, options: [.anchorsMatchLines]) else { return false }
            return r.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
        }
        public var description: String { regex ? "/\(text)/" : "\"\(text)\"" }
    }

    case step(String, Test)
    case kernelLog(Pattern)
    case any([ScriptCondition]), all([ScriptCondition])
    case not(ScriptCondition)

    public var description: String {
        switch self {
        case .step(let id, let t): return "\(id) \(t)"
        case .kernelLog(let p): return "kernel log shows \(p)"
        case .any(let cs): return cs.map(\.description).joined(separator: ", or ")
        case .all(let cs): return cs.map(\.description).joined(separator: ", and ")
        case .not(let c): return "not (\(c))"
        }
    }

    /// The steps it looks at.
    var stepIDs: [String] {
        switch self {
        case .step(let id, _): return [id]
        case .kernelLog: return []
        case .any(let cs), .all(let cs): return cs.flatMap(\.stepIDs)
        case .not(let c): return c.stepIDs
        }
    }

    /// Parses `[STEP] succeeds | fails [with ERRNO] | exits N | shows TEXT | lacks TEXT`, or
    /// `kernel log shows TEXT`. Without a step name the condition is about `implicitStep`.
    public static func parse(_ text: String, steps: Set<String>, implicitStep: String? = nil) throws -> ScriptCondition {
        var rest = Substring(text.trimmingCharacters(in: .whitespaces))
        func word() -> Substring {
            rest = rest.drop { $0 == " " }
            let w = rest.prefix { $0 != " " }
            rest = rest.dropFirst(w.count)
            return w
        }
        func pattern() throws -> Pattern {
            let t = rest.trimmingCharacters(in: .whitespaces)
            guard let first = t.first, t.count >= 2, let last = t.last else { throw ConditionError("missing the text to look for: \"…\" or /regex/") }
            if first == "/" && last == "/" {
                let body = String(t.dropFirst().dropLast())
                guard (try? NSRegularExpression(pattern: body)) != nil else { throw ConditionError("/\(body)/ is not a regular expression") }
                return Pattern(text: body, regex: true)
            }
            if (first == "\"" && last == "\"") || (first == "'" && last == "'") { return Pattern(text: String(t.dropFirst().dropLast()), regex: false) }
            throw ConditionError("\(t) is neither \"text\" nor /regex/")
        }
        let lower = rest.lowercased()
        if lower.hasPrefix("kernel log shows ") {
            rest = rest.dropFirst("kernel log shows ".count)
            return .kernelLog(try pattern())
        }
        var id = implicitStep
        var verb = String(word())
        if steps.contains(verb) || id == nil {
            guard steps.contains(verb) else {
                throw ConditionError("\"\(verb)\" is not a step (steps: \(steps.sorted().joined(separator: ", ")))")
            }
            id = verb
            verb = String(word())
        }
        let test: Test
        switch verb {
        case "succeeds": test = .succeeds
        case "fails":
            let w = word()
            if w.isEmpty { test = .fails; break }
            guard w == "with" else { throw ConditionError("expected \"fails with ERRNO\", found \"fails \(w)\"") }
            let name = String(word())
            guard let code = errnoCode(name) else { throw ConditionError("\"\(name)\" is not an errno name (EEXIST, EINVAL …)") }
            test = .failsWith(code)
        case "exits":
            guard let n = Int32(word()) else { throw ConditionError("expected \"exits N\"") }
            test = .exits(n)
        case "shows": test = .shows(try pattern()); rest = ""
        case "lacks": test = .lacks(try pattern()); rest = ""
        default:
            throw ConditionError("\"\(verb)\" is not succeeds, fails, fails with ERRNO, exits N, shows TEXT or lacks TEXT")
        }
        guard rest.trimmingCharacters(in: .whitespaces).isEmpty else { throw ConditionError("unexpected \"\(rest.trimmingCharacters(in: .whitespaces))\"") }
        return .step(id!, test)
    }
}

struct ConditionError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// `EEXIST` → 17, through the names the harness prints.
func errnoCode(_ name: String) -> Int32? {
    (1..<134).first { errnoName(Int32($0)) == name }.map(Int32.init)
}

// MARK: - Reading them from report.yaml

extension ScriptSteps {
    static let stepKeys = ["id", "on", "run", "netlink", "must", "not-applicable-if", "timeout"]

    /// `steps:` and `observable: {text, bug | parts}` of a report file.
    static func parse(steps node: Node, observable: Node, hosts: Set<String>, reader r: Reader) throws -> (ScriptSteps, String) {
        guard let items = node.sequence, !items.isEmpty else { throw r.error(node, "steps", "expected a list of steps") }
        var steps: [ScriptStep] = []
        var pending: [(index: Int, must: Node?, na: Node?)] = []
        for (i, item) in items.enumerated() {
            let f = "steps[\(i)]"
            let m = try r.mapping(item, f)
            for (k, v) in m where !stepKeys.contains(k) {
                throw r.error(v.key, "\(f).\(k)", "unknown key (known: \(stepKeys.joined(separator: ", ")))")
            }
            let id = try m["id"].map { try r.string($0.value, "\(f).id") } ?? "s\(i + 1)"
            if steps.contains(where: { $0.id == id }) { throw r.error(m["id"]?.value ?? item, "\(f).id", "\"\(id)\" names two steps") }
            guard let on = m["on"]?.value else { throw r.error(item, "\(f).on", "missing: the host whose namespace runs it") }
            let host = try r.string(on, "\(f).on")
            guard hosts.contains(host) else {
                throw r.error(on, "\(f).on", "\"\(host)\" is not a host of the report's topology (hosts: \(hosts.sorted().joined(separator: ", ")))")
            }
            let action: ScriptStep.Action
            switch (m["run"]?.value, m["netlink"]?.value) {
            case (let run?, nil): action = .run(try r.string(run, "\(f).run"))
            case (nil, let nl?): action = try NetlinkStep.parse(nl, field: "\(f).netlink", reader: r)
            default: throw r.error(item, f, "give one of run (a command line) or netlink (a request)")
            }
            var timeout = 30.0
            if let t = m["timeout"]?.value {
                guard let s = t.scalar?.string, let v = Double(s), v > 0 else { throw r.error(t, "\(f).timeout", "expected seconds (> 0)") }
                timeout = v
            }
            steps.append(ScriptStep(id: id, host: host, action: action, must: nil, notApplicableIf: nil, timeout: timeout,
                                    origin: "\(URL(fileURLWithPath: r.path).lastPathComponent):\(item.mark?.line ?? 0)"))
            pending.append((i, m["must"]?.value, m["not-applicable-if"]?.value))
        }
        let ids = Set(steps.map(\.id))
        for p in pending {
            let f = "steps[\(p.index)]"
            if let n = p.must, n.scalar?.string != "anything" {
                steps[p.index].must = try conditions(n, "\(f).must", ids, r, implicit: steps[p.index].id)
            }
            if let n = p.na { steps[p.index].notApplicableIf = try conditions(n, "\(f).not-applicable-if", ids, r, implicit: steps[p.index].id) }
        }
        // The observable: the sentence, and what decides it.
        let o = try r.mapping(observable, "observable")
        for (k, v) in o where !["text", "bug", "parts"].contains(k) {
            throw r.error(v.key, "observable.\(k)", "unknown key (known: text, bug, parts)")
        }
        guard let textNode = o["text"]?.value else { throw r.error(observable, "observable.text", "missing: the sentence that separates a buggy kernel from a fixed one") }
        let text = try r.string(textNode, "observable.text")
        var script = ScriptSteps(steps: steps, bug: nil, parts: [])
        switch (o["bug"]?.value, o["parts"]?.value) {
        case (let b?, nil): script.bug = try conditions(b, "observable.bug", ids, r)
        case (nil, let p?):
            let pm = try r.mapping(p, "observable.parts")
            guard !pm.isEmpty else { throw r.error(p, "observable.parts", "name at least one part") }
            for (key, value) in p.mapping! {
                let name = try r.string(key, "observable.parts")
                script.parts.append((name, try conditions(value, "observable.parts.\(name)", ids, r)))
            }
        default: throw r.error(observable, "observable", "give one of bug (a condition) or parts (a condition per part)")
        }
        // Steps the observable does not look at must succeed, unless they say otherwise.
        let watched = Set((script.bug.map { [$0] } ?? script.parts.map(\.condition)).flatMap(\.stepIDs))
        for (i, p) in pending.enumerated() where p.must == nil && !watched.contains(steps[i].id) {
            steps[i].must = .step(steps[i].id, .succeeds)
        }
        script.steps = steps
        return (script, text)
    }

    /// A condition, or a list of them (any), or `{any: […]}` / `{all: […]}` / `{not: …}`.
    /// In a step's `must` and `not-applicable-if`, a condition without a step name is about that step.
    static func conditions(_ node: Node, _ field: String, _ ids: Set<String>, _ r: Reader, implicit: String? = nil) throws -> ScriptCondition {
        if node.scalar != nil { return try condition(try r.string(node, field), node, field, ids, implicit: implicit, r) }
        if let items = node.sequence {
            return .any(try items.enumerated().map { try conditions($0.element, "\(field)[\($0.offset)]", ids, r, implicit: implicit) })
        }
        let m = try r.mapping(node, field)
        guard m.count == 1, let (key, value) = m.first else { throw r.error(node, field, "expected one of any, all, not") }
        switch key {
        case "any", "all":
            guard let items = value.value.sequence, !items.isEmpty else { throw r.error(value.value, "\(field).\(key)", "expected a list of conditions") }
            let cs = try items.enumerated().map { try conditions($0.element, "\(field).\(key)[\($0.offset)]", ids, r, implicit: implicit) }
            return key == "any" ? .any(cs) : .all(cs)
        case "not": return .not(try conditions(value.value, "\(field).not", ids, r, implicit: implicit))
        default: throw r.error(value.key, "\(field).\(key)", "expected one of any, all, not")
        }
    }

    static func condition(_ text: String, _ node: Node, _ field: String, _ ids: Set<String>, implicit: String?, _ r: Reader) throws -> ScriptCondition {
        do { return try ScriptCondition.parse(text, steps: ids, implicitStep: implicit) } catch let e as ConditionError {
            throw r.error(node, field, e.description)
        }
    }
}
