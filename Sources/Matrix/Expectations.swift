import Foundation
import Glibc
import Yams

/// What each kernel may do besides passing (Fixtures/matrix/expectations.yaml). Anything else is
/// a failure: a skip no rule names (with its reason), a failure no rule names, and a pass of a test
/// a rule says fails there — nothing goes green by skipping.
public struct Expectations: Codable, Sendable {
    public var expectations: [Rule]

    /// Kernels a rule applies to: `host` (the suite on this machine, no VM), `*`, a glob over the
    /// release (`*-cloud-amd64`, `6.1.0-*`), or a version range over the upstream version
    /// (`>=6.1 <6.1.130`; Debian's `6.1.0-56` is read as the 6.1.192 its banner names).
    public struct Rule: Codable, Sendable {
        public var kernel: Selector
        /// Why these kernels differ (shown in the report).
        public var note: String?
        public var skip: [Skip]?
        public var fail: [Fail]?
        /// Kernel log lines (substrings) that are not warnings on these kernels, each with its reason.
        public var ignoreKernelLog: [IgnoredLog]?
        /// Crashes known on these kernels, by the functions of their stack (as netdev CI names them).
        public var crash: [KnownCrash]?

        enum CodingKeys: String, CodingKey {
            case kernel, note, skip, fail, crash
            case ignoreKernelLog = "ignore-kernel-log"
        }
    }

    public struct Skip: Codable, Sendable {
        /// A glob over the test ID (`LabTests.XfrmInterfaceTests/*`) or its display name.
        public var test: String
        /// Substrings of the skip comment, all required (one, or a list): the capability and the
        /// kernel's answer that make the skip expected (`[kernel lacks VTI:, Unknown device type]`).
        public var reason: Substrings
    }

    /// One string or a list of them.
    public struct Substrings: Codable, Sendable, CustomStringConvertible {
        public var all: [String]

        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let one = try? c.decode(String.self) { all = [one] } else { all = try c.decode([String].self) }
            if all.isEmpty || all.contains(where: \.isEmpty) {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "a skip reason must name something: an empty one would expect every skip")
            }
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            try all.count == 1 ? c.encode(all[0]) : c.encode(all)
        }

        public func found(in text: String) -> Bool {
            all.allSatisfy { text.range(of: $0, options: .caseInsensitive) != nil }
        }

        public var description: String { all.map { "\"\($0)\"" }.joined(separator: " + ") }
    }

    public struct Fail: Codable, Sendable {
        public var test: String
        /// The bug, and the fix that makes it pass (a commit, the first good version).
        public var why: String
    }

    /// A crash known on some kernels: every function of `stack` appears in its fingerprint
    /// (the function at the instruction pointer and the call trace), in this order.
    public struct KnownCrash: Codable, Sendable {
        public var stack: [String]
        public var why: String

        public func matches(_ crash: KernelCrash) -> Bool {
            var rest = crash.fingerprint[...]
            for f in stack {
                guard let i = rest.firstIndex(of: f) else { return false }
                rest = rest[rest.index(after: i)...]
            }
            return !stack.isEmpty
        }
    }

    public struct IgnoredLog: Codable, Sendable {
        public var line: String
        public var why: String
    }

    /// One kernel selector or several (any of them).
    public struct Selector: Codable, Sendable, CustomStringConvertible {
        public var patterns: [String]

        public init(_ patterns: [String]) { self.patterns = patterns }

        public init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let one = try? c.decode(String.self) { patterns = [one] } else { patterns = try c.decode([String].self) }
        }

        public func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            try patterns.count == 1 ? c.encode(patterns[0]) : c.encode(patterns)
        }

        public var description: String { patterns.joined(separator: ", ") }

        public func matches(_ kernel: KernelFacts) -> Bool {
            patterns.contains { Selector.match($0.trimmingCharacters(in: .whitespaces), kernel) }
        }

        static func match(_ pattern: String, _ kernel: KernelFacts) -> Bool {
            if pattern == "host" { return kernel.isHost }
            if pattern == "*" { return true }
            if let first = pattern.first, "<>=!".contains(first) {
                guard let version = kernel.version else { return false }
                return pattern.split(whereSeparator: { $0 == " " || $0 == "," }).allSatisfy { constraint in
                    let op = constraint.prefix { "<>=!".contains($0) }
                    guard let bound = KernelVersion(parsing: constraint.dropFirst(op.count)) else { return false }
                    switch op {
                    case "<": return version < bound
                    case "<=": return version <= bound
                    case ">": return version > bound
                    case ">=": return version >= bound
                    case "=", "==": return version == bound
                    case "!=": return version != bound
                    default: return false
                    }
                }
            }
            return glob(pattern, kernel.release) || glob(pattern, kernel.label)
        }
    }

    /// What a rule can be matched against.
    public struct KernelFacts: Sendable {
        public var label: String
        public var isHost: Bool
        public var release: String
        public var version: KernelVersion?

        public init(label: String, isHost: Bool, release: String, version: KernelVersion?) {
            self.label = label
            self.isHost = isHost
            self.release = release
            self.version = version
        }
    }

    public init(expectations: [Rule] = []) { self.expectations = expectations }

    public static func load(path: String) throws -> Expectations {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ExpectationsError(path: path, message: "cannot read: \(error.localizedDescription)")
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String = "expectations.yaml") throws -> Expectations {
        // Unknown keys are refused: a misspelt `skip:` must not silently expect nothing.
        if let root = try? Yams.load(yaml: text) as? [String: Any] {
            try refuseUnknown(root, known: ["expectations"], at: "", path: path)
            for (i, rule) in ((root["expectations"] as? [[String: Any]]) ?? []).enumerated() {
                try refuseUnknown(rule, known: ["kernel", "note", "skip", "fail", "ignore-kernel-log", "crash"], at: "expectations[\(i)]", path: path)
                for key in ["skip", "fail", "ignore-kernel-log", "crash"] {
                    let known: Set<String> = key == "skip" ? ["test", "reason"] : key == "fail" ? ["test", "why"] : key == "crash" ? ["stack", "why"] : ["line", "why"]
                    for (j, entry) in ((rule[key] as? [[String: Any]]) ?? []).enumerated() {
                        try refuseUnknown(entry, known: known, at: "expectations[\(i)].\(key)[\(j)]", path: path)
                    }
                }
            }
        }
        do {
            return try YAMLDecoder().decode(Expectations.self, from: text)
        } catch let error as DecodingError {
            throw ExpectationsError(path: path, message: describe(error))
        } catch {
            throw ExpectationsError(path: path, message: "\(error)")
        }
    }

    static func refuseUnknown(_ mapping: [String: Any], known: Set<String>, at place: String, path: String) throws {
        let unknown = Set(mapping.keys).subtracting(known).sorted()
        guard unknown.isEmpty else {
            throw ExpectationsError(path: path, message: "\(place.isEmpty ? "top level" : place): unknown key \(unknown.map { "'\($0)'" }.joined(separator: ", ")) (known: \(known.sorted().joined(separator: ", ")))")
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ c: DecodingError.Context) -> String {
            c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch error {
        case .keyNotFound(let key, let c): return "\(path(c)): missing '\(key.stringValue)'"
        case .typeMismatch(_, let c), .valueNotFound(_, let c), .dataCorrupted(let c):
            return "\(path(c)): \(c.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    // MARK: Questions the verdicts ask

    public func rules(for kernel: KernelFacts) -> [Rule] { expectations.filter { $0.kernel.matches(kernel) } }

    /// The rule that makes this skip expected on this kernel, if any.
    public func expectedSkip(test: TestRecord, reason: String, on kernel: KernelFacts) -> (Rule, Skip)? {
        for rule in rules(for: kernel) {
            for skip in rule.skip ?? [] where Expectations.matches(skip.test, test) && skip.reason.found(in: reason) {
                return (rule, skip)
            }
        }
        return nil
    }

    /// The rule that says this test fails on this kernel, if any.
    public func expectedFailure(test: TestRecord, on kernel: KernelFacts) -> (Rule, Fail)? {
        for rule in rules(for: kernel) {
            for fail in rule.fail ?? [] where Expectations.matches(fail.test, test) { return (rule, fail) }
        }
        return nil
    }

    /// The rule that names this crash on this kernel, if any.
    public func knownCrash(_ crash: KernelCrash, on kernel: KernelFacts) -> (Rule, KnownCrash)? {
        for rule in rules(for: kernel) {
            for known in rule.crash ?? [] where known.matches(crash) { return (rule, known) }
        }
        return nil
    }

    public func ignoredKernelLog(on kernel: KernelFacts) -> [String] {
        rules(for: kernel).flatMap { ($0.ignoreKernelLog ?? []).map(\.line) }
    }

    static func matches(_ pattern: String, _ test: TestRecord) -> Bool {
        glob(pattern, test.id) || glob(pattern, test.name)
    }
}

public struct ExpectationsError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}

/// Shell-style pattern matching (`*` also crosses `/`).
func glob(_ pattern: String, _ text: String) -> Bool { fnmatch(pattern, text, 0) == 0 }
