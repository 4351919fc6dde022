import Foundation

/// The matrix report as one self-contained HTML page (`report.html` beside `report.json`):
/// verdicts of every test on every kernel with the rows that differ highlighted, the
/// capabilities and config, and per kernel its timings, problems, warnings and links to the
/// raw results (test log, kernel log, pcap captures, daemon logs) by paths relative to the page.
/// Embedded CSS, no script, no external resource: it opens from a CI artifact as it is.
extension MatrixReport {
    /// - Parameter directory: where the page will be written (the run's output directory);
    ///   kernels' result files under it are listed and linked relatively.
    public func html(directory: String) -> String {
        let labels = kernels.map(\.kernel.label)
        let formatter = ISO8601DateFormatter()
        var h: [String] = []
        h.append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        h.append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        h.append("<title>XfrmLab kernel matrix \(e(formatter.string(from: created)))</title>")
        h.append("<style>\(MatrixReport.css)</style></head><body>")

        // Verdict and totals.
        let problems = kernels.map(\.problems).reduce(0, +)
        let passed = kernels.map { $0.count(.pass) + $0.count(.flaky) }.reduce(0, +)
        let skipped = kernels.map { $0.count(.skip) + $0.count(.xfail) }.reduce(0, +)
        h.append("<header><h1>XfrmLab kernel matrix</h1>")
        h.append("<p class=\"meta\">\(e(formatter.string(from: created))) on \(e(host)) · " +
                 (kernels.contains { $0.kernel.source == .image } ? "VMs under \(e(accelerator.uppercased())) (\(e(acceleratorReason)))" : "no VMs") +
                 " · expectations <code>\(e(expectations))</code></p>")
        h.append("<p id=\"verdict\" class=\"banner \(ok ? "ok" : "bad")\">" + (ok ? "MATRIX OK" : "MATRIX FAILED") +
                 ": \(passed) passed, \(problems) failed, \(skipped) skipped on \(kernels.count) kernel\(kernels.count == 1 ? "" : "s")</p>")
        h.append("<nav><a href=\"#verdicts\">Verdicts</a> <a href=\"#differences\">Differences</a> <a href=\"#capabilities\">Capabilities</a> <a href=\"#config\">Config</a> <a href=\"#kernels\">Kernels</a></nav></header>")

        // Kernels at a glance.
        h.append("<section><h2>Kernels</h2><table class=\"kernels\"><thead><tr><th>kernel</th><th>version</th><th>ran</th><th>pass</th><th>skip</th><th>problems</th><th>boot</th><th>suite</th><th>wall</th></tr></thead><tbody>")
        for k in kernels {
            let t = k.timings
            h.append("<tr><td><a href=\"#kernel-\(anchor(k.kernel.label))\">\(e(k.kernel.label))</a></td><td>\(e(k.version ?? k.release ?? "?"))</td>" +
                     "<td class=\"\(k.status == .ok ? "v-pass" : "v-fail")\">\(e(k.status == .ok ? (k.kernel.source == .host ? "host" : "VM " + k.accelerator.uppercased()) : k.status.rawValue))</td>" +
                     "<td>\(k.count(.pass) + k.count(.flaky))</td><td>\(k.count(.skip) + k.count(.xfail))</td>" +
                     "<td class=\"\(k.problems > 0 ? "v-fail" : "")\">\(k.problems)</td><td>\(seconds(t.bootToFirstTest))</td><td>\(seconds(t.suite))</td><td>\(seconds(t.wall))</td></tr>")
        }
        h.append("</tbody></table></section>")

        // Tests × kernels.
        let differing = Set(differences.filter { $0.kind == "test" }.map(\.name))
        h.append("<section id=\"verdicts\"><h2>Verdicts</h2>")
        h.append("<p class=\"legend\"><span class=\"v-pass\">pass</span> <span class=\"v-flaky\">flaky</span> <span class=\"v-skip\">skip</span> <span class=\"v-xfail\">xfail</span> as expected (skip and xfail by a rule); <span class=\"v-fail\">FAIL</span> <span class=\"v-fail\">XPASS</span> <span class=\"v-fail\">SKIP!</span> <span class=\"v-fail\">WARN</span> <span class=\"v-fail\">HUNG</span> <span class=\"v-fail\">MISSING</span> are failures; <span class=\"v-none\">-</span>: not asked of that kernel (<code>--only</code>). <span class=\"differs-key\">Highlighted rows</span> behave differently on different kernels; hover a cell for its reason.</p>")
        h.append("<table class=\"verdicts\"><thead><tr><th>test</th>" + labels.map { "<th>\(e($0))</th>" }.joined() + "</tr></thead><tbody>")
        var suite: String?
        for row in rows {
            if row.suite != suite {
                suite = row.suite
                h.append("<tr class=\"suite\"><th colspan=\"\(labels.count + 1)\">\(e(row.suiteName.isEmpty ? row.suite : row.suiteName))</th></tr>")
            }
            let cells = kernels.map { k -> String in
                guard let c = k.cells[row.id] else { return "<td class=\"v-none\">—</td>" }
                let title = (c.report.map { "\($0.verdict): \($0.evidence)" } ?? c.detail).map { " title=\"\(e($0))\"" } ?? ""
                let report = c.report.map { "<br><span class=\"report\">\(e($0.verdict))</span>" } ?? ""
                return "<td class=\"v-\(c.verdict.cssClass)\"\(title)>\(e(c.verdict.cell))\(report)</td>"
            }
            h.append("<tr class=\"test\(differing.contains(row.id) ? " differs" : "")\" id=\"t-\(anchor(row.id))\"><td><span class=\"name\">\(e(row.name))</span><br><code>\(e(row.id))</code></td>" + cells.joined() + "</tr>")
        }
        h.append("</tbody></table></section>")

        // What differs, with the reasons in full.
        h.append("<section id=\"differences\"><h2>Differs between kernels (\(differing.count) test\(differing.count == 1 ? "" : "s"))</h2>")
        if differing.isEmpty { h.append("<p>none" + (kernels.count < 2 ? " (one kernel)" : "") + "</p>") }
        for d in differences where d.kind == "test" {
            h.append("<div class=\"difference\"><h3><a href=\"#t-\(anchor(d.name))\">\(e(rows.first { $0.id == d.name }?.name ?? d.name))</a></h3><dl>")
            for label in labels { if let v = d.values[label] { h.append("<dt>\(e(label))</dt><dd><pre>\(e(v))</pre></dd>") } }
            h.append("</dl></div>")
        }
        h.append("</section>")

        // Capabilities: every probe on every kernel.
        h.append("<section id=\"capabilities\"><h2>Capabilities (xfrmlab probe)</h2>")
        let probed = kernels.filter { $0.capabilities != nil }
        if probed.isEmpty {
            h.append("<p>no kernel was probed</p>")
        } else {
            var names: [String] = []
            for k in probed { for c in k.capabilities! where !names.contains(c.name) { names.append(c.name) } }
            h.append("<table class=\"capabilities\"><thead><tr><th>capability</th>" + probed.map { "<th>\(e($0.kernel.label))</th>" }.joined() + "</tr></thead><tbody>")
            for name in names {
                let values = probed.map { k in k.capabilities!.first { $0.name == name } }
                let differs = Set(values.map { $0.map { $0.value + ($0.detail ?? "") } ?? "—" }).count > 1
                h.append("<tr class=\"\(differs ? "differs" : "")\"><td><code>\(e(name))</code></td>" + values.map { c in
                    guard let c else { return "<td class=\"v-none\">—</td>" }
                    let cls = c.value == "yes" ? "v-pass" : c.value == "no" ? "v-skip" : ""
                    return "<td class=\"\(cls)\"><b>\(e(c.value))</b>" + (c.detail.map { "<br><small>\(e($0))</small>" } ?? "") + "</td>"
                }.joined() + "</tr>")
            }
            h.append("</tbody></table>")
        }
        for d in differences where d.kind == "counters" {
            h.append("<p>/proc/net/xfrm_stat counters: " + labels.compactMap { l in d.values[l].map { "\(e(l)) \(e($0))" } }.joined(separator: "; ") + "</p>")
        }
        h.append("</section>")

        // Config.
        h.append("<section id=\"config\"><h2>Kernel config</h2>")
        let configured = kernels.filter { !$0.config.isEmpty }
        if configured.isEmpty {
            h.append("<p>no kernel config was read</p>")
        } else {
            h.append("<table class=\"config\"><thead><tr><th>option</th>" + configured.map { "<th>\(e($0.kernel.label))</th>" }.joined() + "</tr></thead><tbody>")
            for option in highlightedConfigOptions {
                let values = configured.map { $0.config[option] ?? "n" }
                let differs = Set(values.map { $0 != "n" }).count > 1
                h.append("<tr class=\"\(differs ? "differs" : "")\"><td><code>\(e(option))</code></td>" +
                         values.map { "<td class=\"\($0 == "n" ? "v-skip" : "v-pass")\">\(e($0))</td>" }.joined() + "</tr>")
            }
            h.append("</tbody></table>")
            let sources = configured.compactMap { k in k.configSource.map { "\(e(k.kernel.label)): <code>\(e($0))</code>" } }
            if !sources.isEmpty { h.append("<p class=\"meta\">read from " + sources.joined(separator: "; ") + "</p>") }
        }
        h.append("</section>")

        // Per kernel.
        h.append("<section id=\"kernels\"><h2>Per kernel</h2>")
        for k in kernels {
            let bad = k.problems > 0 || k.status.isProblem
            h.append("<details id=\"kernel-\(anchor(k.kernel.label))\"\(bad || kernels.count == 1 ? " open" : "")><summary><b>\(e(k.kernel.label))</b> — \(e(k.status == .ok ? "ran" : k.status.rawValue.uppercased()))" +
                     (k.statusDetail.map { ": \(e($0))" } ?? "") + " · " +
                     Verdict.allCases.compactMap { v in k.count(v) == 0 ? nil : "\(k.count(v)) \(v.rawValue)" }.joined(separator: ", ") + "</summary>")
            h.append("<p><code>\(e(k.procVersion ?? k.kernel.banner ?? k.release ?? ""))</code></p>")
            h.append("<p>\(k.kernel.source == .host ? "on the host, no VM" : "VM, \(e(k.accelerator.uppercased()))"); boot to first test \(seconds(k.timings.bootToFirstTest)), suite \(seconds(k.timings.suite)), wall \(seconds(k.timings.wall))</p>")
            if let note = k.probeNote { h.append("<p>probe: \(e(note))</p>") }
            if let pinned = k.kernel.pinned {
                h.append("<p class=\"note\">pinned by the catalogue as \(e(pinned)): \(e((k.kernel.packages ?? []).joined(separator: ", ")))</p>")
            }
            for note in k.notes { h.append("<p class=\"note\">note: \(e(note))</p>") }
            for c in k.crashes {
                h.append("<div class=\"problem\"><p><span class=\"v-fail\">CRASH</span> \(e(c.summary))</p><pre>\(e(c.lines.joined(separator: "\n")))</pre></div>")
            }
            let problemCells = k.cells.filter { $0.value.verdict.isProblem || $0.value.verdict == .flaky }.sorted { $0.key < $1.key }
            if !problemCells.isEmpty {
                h.append("<h3>Problems</h3>")
                for (id, c) in problemCells {
                    h.append("<div class=\"problem\"><p><span class=\"v-\(c.verdict.cssClass)\">\(e(c.verdict.cell))</span> <a href=\"#t-\(anchor(id))\"><code>\(e(id))</code></a>" +
                             (c.expectation.map { " <small>(rule: \(e($0)))</small>" } ?? "") + "</p><pre>\(e(c.detail ?? ""))</pre></div>")
                }
            }
            for w in k.warnings {
                let blame = w.test.map { "during \($0)" } ?? (w.candidates.isEmpty ? "outside any test" : "while \(w.candidates.count) tests ran: \(w.candidates.joined(separator: ", "))")
                h.append("<h3>Kernel warning \(e(blame))</h3><pre class=\"warning\">\(e(w.warning.lines.joined(separator: "\n")))</pre>")
            }
            if let tail = k.consoleTail, !tail.isEmpty {
                h.append("<h3>Last console lines</h3><pre>\(e(tail.joined(separator: "\n")))</pre>")
            }
            h.append(MatrixReport.fileLinks(kernelDirectory: k.directory, reportDirectory: directory))
            h.append("</details>")
        }
        h.append("</section>")
        h.append("<footer>report.txt, report.json and junit.xml hold the same results; test binary <code>\(e(testBinary))</code></footer>")
        h.append("</body></html>")
        return h.joined(separator: "\n") + "\n"
    }

    /// Links to every file a kernel's run left (results/ and the console log), grouped, by paths
    /// relative to the report; files outside the report's directory are named, not linked.
    static func fileLinks(kernelDirectory: String, reportDirectory: String) -> String {
        let fm = FileManager.default
        let base = URL(fileURLWithPath: reportDirectory).standardized.path
        let kernel = URL(fileURLWithPath: kernelDirectory).standardized.path
        var files: [(path: String, size: Int)] = []
        for top in ["console.log", "results"] {
            let root = kernel + "/" + top
            var isDirectory: ObjCBool = false
            guard fm.fileExists(atPath: root, isDirectory: &isDirectory) else { continue }
            if !isDirectory.boolValue {
                files.append((root, (try? fm.attributesOfItem(atPath: root)[.size] as? Int) ?? 0))
                continue
            }
            for case let name as String in fm.enumerator(atPath: root) ?? FileManager.DirectoryEnumerator() {
                let path = root + "/" + name
                guard fm.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
                files.append((path, (try? fm.attributesOfItem(atPath: path)[.size] as? Int) ?? 0))
            }
        }
        if files.isEmpty { return "<p>no result files in <code>\(e(kernel))</code></p>" }
        func group(_ path: String) -> String {
            let name = (path as NSString).lastPathComponent
            if name.hasSuffix(".pcap") || name.hasSuffix(".pcapng") { return "Packet captures" }
            if path.contains("/pictures/") { return "Trace pictures" }
            if name == "kmsg.txt" || name == "console.log" { return "Kernel log" }
            if path.contains("/daemons/") || name.contains("charon") || name.contains("pluto") { return "Daemon logs" }
            // tests.log, events.jsonl, xunit.xml, and their -alone-N twins (tests run by themselves).
            if ["tests", "events", "xunit"].contains(where: { name.hasPrefix($0) }) { return "Test output" }
            return "Other"
        }
        var out = "<h3>Files</h3><ul class=\"files\">"
        for g in ["Test output", "Kernel log", "Trace pictures", "Packet captures", "Daemon logs", "Other"] {
            let members = files.filter { group($0.path) == g }.sorted { $0.path < $1.path }
            guard !members.isEmpty else { continue }
            out += "<li>\(g): " + members.map { f in
                let shown = f.path.hasPrefix(kernel + "/") ? String(f.path.dropFirst(kernel.count + 1)) : f.path
                let size = f.size >= 1 << 20 ? String(format: "%.1f MiB", Double(f.size) / 1048576) : f.size >= 1024 ? "\(f.size / 1024) KiB" : "\(f.size) B"
                guard f.path.hasPrefix(base + "/") else { return "<code>\(e(f.path))</code> (\(size))" }
                let relative = String(f.path.dropFirst(base.count + 1)).split(separator: "/")
                    .map { $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? String($0) }
                    .joined(separator: "/")
                return "<a href=\"\(e(relative))\">\(e(shown))</a> (\(size))"
            }.joined(separator: ", ") + "</li>"
        }
        return out + "</ul>"
    }

    static let css = """
    body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.5em 3em;color:#1d232a;background:#fff}
    h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}h3{font-size:1.05em;margin:1em 0 .3em}
    .meta{color:#57606a;margin:.2em 0}nav a{margin-right:1em}code{font:12px ui-monospace,"DejaVu Sans Mono",monospace;color:#57606a}
    .banner{font-weight:bold;padding:.5em .8em;border-radius:6px;display:inline-block}.banner.ok{background:#dafbe1;color:#116329}.banner.bad{background:#ffebe9;color:#a40e26}
    table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #d0d7de;padding:.25em .6em;text-align:left;vertical-align:top}thead th{background:#f6f8fa;position:sticky;top:0}
    table.verdicts td:not(:first-child),table.kernels td{text-align:center;white-space:nowrap}
    tr.suite th{background:#eef3f8;font-weight:600}tr.test td:first-child .name{font-weight:500}tr.test td:first-child code{font-size:11px}
    tr.differs>td:first-child{border-left:4px solid #d4a72c}tr.differs{background:#fff8c5}.differs-key{background:#fff8c5;border-left:4px solid #d4a72c;padding:0 .3em}
    .v-pass{background:#dafbe1;color:#116329}.v-flaky{background:#fff1c2;color:#7d4e00}.v-skip{background:#eaeef2;color:#424a53}.v-xfail{background:#eaeef2;color:#6e4b00}
    .v-fail{background:#ffebe9;color:#a40e26;font-weight:bold}.v-none{color:#8c959f}.legend span{padding:0 .35em;border-radius:3px}
    pre{background:#f6f8fa;padding:.5em .7em;border-radius:4px;white-space:pre-wrap;word-break:break-word;font:12px/1.4 ui-monospace,"DejaVu Sans Mono",monospace;margin:.2em 0}
    pre.warning{background:#ffebe9}details{border:1px solid #d0d7de;border-radius:6px;padding:.4em .8em;margin:.6em 0}summary{cursor:pointer}
    .difference dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em .8em;margin:.2em 0}.difference dt{font-weight:bold}.difference dd{margin:0}
    ul.files{padding-left:1.2em}footer{margin-top:2em;color:#57606a;font-size:.9em}small{color:#57606a}
    """
}

extension Verdict {
    /// The page's class for a verdict: problems share one look.
    var cssClass: String {
        switch self {
        case .pass: return "pass"
        case .flaky: return "flaky"
        case .skip: return "skip"
        case .xfail: return "xfail"
        case .notSelected: return "none"
        default: return "fail"
        }
    }
}

private func e(_ s: String) -> String { markupEscaped(s) }

private func anchor(_ s: String) -> String {
    String(s.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" })
}

private func seconds(_ v: Double?) -> String { v.map { String(format: "%.1f s", $0) } ?? "—" }
