import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Xfrm

/// The kernel cannot run the report, in its own words (a step's `not-applicable-if` was met,
/// or a Swift reproduction found a feature missing that no probe covers).
public struct NotApplicable: Error, CustomStringConvertible {
    public var description: String
    public init(_ reason: String) { description = reason }
}

/// What one script step did.
struct StepResult: CustomStringConvertible {
    var step: ScriptStep
    var command: String
    /// The command's exit status; for a netlink step 0 when accepted, 1 when refused.
    var status: Int32
    /// For a netlink step, the kernel's errno.
    var errno: Int32?
    /// stdout and stderr (a netlink step: the extended ack and the errno's text).
    var output: String

    var description: String {
        let shown = output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            .joined(separator: " / ")
        let clipped = shown.count > 300 ? shown.prefix(300) + " …" : Substring(shown)
        let answer: String
        if case .netlink = step.action {
            answer = errno.map { "\(errnoName($0)) (\(output))" } ?? "accepted"
        } else {
            answer = "exit \(status)" + (clipped.isEmpty ? "" : ": \(clipped)")
        }
        return "[\(step.id)] \(step.host)$ \(command) → \(answer)"
    }
}

enum ScriptRunner {
    /// Does the steps in the lab and decides from their results; an unmet `must` is
    /// inconclusive, a met `not-applicable-if` is NOT APPLICABLE.
    static func run(_ script: ScriptSteps, in lab: Lab) throws -> Observation {
        let log = KernelLog()
        var results: [String: StepResult] = [:]
        var kernelLines: [String] = []
        func holds(_ c: ScriptCondition) -> Bool {
            switch c {
            case .step(let id, let test):
                guard let r = results[id] else { return false }
                return evaluate(test, r)
            case .kernelLog(let p): return kernelLines.contains { p.matches($0) }
            case .any(let cs): return cs.contains(where: holds)
            case .all(let cs): return cs.allSatisfy(holds)
            case .not(let c): return !holds(c)
            }
        }
        var evidence: [String] = []
        for step in script.steps {
            let result = try perform(step, lab: lab)
            results[step.id] = result
            evidence.append(result.description)
            kernelLines += log?.read() ?? []
            if let na = step.notApplicableIf, holds(na) {
                throw NotApplicable("\(result) (\(step.origin): not applicable when \(na))")
            }
            if let must = step.must, !holds(must) {
                throw Inconclusive("\(result): must be \(must) (\(step.origin)); before it: "
                                   + evidence.dropLast().joined(separator: "; "))
            }
        }
        let logged = kernelLines.filter { line in
            (script.bug.map { [$0] } ?? script.parts.map(\.condition)).contains { mentions($0, line) }
        }
        evidence += logged.prefix(5).map { "kernel: \($0)" }
        if let bug = script.bug {
            let present = holds(bug)
            return Observation(bugPresent: present, evidence: evidence + ["bug present when \(bug): \(present ? "yes" : "no")"])
        }
        let parts = script.parts.map { name, condition in
            Observation.Part(name, bugPresent: holds(condition), evidence: ["bug present when \(condition): \(holds(condition) ? "yes" : "no")"])
        }
        return Observation(parts: parts, evidence: evidence)
    }

    /// A kernel-log line a condition looks for (kept as evidence).
    static func mentions(_ c: ScriptCondition, _ line: String) -> Bool {
        switch c {
        case .kernelLog(let p): return p.matches(line)
        case .any(let cs), .all(let cs): return cs.contains { mentions($0, line) }
        case .not(let c): return mentions(c, line)
        case .step: return false
        }
    }

    static func evaluate(_ test: ScriptCondition.Test, _ r: StepResult) -> Bool {
        switch test {
        case .succeeds: return r.status == 0
        case .fails: return r.status != 0
        case .failsWith(let e):
            if case .netlink = r.step.action { return r.errno == e }
            // A tool prints the C library's text for the errno ("RTNETLINK answers: File exists").
            return r.status != 0 && (r.output.contains(errnoText(e)) || r.output.contains(errnoName(e)))
        case .exits(let n): return r.status == n
        case .shows(let p): return p.matches(r.output)
        case .lacks(let p): return !p.matches(r.output)
        }
    }

    static func perform(_ step: ScriptStep, lab: Lab) throws -> StepResult {
        let ns = try lab.namespace(step.host)
        switch step.action {
        case .run(let line):
            // As the reporter wrote it: split like a shell, or given to sh when it pipes or redirects.
            let argv = ShellWords.split(line) ?? ["/bin/sh", "-c", line]
            let r: ProcessResult
            do {
                // A host owned by a user namespace runs its steps as that namespace's root.
                r = ns.ownedByUserNamespace ? try ns.executeAsOwner(argv, timeout: step.timeout) : try ns.execute(argv, timeout: step.timeout)
            } catch {
                return StepResult(step: step, command: line, status: 127, output: "\(error)")
            }
            return StepResult(step: step, command: line, status: r.status, output: r.standardOutput + r.standardError)
        case .netlink(let request, let protocolName):
            let owned = ns.ownedByUserNamespace
            let socket = owned ? try ns.ownerNetlinkSocket(protocol: protocolName == "xfrm" ? NetlinkSocket.xfrm : NetlinkSocket.route)
                : protocolName == "xfrm" ? try ns.xfrmSocket() : ns.route
            defer { if owned || protocolName == "xfrm" { socket.close() } }
            do {
                _ = try socket.request(request)
                return StepResult(step: step, command: request.summary, status: 0, output: "")
            } catch let e as NetlinkError {
                let text = e.kernelMessage.flatMap { $0.isEmpty ? nil : "\"\($0)\"" } ?? errnoText(e.errno)
                return StepResult(step: step, command: request.summary, status: 1, errno: e.errno, output: text)
            }
        }
    }
}

/// Shell-like word splitting for a step's command line: quotes and backslashes; nil when the
/// line needs a shell (pipes, redirections, variables, `;`, `&&` …).
public enum ShellWords {
    public static func split(_ line: String) -> [String]? {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for c in line {
            if escaped { current.append(c); escaped = false; inWord = true; continue }
            if let q = quote {
                if c == q { quote = nil } else if c == "\\" && q == "\"" { escaped = true } else { current.append(c) }
                continue
            }
            switch c {
            case "\\": escaped = true
            case "'", "\"": quote = c; inWord = true
            case " ", "\t":
                if inWord { words.append(current); current = ""; inWord = false }
            case "|", ";", "&", "<", ">", "$", "`", "(", ")", "*", "?", "#", "~": return nil
            default: current.append(c); inWord = true
            }
        }
        if quote != nil || escaped { return nil }
        if inWord { words.append(current) }
        return words.isEmpty ? nil : words
    }
}
