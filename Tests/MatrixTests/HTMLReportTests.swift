import Foundation
import Testing
@testable import Matrix

/// report.html: one self-contained page per matrix run.
@Suite("The matrix report as HTML")
struct HTMLReportTests {
    /// Two kernels whose results differ, with result files laid out as a run leaves them.
    func sample() throws -> (report: MatrixReport, directory: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xlhtml\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let files = ["kernels/host/results/tests.log", "kernels/host/results/tests-alone-1.log", "kernels/host/results/kmsg.txt", "kernels/6.1/results/tests.log",
                     "kernels/6.1/results/kmsg.txt", "kernels/6.1/results/captures/west eth1.pcap",
                     "kernels/6.1/results/daemons/xl1a2b3c-west.charon/charon.log", "kernels/6.1/console.log",
                     "kernels/6.1/results/pictures/deliberately_wrong.svg"]
        for f in files {
            try FileManager.default.createDirectory(atPath: (directory + "/" + f as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try "x\n".write(toFile: directory + "/" + f, atomically: true, encoding: .utf8)
        }
        var host = emptyResult(kernel("host", release: "6.18.44"), version: "6.18.44")
        host.directory = directory + "/kernels/host"
        host.cells = ["T/esp()": Cell(verdict: .skip, detail: "kernel lacks ESP: <proto esp> → ENOSYS"), "T/veth()": Cell(verdict: .pass)]
        host.capabilities = [Capability(name: "esp", value: "no", detail: "Requested type not found"), Capability(name: "veth", value: "yes")]
        host.config = ["CONFIG_INET_ESP": "n", "CONFIG_VETH": "y"]
        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        vm.directory = directory + "/kernels/6.1"
        vm.cells = ["T/esp()": Cell(verdict: .pass), "T/veth()": Cell(verdict: .fail, detail: "Expectation failed: a & b")]
        vm.capabilities = [Capability(name: "esp", value: "yes"), Capability(name: "veth", value: "yes")]
        vm.config = ["CONFIG_INET_ESP": "m", "CONFIG_VETH": "m"]
        vm.timings.wall = 452
        var report = MatrixReport(created: Date(timeIntervalSince1970: 1_795_000_000), host: "6.18.44", accelerator: "tcg",
                                  acceleratorReason: "nested KVM fails", expectations: "Fixtures/matrix/expectations.yaml", testBinary: "t", kernels: [host, vm])
        report.name(tests: [])
        return (report, directory)
    }

    @Test("tests × kernels with the differing row highlighted, reasons escaped, capabilities, config and the verdict")
    func content() throws {
        let (report, directory) = try sample()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let html = report.html(directory: directory)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.contains("<p id=\"verdict\" class=\"banner bad\">MATRIX FAILED: 2 passed, 1 failed, 1 skipped on 2 kernels</p>"))
        #expect(html.contains("<tr class=\"test differs\" id=\"t-T_esp__\">"))
        #expect(html.contains("<td class=\"v-skip\" title=\"kernel lacks ESP: &lt;proto esp&gt; → ENOSYS\">skip</td><td class=\"v-pass\">pass</td>"))
        #expect(html.contains("<tr class=\"test differs\" id=\"t-T_veth__\">"), "pass against FAIL differs")
        #expect(html.contains("<pre>Expectation failed: a &amp; b</pre>"))
        #expect(html.contains("<tr class=\"differs\"><td><code>esp</code></td><td class=\"v-skip\"><b>no</b><br><small>Requested type not found</small></td>"))
        #expect(html.contains("<tr class=\"differs\"><td><code>CONFIG_INET_ESP</code></td><td class=\"v-skip\">n</td><td class=\"v-pass\">m</td></tr>"))
        #expect(html.contains("452.0 s"))
    }

    @Test("result files are linked relative to the page, grouped: test output, kernel log, captures, daemon logs")
    func links() throws {
        let (report, directory) = try sample()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let html = report.html(directory: directory)
        #expect(html.contains("<li>Test output: <a href=\"kernels/host/results/tests-alone-1.log\">results/tests-alone-1.log</a> (2 B), <a href=\"kernels/host/results/tests.log\">results/tests.log</a> (2 B)</li>"))
        #expect(html.contains("<li>Kernel log: <a href=\"kernels/6.1/console.log\">console.log</a> (2 B), <a href=\"kernels/6.1/results/kmsg.txt\">results/kmsg.txt</a> (2 B)</li>"))
        #expect(html.contains("<li>Packet captures: <a href=\"kernels/6.1/results/captures/west%20eth1.pcap\">results/captures/west eth1.pcap</a>"))
        #expect(html.contains("<li>Trace pictures: <a href=\"kernels/6.1/results/pictures/deliberately_wrong.svg\">results/pictures/deliberately_wrong.svg</a> (2 B)</li>"))
        #expect(html.contains("<li>Daemon logs: <a href=\"kernels/6.1/results/daemons/xl1a2b3c-west.charon/charon.log\">"))
        // Self-contained: no scheme, no absolute path, nothing fetched.
        for needle in ["http:", "https:", "src=", "href=\"/", "<script", "<link"] { #expect(!html.contains(needle), "\(needle)") }
    }

    static let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    /// A matrix guest (virtme-ng puts `virtme_hostname=` on the kernel command line). The page
    /// does not depend on the kernel, and a browser under TCG costs minutes of a guest's time:
    /// rendering is checked on the host (Fixtures/matrix/expectations.yaml allows this skip).
    static let inMatrixGuest = ((try? String(contentsOfFile: "/proc/cmdline", encoding: .utf8)) ?? "").contains("virtme_hostname=")

    @Test("the guest's skip of the Chromium check is allowed on any kernel by the repository's expectations")
    func guestSkipAllowed() throws {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" && !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        let rules = try Expectations.load(path: url.path + "/Fixtures/matrix/expectations.yaml")
        let test = TestRecord(id: "MatrixTests.HTMLReportTests/renders()", name: "headless Chromium renders the page",
                              suite: "MatrixTests.HTMLReportTests", suiteName: "The matrix report as HTML", outcome: .skipped,
                              reason: nil, issues: [], knownIssues: 0, started: nil, ended: nil)
        let reason = "headless Chromium runs on the host only: this is a virtme-ng guest (virtme_hostname= in /proc/cmdline)"
        for facts in [Expectations.KernelFacts(label: "6.1", isHost: false, release: "6.1.0-56-amd64", version: KernelVersion([6, 1, 192])),
                      Expectations.KernelFacts(label: "mine", isHost: false, release: "6.19.0-rc1", version: KernelVersion([6, 19]))] {
            #expect(rules.expectedSkip(test: test, reason: reason, on: facts) != nil, "\(facts.label)")
        }
        // Any other reason for skipping it stays unexpected.
        #expect(rules.expectedSkip(test: test, reason: "Chromium is not installed", on: Expectations.KernelFacts(
            label: "6.1", isHost: false, release: "6.1.0-56-amd64", version: KernelVersion([6, 1, 192]))) == nil)
    }

    @Test("headless Chromium renders the page: its DOM holds the verdict and the table, and a screenshot is drawn",
          .enabled(if: chromium != nil, "Chromium is not installed (make deps installs the Debian package chromium)"),
          .disabled(if: inMatrixGuest, "headless Chromium runs on the host only: this is a virtme-ng guest (virtme_hostname= in /proc/cmdline)"))
    func renders() throws {
        let (report, directory) = try sample()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try report.html(directory: directory).write(toFile: directory + "/report.html", atomically: true, encoding: .utf8)
        func chromium(_ args: [String]) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: HTMLReportTests.chromium!)
            // Its own profile directory: several runs at once must not share one. /dev/shm may be
            // small or absent in a matrix guest: shared memory files go to /tmp instead.
            p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--user-data-dir=\(directory)/profile"]
                + args + ["file://\(directory)/report.html"]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            // A browser that hangs (a slow TCG guest) is stopped: the read below then ends.
            let pid = p.processIdentifier
            DispatchQueue.global().asyncAfter(deadline: .now() + 120) { if p.isRunning { kill(pid, SIGKILL) } }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }
        let dom = try chromium(["--dump-dom"])
        #expect(dom.contains("MATRIX FAILED: 2 passed, 1 failed, 1 skipped on 2 kernels"), "\(dom.prefix(500))")
        #expect(dom.contains("<tr class=\"test differs\" id=\"t-T_esp__\">"))
        _ = try chromium(["--hide-scrollbars", "--window-size=1280,900", "--screenshot=\(directory)/report.png"])
        let png = try #require(FileManager.default.contents(atPath: directory + "/report.png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47]) && png.count > 10_000, "\(png.count) bytes")
    }
}
