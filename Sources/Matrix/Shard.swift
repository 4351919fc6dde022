import Foundation
import Glibc
import Namespaces

/// One share of a matrix's (kernel, test) cells, for a CI system that fans the matrix out over
/// several machines (`xfrmlab matrix --shard I/N`), and the join of the shares' results
/// (`xfrmlab matrix merge`) into the report one run would have written.
///
/// Every kernel's selected tests (its `--only`, the `--filter`, as the guest would select them)
/// are numbered kernel after kernel and dealt round robin, so each share gets about as many cells
/// of each kernel; a kernel with no cell in a share is not booted there. A test that runs alone
/// keeps running alone, after the rest, in the share that has it.
public struct MatrixShard: Sendable, Equatable, CustomStringConvertible {
    /// 1-based.
    public var index: Int
    public var count: Int

    public struct Problem: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/")
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]), n >= 1, (1...n).contains(i) else {
            throw Problem(description: "--shard \(text): expected I/N with 1 ≤ I ≤ N (1/3, 2/3, 3/3)")
        }
        index = i
        count = n
    }

    public var description: String { "\(index)/\(count)" }

    /// A test the binary holds: its ID as cells name it, and the ID with its source location,
    /// which is what Swift Testing matches a `--filter` against (a suite's file name selects the
    /// tests declared in that file).
    public struct ListedTest: Sendable {
        public var id: String
        public var fullID: String
    }

    /// The binary's tests (`--list-tests`, read from its event stream for their full IDs).
    public static func listTests(binary: String) throws -> [ListedTest] {
        let stream = NSTemporaryDirectory() + "xfrmlab-list-\(getpid()).jsonl"
        defer { unlink(stream) }
        let r = try Namespaces.Process.execute([binary, "--testing-library", "swift-testing", "--list-tests",
                                                "--experimental-event-stream-output", stream,
                                                "--experimental-event-stream-version", "0"], timeout: 120)
        guard r.succeeded, let text = try? String(contentsOfFile: stream, encoding: .utf8) else {
            throw Problem(description: "\(binary) --list-tests: \(r)")
        }
        var tests: [ListedTest] = []
        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], object["kind"] as? String == "test",
                  let payload = object["payload"] as? [String: Any], payload["kind"] as? String == "function",
                  let full = payload["id"] as? String else { continue }
            tests.append(ListedTest(id: SuiteRun.stripLocation(full), fullID: full))
        }
        guard !tests.isEmpty else { throw Problem(description: "\(binary) --list-tests listed no test") }
        // Listed in whatever order discovery finished: every share must deal the same deck.
        return tests.sorted { $0.id < $1.id }
    }

    /// The cells of every kernel of `options`, in order: what the guest would run there.
    public static func cells(of options: MatrixRunner.Options, tests: [ListedTest]) throws -> [(kernel: String, test: String, alone: Bool)] {
        func regexes(_ patterns: [String]) throws -> [NSRegularExpression] { try patterns.map { try NSRegularExpression(pattern: $0) } }
        func matches(_ r: [NSRegularExpression], _ id: String) -> Bool {
            r.contains { $0.firstMatch(in: id, range: NSRange(id.startIndex..., in: id)) != nil }
        }
        let drill = ProcessInfo.processInfo.environment["XFRMLAB_CRASH_DRILL"] == "1"
        var out: [(kernel: String, test: String, alone: Bool)] = []
        for k in options.kernels {
            let only = options.only[k.label]
            // The guest's filters are alternatives: the run's and the kernel's own.
            let selecting = try regexes(options.filters + (only ?? []))
            // Run alone: the kernel's own always; the run's only in a whole-suite run.
            let alone = try regexes((options.aloneOn[k.label] ?? []) + (selecting.isEmpty ? options.alone : []))
            let except = try regexes(options.except[k.label] ?? [])
            for t in tests where (drill || !t.fullID.contains(GuestDriver.skippedByDefault)) && (selecting.isEmpty || matches(selecting, t.fullID))
                && !matches(except, t.fullID) {
                out.append((k.label, t.id, matches(alone, t.fullID)))
            }
        }
        return out
    }

    /// Narrows `options` to this share. Returns how many cells each kernel has in it.
    public func apply(to options: inout MatrixRunner.Options, tests: [ListedTest]) throws -> [String: Int] {
        let all = try MatrixShard.cells(of: options, tests: tests)
        let mine = all.enumerated().filter { $0.offset % count == index - 1 }.map(\.element)
        var perKernel: [String: Int] = [:]
        var only: [String: [String]] = [:], aloneOn: [String: [String]] = [:]
        for cell in mine {
            perKernel[cell.kernel, default: 0] += 1
            only[cell.kernel, default: []].append(SuiteRun.filter(for: cell.test))
            if cell.alone { aloneOn[cell.kernel, default: []].append(SuiteRun.filter(for: cell.test)) }
        }
        options.kernels = options.kernels.filter { perKernel[$0.label] != nil }
        options.filters = []
        options.alone = []
        options.only = only
        options.aloneOn = aloneOn
        return perKernel
    }
}

extension MatrixReport {
    /// The shares' reports as one: each kernel's cells from the share that ran them, its
    /// warnings and crashes from all, the rows named as the shares named them, the differences,
    /// the mutation score and the overall verdict computed again over the whole.
    public static func merge(_ shares: [MatrixReport]) throws -> MatrixReport {
        // A share with no cell of any kernel ran nothing (more shares than cells): it adds nothing.
        let parts = shares.filter { !$0.kernels.isEmpty }
        guard let first = parts.first else { throw MatrixShard.Problem(description: "nothing to merge: no share ran a kernel") }
        var kernels: [KernelResult] = []
        for part in parts {
            for k in part.kernels {
                guard let i = kernels.firstIndex(where: { $0.kernel.label == k.kernel.label }) else {
                    kernels.append(k)
                    continue
                }
                var m = kernels[i]
                guard m.kernel.release == k.kernel.release else {
                    throw MatrixShard.Problem(description: "kernel \(k.kernel.label) is \(m.kernel.release ?? "?") in one share and \(k.kernel.release ?? "?") in another")
                }
                // A share's MISSING (a test of its own that never ran) stays, unless another share ran it.
                func ran(_ c: Cell) -> Bool { c.verdict != .notSelected && c.verdict != .missing }
                for (id, cell) in k.cells where cell.verdict != .notSelected {
                    let had = m.cells[id]
                    if ran(cell), let had, ran(had) {
                        throw MatrixShard.Problem(description: "\(id) ran on \(k.kernel.label) in two shares")
                    }
                    if ran(cell) || had == nil || had!.verdict == .notSelected { m.cells[id] = cell }
                }
                if m.status == .ok { m.status = k.status; m.statusDetail = k.statusDetail }
                m.warnings += k.warnings
                m.crashes += k.crashes
                m.notes += k.notes
                m.only = (m.only ?? []) + (k.only ?? [])
                if let e = k.except { m.except = Array(Set((m.except ?? []) + e)).sorted() }
                m.timings.suite = (m.timings.suite ?? 0) + (k.timings.suite ?? 0)
                m.timings.wall = (m.timings.wall ?? 0) + (k.timings.wall ?? 0)
                kernels[i] = m
            }
        }
        for i in kernels.indices {
            // The not-selected fill-ins go; complete() fills them again for the whole.
            kernels[i].cells = kernels[i].cells.filter { $0.value.verdict != .notSelected }
        }
        var report = MatrixReport(created: parts.map(\.created).max() ?? first.created, host: first.host, accelerator: first.accelerator,
                                  acceleratorReason: first.acceleratorReason, expectations: first.expectations,
                                  testBinary: first.testBinary, kernels: kernels)
        var named: [String: Row] = [:]
        var order: [String] = []
        for part in parts {
            for row in part.rows where named[row.id] == nil || named[row.id]!.suite.isEmpty {
                if named[row.id] == nil { order.append(row.id) }
                named[row.id] = row
            }
        }
        let position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
        report.rows = report.rows.map { named[$0.id] ?? $0 }.sorted { (position[$0.id] ?? Int.max, $0.id) < (position[$1.id] ?? Int.max, $1.id) }
        if parts.contains(where: { !$0.ok }) && report.ok {
            // A share that failed for a reason the cells do not show (stopped by a signal) keeps the whole failed.
            report.ok = parts.allSatisfy(\.ok)
        }
        return report
    }

    /// The kernel selftests' format (KTAP version 1): a subtest per kernel, a line per test
    /// (`# SKIP` with its reason; XFAIL for an expected failure; tests a kernel did not run
    /// are left out), so kernel CI systems can ingest the matrix.
    public func ktap() -> String {
        func clean(_ s: String) -> String { s.replacingOccurrences(of: "#", with: "").replacingOccurrences(of: "\n", with: " ") }
        var out = ["KTAP version 1", "1..\(kernels.count)"]
        for (n, k) in kernels.enumerated() {
            let cells = rows.compactMap { row in k.cells[row.id].map { (row.id, $0) } }
                .filter { $0.1.verdict != .notSelected }
            out.append("    KTAP version 1")
            out.append("    # Subtest: \(clean(k.kernel.label)) (\(clean(k.release ?? k.kernel.release ?? "?")))")
            out.append("    1..\(cells.count)")
            for (i, (id, cell)) in cells.enumerated() {
                let name = clean(id)
                switch cell.verdict {
                case .pass, .flaky, .xpass: out.append("    ok \(i + 1) \(name)")
                case .skip, .unexpectedSkip:
                    out.append("    ok \(i + 1) \(name) # SKIP \(clean(cell.detail ?? ""))")
                case .xfail: out.append("    not ok \(i + 1) \(name) # XFAIL \(clean(cell.detail ?? ""))")
                default:
                    out.append("    # \(clean(cell.verdict.rawValue)): \(clean(String((cell.detail ?? "").prefix(200))))")
                    out.append("    not ok \(i + 1) \(name)")
                }
            }
            out.append("\(k.problems == 0 && k.status == .ok ? "ok" : "not ok") \(n + 1) \(clean(k.kernel.label))")
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// The report.json of an earlier run's folder.
    public static func load(directory: String) throws -> MatrixReport {
        guard let data = FileManager.default.contents(atPath: directory + "/report.json") else {
            throw MatrixShard.Problem(description: "\(directory)/report.json: no such file")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(MatrixReport.self, from: data)
    }

    /// report.json, junit.xml, report.txt, report.html and report.ktap into `directory`.
    public func write(to directory: String) throws {
        try json().write(to: URL(fileURLWithPath: directory + "/report.json"))
        try Data(junit().utf8).write(to: URL(fileURLWithPath: directory + "/junit.xml"))
        try Data(text().utf8).write(to: URL(fileURLWithPath: directory + "/report.txt"))
        try Data(html(directory: directory).utf8).write(to: URL(fileURLWithPath: directory + "/report.html"))
        try Data(ktap().utf8).write(to: URL(fileURLWithPath: directory + "/report.ktap"))
    }
}
