import Foundation

/// What one test did in one run of the test binary, read from Swift Testing's JSON event
/// stream (`--event-stream-output-path`, version 0) — the verdicts, the skip comments and the
/// issue texts, with the instants needed to match kernel log lines to the test that ran.
public struct TestRecord: Codable, Sendable, Equatable {
    public enum Outcome: String, Codable, Sendable {
        case passed, failed, skipped
        /// Started, never ended: the test binary crashed, hung or was killed during it.
        case didNotFinish
        /// Listed, never started.
        case notRun
    }

    /// `Module.Suite/function()` (the event stream's ID without its source location).
    public var id: String
    /// The test's display name (its `@Test("…")` text), or its function name.
    public var name: String
    /// The enclosing suite's ID and display name.
    public var suite: String
    public var suiteName: String
    public var outcome: Outcome
    /// The skip comment (a capability trait's reason, `Test.cancel`'s text).
    public var reason: String?
    /// Each recorded issue: "File.swift:12: Expectation failed: …".
    public var issues: [String]
    public var knownIssues: Int
    /// Seconds on the test binary's clock (`instant.absolute`: CLOCK_MONOTONIC on Linux).
    public var started: Double?
    public var ended: Double?

    public var seconds: Double? { started.flatMap { s in ended.map { $0 - s } } }
}

/// One run of the test binary.
public struct SuiteRun: Codable, Sendable {
    /// In the order the binary listed them.
    public var tests: [TestRecord]
    public var runStarted: Double?
    public var runEnded: Double?
    /// The wall clock (seconds since 1970) at the first `testStarted` of a function.
    public var firstTestWallClock: Double?
    /// Issues recorded outside any test.
    public var strayIssues: [String]

    public var finished: Bool { runEnded != nil }

    public subscript(id: String) -> TestRecord? { tests.first { $0.id == id } }

    /// Reads an event stream. Lines that do not parse (a stream cut short by a crash) are skipped.
    public static func parse(_ text: String) -> SuiteRun {
        var order: [String] = []
        var records: [String: TestRecord] = [:]
        var suites: [String: String] = [:]  // suite ID → display name
        var skippedSuites: [(id: String, reason: String)] = []
        var run = SuiteRun(tests: [], runStarted: nil, runEnded: nil, firstTestWallClock: nil, strayIssues: [])

        for line in text.split(separator: "\n") {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let kind = object["kind"] as? String, let payload = object["payload"] as? [String: Any] else { continue }
            if kind == "test" {
                let rawID = payload["id"] as? String ?? ""
                let id = stripLocation(rawID)
                let display = payload["displayName"] as? String
                let name = payload["name"] as? String ?? id
                if payload["kind"] as? String == "suite" {
                    suites[id] = display ?? name
                    continue
                }
                guard records[id] == nil else { continue }
                let suite = parentID(of: id)
                order.append(id)
                records[id] = TestRecord(id: id, name: display ?? name, suite: suite, suiteName: suites[suite] ?? suite,
                                         outcome: .notRun, reason: nil, issues: [], knownIssues: 0, started: nil, ended: nil)
                continue
            }
            guard kind == "event", let event = payload["kind"] as? String else { continue }
            let instant = (payload["instant"] as? [String: Any])
            let absolute = instant?["absolute"] as? Double
            let id = (payload["testID"] as? String).map(stripLocation)
            let comments = (payload["_comments"] as? [String]) ?? []
            let messages = ((payload["messages"] as? [[String: Any]]) ?? []).compactMap { $0["text"] as? String }

            switch event {
            case "runStarted": run.runStarted = absolute
            case "runEnded": run.runEnded = absolute
            case "testStarted":
                guard let id, records[id] != nil else { continue }
                records[id]!.started = absolute
                if records[id]!.outcome == .notRun { records[id]!.outcome = .didNotFinish }
                if run.firstTestWallClock == nil { run.firstTestWallClock = instant?["since1970"] as? Double }
            case "testSkipped":
                guard let id else { continue }
                let reason = comments.isEmpty ? messages.joined(separator: " ") : comments.joined(separator: "; ")
                if records[id] != nil {
                    records[id]!.outcome = .skipped
                    records[id]!.reason = reason
                } else {
                    skippedSuites.append((id, reason))
                }
            case "testCancelled":
                // `Test.cancel("…")`: a skip decided while the test ran.
                guard let id, records[id] != nil else { continue }
                records[id]!.outcome = .skipped
                records[id]!.reason = comments.isEmpty ? messages.joined(separator: " ") : comments.joined(separator: "; ")
            case "issueRecorded":
                let issue = payload["issue"] as? [String: Any]
                let known = issue?["isKnown"] as? Bool ?? false
                let location = (issue?["sourceLocation"] as? [String: Any]).map { loc -> String in
                    let file = (loc["fileID"] as? String).map { String($0.split(separator: "/").last ?? "") } ?? "?"
                    return "\(file):\(loc["line"] as? Int ?? 0): "
                } ?? ""
                let text = location + messages.joined(separator: " — ")
                if let id, records[id] != nil {
                    if known { records[id]!.knownIssues += 1 } else { records[id]!.issues.append(text) }
                } else if let id, suites[id] != nil, !known {
                    // A suite-level issue (its init threw): every test in it failed.
                    for child in order where records[child]!.suite == id || records[child]!.suite.hasPrefix(id + ".") {
                        records[child]!.issues.append("suite: " + text)
                    }
                    if !order.contains(where: { records[$0]!.suite == id }) { run.strayIssues.append(text) }
                } else if !known {
                    run.strayIssues.append(text)
                }
            case "testEnded":
                guard let id, records[id] != nil else { continue }
                records[id]!.ended = absolute
                if records[id]!.outcome == .didNotFinish || records[id]!.outcome == .notRun {
                    records[id]!.outcome = records[id]!.issues.isEmpty ? .passed : .failed
                }
            default: continue
            }
        }
        // A suite skipped by a trait skips its tests without an event for each.
        for (suite, reason) in skippedSuites {
            for id in order where records[id]!.outcome == .notRun && (records[id]!.suite == suite || records[id]!.suite.hasPrefix(suite + ".")) {
                records[id]!.outcome = .skipped
                records[id]!.reason = reason
            }
        }
        // An issue can arrive for a test that then ends; a failed outcome needs an issue.
        for id in order where records[id]!.outcome == .passed && !records[id]!.issues.isEmpty { records[id]!.outcome = .failed }
        run.tests = order.map { records[$0]! }
        return run
    }

    /// Several runs of the binary over disjoint tests (the main run, tests run alone) as one.
    public static func merged(_ runs: [SuiteRun]) -> SuiteRun {
        var out = SuiteRun(tests: [], runStarted: runs.compactMap(\.runStarted).min(),
                           runEnded: runs.allSatisfy(\.finished) ? runs.compactMap(\.runEnded).max() : nil,
                           firstTestWallClock: runs.compactMap(\.firstTestWallClock).min(), strayIssues: runs.flatMap(\.strayIssues))
        var seen = Set<String>()
        for run in runs {
            for t in run.tests where !seen.contains(t.id) {
                // A test the main run skipped by filter is not listed there; if listed twice, the run that started it wins.
                if let other = runs.lazy.compactMap({ $0[t.id] }).first(where: { $0.started != nil }) { out.tests.append(other) } else { out.tests.append(t) }
                seen.insert(t.id)
            }
        }
        return out
    }

    /// `LabTests.Suite/f()/File.swift:12:6` → `LabTests.Suite/f()`.
    static func stripLocation(_ id: String) -> String {
        let parts = id.split(separator: "/", omittingEmptySubsequences: false)
        if let last = parts.last, last.contains(".swift:") { return parts.dropLast().joined(separator: "/") }
        return id
    }

    static func parentID(of id: String) -> String {
        guard let slash = id.lastIndex(of: "/") else {
            return id.split(separator: ".").dropLast().joined(separator: ".")
        }
        return String(id[..<slash])
    }

    /// A `--filter` regular expression that selects this test. (Swift Testing matches it
    /// against more than the bare ID, so `^…$` anchors select nothing.)
    public static func filter(for id: String) -> String {
        let special = Set("\\^$.|?*+()[]{}")
        return String(id.flatMap { special.contains($0) ? ["\\", $0] : [$0] })
    }
}
