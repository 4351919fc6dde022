import Foundation

/// `xfrmlab report new ID --from-script FILE`: a reporter's shell script made into a report
/// folder with steps in report.yaml. Namespaces (`ip netns add X`) become hosts; `ip -n X …`,
/// `ip netns exec X …` and `nsenter --net=/run/netns/X …` become steps on X. Comments carry
/// what a script cannot say by itself:
///
///     # title: A refused if_id change still changes the xfrm interface's if_id
///     # source: https://lore.kernel.org/…          (one or more)
///     # fix: e9e7e85d75f3 "xfrm interface: avoid corruption on changelink" 5.3 backports 4.19.89
///     # fix (vti): 0123456789ab "vti: …" unknown backports 6.1.130   (a fix in several commits)
///     # needs: xfrmi                                (capabilities, comma-separated)
///     # kind: behaviour / expect: reproduces / symptom: … / observable: …
///     ip -n lab link set xfrm1 type xfrm dev lo if_id 2
///     # bug: succeeds                               (about the command above; any of them: bug present)
///     # bug (xfrmi): shows "if_id 0x2"               (a condition of the part xfrmi)
///     # must: succeeds  /  # not applicable if: fails with EOPNOTSUPP
///
/// What it cannot map (commands in the machine's own namespace, loops, variables, namespaces
/// named inside a command) is left out and said, with its line.
public enum ScriptImport {
    public struct Imported: Sendable {
        public var folder: String
        public var files: [String]
        /// `line 7: …: why it was left out`.
        public var unmapped: [String]
        /// Fields the script did not give, written as placeholders to fill in.
        public var missing: [String]
    }

    struct Step {
        var host: String
        var command: String
        var line: Int
        var bug: [(part: String?, condition: String)] = []
        var must: [String] = []
        var notApplicable: [String] = []
    }

    public static func create(id: String, script path: String, into parent: String) throws -> Imported {
        guard BugReport.isValid(id: id) else {
            throw ReportError(file: "", line: 0, column: 0, field: "ID",
                              message: "\"\(id)\" is not a report ID: lower-case words and digits joined by dashes (xfrmi-changelink-eexist)")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ReportError(file: path, line: 0, column: 0, field: "", message: "cannot read: \(error.localizedDescription)")
        }
        let folder = parent + "/" + id
        if FileManager.default.fileExists(atPath: folder) {
            throw ReportError(file: folder, line: 0, column: 0, field: "ID", message: "report \(id) exists already")
        }
        var meta: [String: [String]] = [:]
        var fixLines: [Int] = []
        var hosts: [String] = []
        var steps: [Step] = []
        var unmapped: [String] = []

        for (number, line) in logicalLines(text) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#!") { continue }
            if trimmed.hasPrefix("#") {
                let body = trimmed.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces)
                guard let colon = body.firstIndex(of: ":") else { continue }
                let key = body[..<colon].lowercased().trimmingCharacters(in: .whitespaces)
                let value = body[body.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                let (word, part) = splitPart(key)
                switch word {
                case "bug", "must", "not applicable if":
                    guard !steps.isEmpty else {
                        unmapped.append("line \(number): `\(trimmed)`: a \(word) line goes after the command it is about"); continue
                    }
                    if word == "bug" { steps[steps.count - 1].bug.append((part, value)) }
                    else if word == "must" { steps[steps.count - 1].must.append(value) }
                    else { steps[steps.count - 1].notApplicable.append(value) }
                case "title", "kind", "symptom", "source", "needs", "expect", "observable", "destructive":
                    meta[word, default: []].append(value)
                case "fix":
                    meta["fix", default: []].append((part.map { "(\($0)) " } ?? "") + value)
                    fixLines.append(number)
                default: continue  // an ordinary comment
                }
                continue
            }
            guard let words = ShellWords.split(trimmed) else {
                unmapped.append("line \(number): `\(trimmed)`: needs a shell (variables, pipes, loops …): write it as a step by hand, with run: on a host")
                continue
            }
            switch classify(words) {
            case .newNamespace(let name):
                if !hosts.contains(name) { hosts.append(name) }
            case .deleteNamespace:
                unmapped.append("line \(number): `\(trimmed)`: left out: the harness deletes its namespaces itself")
            case .ignored:
                continue
            case .onHost(let host, let command):
                guard hosts.contains(host) else {
                    unmapped.append("line \(number): `\(trimmed)`: namespace \(host) was never added (ip netns add \(host))"); continue
                }
                let named = zip(command, command.dropFirst()).first { $0.0 == "netns" && hosts.contains($0.1) }
                if let named {
                    unmapped.append("line \(number): `\(trimmed)`: names namespace \(named.1), but the lab's namespaces are named per run: "
                                    + "declare the link in topology.yaml (networks) instead")
                    continue
                }
                steps.append(Step(host: host, command: command.map(quoteIfNeeded).joined(separator: " "), line: number))
            case .inMachineNamespace:
                unmapped.append("line \(number): `\(trimmed)`: runs in the machine's own namespace, which the harness never changes: "
                                + "run it on a host (ip -n HOST …, ip netns exec HOST …)")
            }
        }
        guard !hosts.isEmpty else {
            throw ReportError(file: path, line: 0, column: 0, field: "", message: "no namespace (ip netns add NAME): nothing to make hosts of")
        }
        guard !steps.isEmpty else {
            throw ReportError(file: path, line: 0, column: 0, field: "", message: "no command runs in a namespace (ip -n NAME …, ip netns exec NAME …): no steps")
        }

        var missing: [String] = []
        func first(_ key: String, _ placeholder: String) -> String {
            if let v = meta[key]?.first { return v }
            missing.append(key)
            return placeholder
        }
        let title = first("title", "ONE LINE")
        let fixes = meta["fix"] ?? []
        let kind = meta["kind"]?.first ?? (fixes.isEmpty ? "behaviour" : "bug")
        let sources = meta["source"] ?? { missing.append("source"); return ["https://lore.kernel.org/WHERE-IT-WAS-REPORTED"] }()
        var yaml = """
            # Made by `xfrmlab report new \(id) --from-script \(URL(fileURLWithPath: path).lastPathComponent)`.
            id: \(id)
            title: \(quoted(title))
            kind: \(kind)
            symptom: \(quoted(meta["symptom"]?.first ?? title))
            sources:
            \(sources.map { "  - \(quoted($0))" }.joined(separator: "\n"))

            """
        if !fixes.isEmpty {
            yaml += "fix:\n"
            for (f, line) in zip(fixes, fixLines) { yaml += "  - " + (try fixEntry(f, several: fixes.count > 1, script: path, line: line)) + "\n" }
        } else if kind == "bug" {
            missing.append("fix")
        }
        if let needs = meta["needs"]?.first {
            let names = needs.split { $0 == "," || $0 == " " }.map(String.init)
            yaml += "needs: [\(names.joined(separator: ", "))]\n"
        }
        if let d = meta["destructive"]?.first { yaml += "destructive: \(d)\n" }
        if let e = meta["expect"]?.first { yaml += "expect: \(e)\n" }
        yaml += "topology: topology.yaml\nsteps:\n"
        let ids = Set(steps.indices.map { "s\($0 + 1)" })
        for (i, s) in steps.enumerated() {
            yaml += "  # \(URL(fileURLWithPath: path).lastPathComponent):\(s.line)\n"
            yaml += "  - id: s\(i + 1)\n    on: \(s.host)\n    run: \(quoted(s.command))\n"
            for (key, values) in [("must", s.must), ("not-applicable-if", s.notApplicable)] where !values.isEmpty {
                let cs = try values.map { try stepCondition($0, step: "s\(i + 1)", ids: ids, line: s.line, script: path) }
                yaml += "    \(key):" + (cs.count == 1 ? " \(quoted(cs[0]))\n" : "\n" + cs.map { "      - \(quoted($0))\n" }.joined())
            }
        }
        var bug: [String] = [], parts: [(String, [String])] = []
        for (i, s) in steps.enumerated() {
            for (part, c) in s.bug {
                let condition = try stepCondition(c, step: "s\(i + 1)", ids: ids, line: s.line, script: path)
                if let part {
                    if let j = parts.firstIndex(where: { $0.0 == part }) { parts[j].1.append(condition) } else { parts.append((part, [condition])) }
                } else {
                    bug.append(condition)
                }
            }
        }
        let sentence = meta["observable"]?.first ?? (bug + parts.flatMap(\.1)).joined(separator: "; ")
        yaml += "observable:\n  text: \(quoted(sentence.isEmpty ? "WHAT SEPARATES A BUGGY KERNEL FROM A FIXED ONE" : sentence))\n"
        if !parts.isEmpty {
            if !bug.isEmpty { unmapped.append("`# bug:` lines without a part beside parts: each goes to a part (# bug (NAME): …)") }
            yaml += "  parts:\n" + parts.map { "    \($0.0):\n" + $0.1.map { "      - \(quoted($0))\n" }.joined() }.joined()
        } else if !bug.isEmpty {
            yaml += "  bug:\n" + bug.map { "    - \(quoted($0))\n" }.joined()
        } else {
            missing.append("observable.bug (a `# bug: …` line after the command that shows it)")
            yaml += "  bug: WRITE-ME\n"
        }
        let topology = """
            # Made from \(URL(fileURLWithPath: path).lastPathComponent): one host per `ip netns add`.
            name: \(id)
            hosts:
            \(hosts.map { "  \($0): {}" }.joined(separator: "\n"))
            networks: []

            """
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: folder + "/report.yaml"))
        try Data(topology.utf8).write(to: URL(fileURLWithPath: folder + "/topology.yaml"))
        return Imported(folder: folder, files: [folder + "/report.yaml", folder + "/topology.yaml"], unmapped: unmapped, missing: missing)
    }

    enum Line {
        case newNamespace(String), deleteNamespace, ignored
        case onHost(String, [String])
        case inMachineNamespace
    }

    static func classify(_ w: [String]) -> Line {
        if w == ["set", "-e"] || w == ["set", "-x"] || w == ["set", "-ex"] || w == ["set", "-xe"] || w.first == "true" { return .ignored }
        if w.count >= 4, w[0] == "ip", w[1] == "netns" {
            switch w[2] {
            case "add": return .newNamespace(w[3])
            case "del", "delete": return .deleteNamespace
            case "exec" where w.count >= 5: return .onHost(w[3], Array(w[4...]))
            default: break
            }
        }
        if w.count >= 4, w[0] == "ip", ["-n", "-netns", "--netns"].contains(w[1]) {
            return .onHost(w[2], ["ip"] + w[3...])
        }
        if w.count >= 3, w[0] == "nsenter" {
            for a in w.dropFirst() where a.hasPrefix("--net=") {
                let name = URL(fileURLWithPath: String(a.dropFirst(6))).lastPathComponent
                let rest = w.dropFirst().drop { $0.hasPrefix("-") }
                if !rest.isEmpty { return .onHost(name, Array(rest)) }
            }
        }
        return .inMachineNamespace
    }

    /// `bug (xfrmi)` → ("bug", "xfrmi").
    static func splitPart(_ key: String) -> (String, String?) {
        guard let open = key.firstIndex(of: "("), key.hasSuffix(")") else { return (key, nil) }
        return (key[..<open].trimmingCharacters(in: .whitespaces), String(key[key.index(after: open)..<key.index(before: key.endIndex)]))
    }

    /// A condition about a step, written with its step name (checked here, so a mistake names the script's line).
    static func stepCondition(_ text: String, step: String, ids: Set<String>, line: Int, script: String) throws -> String {
        do { _ = try ScriptCondition.parse(text, steps: ids, implicitStep: step) } catch {
            throw ReportError(file: script, line: line, column: 1, field: "", message: "the condition \"\(text)\": \(error)")
        }
        let first = text.split(separator: " ").first.map(String.init) ?? ""
        return ids.contains(first) || text.lowercased().hasPrefix("kernel log ") ? text : "\(step) \(text)"
    }

    /// `(xfrmi) e9e7e85d75f3 "subject" 5.3 backports 4.19.89` → a flow mapping.
    static func fixEntry(_ text: String, several: Bool, script: String, line: Int) throws -> String {
        var rest = Substring(text)
        var part: String?
        if rest.hasPrefix("("), let close = rest.firstIndex(of: ")") {
            part = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
        }
        guard let words = ShellWords.split(String(rest)), words.count >= 3 else {
            throw ReportError(file: script, line: line, column: 1, field: "fix",
                              message: "\"\(text)\": expected COMMIT \"SUBJECT\" RELEASE (a version or unknown) [backports V …]")
        }
        var entry = "{ "
        if let part { entry += "part: \(part), " } else if several { entry += "part: WRITE-ME, " }
        entry += "commit: \(words[0]), subject: \(quoted(words[1])), release: \(words[2] == "unknown" ? "unknown" : quoted(words[2]))"
        if words.count > 4, words[3] == "backports" { entry += ", backports: [" + words[4...].map(quoted).joined(separator: ", ") + "]" }
        return entry + " }"
    }

    /// Lines with their numbers, a trailing backslash joining the next.
    static func logicalLines(_ text: String) -> [(Int, String)] {
        var out: [(Int, String)] = []
        var pending = "", start = 0
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if pending.isEmpty { start = i + 1 }
            if raw.hasSuffix("\\") { pending += raw.dropLast() + " "; continue }
            out.append((start, pending + raw))
            pending = ""
        }
        if !pending.isEmpty { out.append((start, pending)) }
        return out
    }

    static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    static func quoteIfNeeded(_ w: String) -> String {
        w.isEmpty || w.contains(where: { " \t'\"\\|;&<>$`()*?#~".contains($0) }) ? "'" + w.replacingOccurrences(of: "'", with: "'\\''") + "'" : w
    }
}
