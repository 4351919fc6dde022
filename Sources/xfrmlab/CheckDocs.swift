import ArgumentParser
import Foundation
import Glibc
import Namespaces

/// `xfrmlab check-docs`: every command the README and the guides show, checked. An xfrmlab
/// command is parsed by this very binary's parser (a renamed option or subcommand fails it);
/// the cheap ones also run, as written; `make` targets must exist in the Makefile; a
/// `swift test --filter` must select a test; any other command runs. What is long by nature
/// (the matrix, kernel builds, bisects, the bench) is parsed, not run: `make test` runs those
/// itself. The README's tour block is run as a whole by Scripts/check-tour.sh.
struct CheckDocs: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-docs",
        abstract: "Check every command shown in README.md and Docs/*.md: parse each xfrmlab command, run the cheap ones.",
        shouldDisplay: false)

    @Argument(help: "Markdown files (default: README.md and Docs/*.md).")
    var files: [String] = []

    @Flag(help: "Parse only; run nothing.")
    var parseOnly = false

    struct Command {
        var file: String
        var line: Int
        var text: String
        /// In the README's tour, which Scripts/check-tour.sh runs as one script.
        var inTour: Bool
    }

    func run() throws {
        try requireRoot()
        let root = packageRoot()
        _ = FileManager.default.changeCurrentDirectoryPath(root)
        var paths = files
        if paths.isEmpty {
            paths = ["README.md"] + ((try? FileManager.default.contentsOfDirectory(atPath: "Docs")) ?? [])
                .filter { $0.hasSuffix(".md") }.sorted().map { "Docs/" + $0 }
        }
        let makefile = (try? String(contentsOfFile: "Makefile", encoding: .utf8)) ?? ""
        let targets = Set(makefile.split(separator: "\n").compactMap { line -> String? in
            guard let colon = line.firstIndex(of: ":"), !line.hasPrefix("\t"), !line.hasPrefix("#"),
                  !line[..<colon].contains(" "), !line[..<colon].contains("=") else { return nil }
            return String(line[..<colon])
        })
        var testList: [String]?
        var failures: [String] = []
        var counts = (ran: 0, parsed: 0, tour: 0)
        for path in paths {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("\(path): cannot read it") }
            for c in Self.commands(in: text, file: path) {
                do {
                    let ran = try check(c, targets: targets, tests: { () throws -> [String] in
                        if let testList { return testList }
                        let r = try Namespaces.Process.execute(["swift", "test", "list", "--skip-build"], timeout: 300)
                        guard r.succeeded else { throw ValidationError("swift test list: \(r)") }
                        testList = r.standardOutput.split(separator: "\n").map(String.init)
                        return testList!
                    })
                    if c.inTour { counts.tour += 1 } else if ran { counts.ran += 1 } else { counts.parsed += 1 }
                    print("\(c.inTour ? "tour  " : ran ? "ran   " : "parsed") \(c.file):\(c.line)  \(c.text)")
                } catch {
                    failures.append("\(c.file):\(c.line): \(c.text)\n    \(error)")
                }
            }
        }
        print("check-docs: \(counts.ran) commands ran, \(counts.parsed) parsed (run by make test itself), \(counts.tour) in the README tour (run by Scripts/check-tour.sh)")
        guard failures.isEmpty else {
            print("check-docs: \(failures.count) failed:")
            failures.forEach { print($0) }
            throw ExitCode(1)
        }
    }

    /// Checks one command; true when it was run.
    func check(_ c: Command, targets: Set<String>, tests: () throws -> [String]) throws -> Bool {
        var words = try Self.words(c.text)
        if words.first == "flock", words.count > 2 { words.removeFirst(2) }  // `flock LOCK cmd …`
        guard let program = words.first else { return false }
        switch program {
        case "xfrmlab", ".build/debug/xfrmlab", ".build/release/xfrmlab", "$B":
            let arguments = Array(words.dropFirst())
            do {
                _ = try XfrmLab.parseAsRoot(arguments)
            } catch {
                throw ValidationError("xfrmlab does not accept it: \(XfrmLab.message(for: error))")
            }
            guard !c.inTour, !parseOnly, Self.isCheap(arguments) else { return false }
            let me = selfPath()
            let r = try Namespaces.Process.execute([me] + arguments, timeout: 300)
            // `xfrmlab run` exits 2 when the kernel lacks what the scenario needs, as documented.
            guard r.status == 0 || (arguments.first == "run" && r.status == 2) else {
                throw ValidationError("exit \(r.status): \(String((r.standardError + r.standardOutput).suffix(600)))")
            }
            return true
        case "make":
            for t in words.dropFirst() where !t.contains("=") && !t.hasPrefix("-") {
                guard targets.contains(t) else { throw ValidationError("the Makefile has no target \(t)") }
            }
            return false
        case "swift":
            if let i = words.firstIndex(of: "--filter"), i + 1 < words.count {
                let filter = try NSRegularExpression(pattern: words[i + 1])
                guard try tests().contains(where: { filter.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }) else {
                    throw ValidationError("--filter \(words[i + 1]) selects no test of `swift test list`")
                }
            }
            return false
        default:
            guard !c.inTour, !parseOnly else { return false }
            let r = try Namespaces.Process.execute(["bash", "-c", c.text], timeout: 120)
            guard r.succeeded else { throw ValidationError("exit \(r.status): \(String((r.standardError + r.standardOutput).suffix(600)))") }
            return true
        }
    }

    /// Quick, and harmless on a machine whose kernel cache make test has already filled.
    static func isCheap(_ arguments: [String]) -> Bool {
        guard let sub = arguments.first else { return true }
        switch sub {
        case "matrix", "bisect", "bench", "report", "up", "init": return false  // long, or write files / leave a run up
        case "kernels": return arguments.dropFirst().first.map { ["list", "fetch"].contains($0) } ?? true
        case "reproduce": return !arguments.contains("--kernel")
        default: return true
        }
    }

    /// The commands of a Markdown page: every line of ```sh and ```bash blocks (continuations
    /// joined, comments dropped, `NAME=value` lines left out), and `$ ` lines of other blocks.
    static func commands(in text: String, file: String) -> [Command] {
        var out: [Command] = []
        var block: String?
        var pending: (line: Int, text: String)?
        var inTour = false
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = String(raw)
            if line.hasPrefix("## ") { inTour = file.hasSuffix("README.md") && line.hasPrefix("## A five-minute tour") }
            if line.hasPrefix("```") {
                block = block == nil ? String(line.dropFirst(3)).trimmingCharacters(in: .whitespaces) : nil
                continue
            }
            guard let language = block else { continue }
            var body: String
            if language == "sh" || language == "bash" {
                body = line
            } else if line.hasPrefix("$ ") {
                body = String(line.dropFirst(2))
            } else {
                continue
            }
            body = stripComment(body).trimmingCharacters(in: .whitespaces)
            if var p = pending {
                p.text += " " + body
                pending = p
            } else if !body.isEmpty {
                pending = (i + 1, body)
            }
            guard let p = pending else { continue }
            if p.text.hasSuffix("\\") {
                pending = (p.line, String(p.text.dropLast()).trimmingCharacters(in: .whitespaces))
                continue
            }
            pending = nil
            if p.text.range(of: #"^[A-Za-z_][A-Za-z0-9_]*="#, options: .regularExpression) != nil { continue }
            out.append(Command(file: file, line: p.line, text: p.text, inTour: inTour))
        }
        return out
    }

    /// A line without its `# comment` (a `#` outside quotes, after a space).
    static func stripComment(_ line: String) -> String {
        var quote: Character?
        var previous: Character = " "
        for (offset, ch) in line.enumerated() {
            if let q = quote {
                if ch == q { quote = nil }
            } else if ch == "'" || ch == "\"" {
                quote = ch
            } else if ch == "#" && previous == " " {
                return String(line.prefix(offset))
            }
            previous = ch
        }
        return line
    }

    /// Shell words: quotes removed, nothing expanded.
    static func words(_ text: String) throws -> [String] {
        var words: [String] = []
        var word: String?
        var quote: Character?
        var escaped = false
        for ch in text {
            if escaped { word = (word ?? "") + String(ch); escaped = false; continue }
            if let q = quote {
                if ch == q { quote = nil } else { word = (word ?? "") + String(ch) }
                continue
            }
            switch ch {
            case "\\": escaped = true
            case "'", "\"": quote = ch; word = word ?? ""
            case " ", "\t": if let w = word { words.append(w); word = nil }
            default: word = (word ?? "") + String(ch)
            }
        }
        guard quote == nil else { throw ValidationError("an unclosed \(quote!) quote") }
        if let w = word { words.append(w) }
        return words
    }
}
