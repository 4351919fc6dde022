import Foundation
import Testing
@testable import Matrix
import Kmsg

/// An event stream as Swift Testing 6.3 writes it (version 0), trimmed: a pass, a trait skip,
/// a `Test.cancel` skip, a failed expectation, a known issue, and a test that never ended.
let eventStream = #"""
{"kind":"test","payload":{"displayName":"S","id":"EvTests.S","kind":"suite","name":"S"},"version":0}
{"kind":"test","payload":{"displayName":"passes","id":"EvTests.S/p()/T.swift:3:4","kind":"function","name":"p()"},"version":0}
{"kind":"test","payload":{"displayName":"skips","id":"EvTests.S/s()/T.swift:4:4","kind":"function","name":"s()"},"version":0}
{"kind":"test","payload":{"displayName":"fails","id":"EvTests.S/f()/T.swift:5:4","kind":"function","name":"f()"},"version":0}
{"kind":"test","payload":{"displayName":"known","id":"EvTests.S/k()/T.swift:7:4","kind":"function","name":"k()"},"version":0}
{"kind":"test","payload":{"displayName":"runtime skip","id":"EvTests.S/rs()/T.swift:9:4","kind":"function","name":"rs()"},"version":0}
{"kind":"test","payload":{"displayName":"hangs","id":"EvTests.S/h()/T.swift:11:4","kind":"function","name":"h()"},"version":0}
{"kind":"test","payload":{"displayName":"never","id":"EvTests.S/n()/T.swift:12:4","kind":"function","name":"n()"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.0,"since1970":1795515985.0},"kind":"runStarted","messages":[]},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.1,"since1970":1795515985.1},"kind":"testStarted","messages":[],"testID":"EvTests.S"},"version":0}
{"kind":"event","payload":{"_comments":["ESP: Requested type not found (ip xfrm state add proto esp)"],"instant":{"absolute":10.1,"since1970":1795515985.1},"kind":"testSkipped","messages":[{"symbol":"skip","text":"Test \"skips\" skipped"}],"testID":"EvTests.S/s()/T.swift:4:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.2,"since1970":1795515985.2},"kind":"testStarted","messages":[],"testID":"EvTests.S/rs()/T.swift:9:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.2,"since1970":1795515985.2},"kind":"testStarted","messages":[],"testID":"EvTests.S/p()/T.swift:3:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":11.0,"since1970":1795515986.0},"kind":"testStarted","messages":[],"testID":"EvTests.S/f()/T.swift:5:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":11.0,"since1970":1795515986.0},"kind":"testStarted","messages":[],"testID":"EvTests.S/k()/T.swift:7:4"},"version":0}
{"kind":"event","payload":{"_comments":["no xfrmi: Unknown device type"],"instant":{"absolute":10.3,"since1970":1795515985.3},"kind":"testCancelled","messages":[],"testID":"EvTests.S/rs()/T.swift:9:4"},"version":0}
{"kind":"event","payload":{"_comments":["one is not two"],"instant":{"absolute":11.5,"since1970":1795515986.5},"issue":{"isKnown":false,"sourceLocation":{"column":29,"fileID":"EvTests/T.swift","line":5}},"kind":"issueRecorded","messages":[{"symbol":"fail","text":"Expectation failed: 1 == 2"},{"symbol":"details","text":"one is not two"}],"testID":"EvTests.S/f()/T.swift:5:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":11.5,"since1970":1795515986.5},"issue":{"isKnown":true,"sourceLocation":{"column":67,"fileID":"EvTests/T.swift","line":7}},"kind":"issueRecorded","messages":[{"symbol":"passWithKnownIssue","text":"Expectation failed: Bool(false)"}],"testID":"EvTests.S/k()/T.swift:7:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.3,"since1970":1795515985.3},"kind":"testEnded","messages":[],"testID":"EvTests.S/rs()/T.swift:9:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":10.9,"since1970":1795515985.9},"kind":"testEnded","messages":[{"symbol":"pass","text":"passed"}],"testID":"EvTests.S/p()/T.swift:3:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":12.0,"since1970":1795515987.0},"kind":"testEnded","messages":[{"symbol":"fail","text":"failed"}],"testID":"EvTests.S/f()/T.swift:5:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":12.0,"since1970":1795515987.0},"kind":"testEnded","messages":[],"testID":"EvTests.S/k()/T.swift:7:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":12.1,"since1970":1795515987.1},"kind":"testStarted","messages":[],"testID":"EvTests.S/h()/T.swift:11:4"},"version":0}
{"kind":"event","payload":{"instant":{"absolute":12.2,"since1970":1795515987.2},"kind":"te
"""#

func kernel(_ label: String, release: String, banner: String? = nil) -> Kernel {
    Kernel(label: label, source: label == "host" ? .host : .image, image: nil, modules: nil, release: release, banner: banner)
}

func emptyResult(_ k: Kernel, version: String?) -> KernelResult {
    KernelResult(kernel: k, status: .ok, statusDetail: nil, accelerator: "tcg", release: k.release, version: version, procVersion: nil,
                 configSource: nil, config: [:], capabilities: nil, probeNote: nil, timings: Timings(), cells: [:], warnings: [],
                 notes: [], directory: "/nowhere", consoleTail: nil)
}

@Suite("Reading the test binary's event stream")
struct EventStreamTests {
    let run = SuiteRun.parse(eventStream)

    @Test("each test gets its verdict, its skip comment and its issues, by ID without the source location")
    func verdicts() throws {
        #expect(run.tests.map(\.id) == ["EvTests.S/p()", "EvTests.S/s()", "EvTests.S/f()", "EvTests.S/k()", "EvTests.S/rs()", "EvTests.S/h()", "EvTests.S/n()"])
        #expect(run["EvTests.S/p()"]?.outcome == .passed)
        #expect(run["EvTests.S/p()"]?.name == "passes")
        #expect(run["EvTests.S/p()"]?.suiteName == "S")
        #expect(run["EvTests.S/s()"]?.outcome == .skipped)
        #expect(run["EvTests.S/s()"]?.reason == "ESP: Requested type not found (ip xfrm state add proto esp)")
        #expect(run["EvTests.S/rs()"]?.outcome == .skipped, "Test.cancel is a skip")
        #expect(run["EvTests.S/rs()"]?.reason == "no xfrmi: Unknown device type")
        let failed = try #require(run["EvTests.S/f()"])
        #expect(failed.outcome == .failed)
        #expect(failed.issues == ["T.swift:5: Expectation failed: 1 == 2 — one is not two"])
        #expect(run["EvTests.S/k()"]?.outcome == .passed, "a known issue does not fail a test")
        #expect(run["EvTests.S/k()"]?.knownIssues == 1)
    }

    @Test("a stream cut short leaves the running test unfinished and the rest not run")
    func cutShort() {
        #expect(!run.finished)
        #expect(run["EvTests.S/h()"]?.outcome == .didNotFinish)
        #expect(run["EvTests.S/n()"]?.outcome == .notRun)
        #expect(run["EvTests.S/f()"]?.started == 11.0)
        #expect(run["EvTests.S/f()"]?.ended == 12.0)
    }

    @Test("a test run by itself after the rest joins the main run's results")
    func merged() {
        let alone = SuiteRun.parse("""
            {"kind":"test","payload":{"displayName":"big","id":"EvTests.L/big()/L.swift:1:1","kind":"function","name":"big()"},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":30.0,"since1970":1},"kind":"runStarted","messages":[]},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":30.1,"since1970":1},"kind":"testStarted","messages":[],"testID":"EvTests.L/big()/L.swift:1:1"},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":39.0,"since1970":1},"kind":"testEnded","messages":[],"testID":"EvTests.L/big()/L.swift:1:1"},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":39.1,"since1970":1},"kind":"runEnded","messages":[]},"version":0}
            """)
        let all = SuiteRun.merged([run, alone])
        #expect(all.tests.count == run.tests.count + 1)
        #expect(all["EvTests.L/big()"]?.outcome == .passed)
        #expect(!all.finished, "the main run was cut short")
    }

    @Test("a retry filter is the ID with regex metacharacters escaped")
    func filter() {
        #expect(SuiteRun.filter(for: "LabTests.XfrmTests/esp(family:)") == #"LabTests\.XfrmTests/esp\(family:\)"#)
    }
}

@Suite("Kernels and their versions")
struct KernelTests {
    @Test("Debian's 6.1.0-56 release is the 6.1.192 its banner names; 6.12's release carries its version",
          arguments: [
              ("6.1.0-56-amd64", "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)", "6.1.192"),
              ("6.12.117+deb12-amd64", "6.12.117+deb12-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.117-1~deb12u1 (2026-11-14)", "6.12.117"),
              ("6.18.44-fc-v669", "", "6.18.44"),
              ("6.1.0-56-amd64", "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)", "6.1.192"),
          ])
    func version(release: String, banner: String, expected: String) {
        #expect(KernelVersion.of(release: release, banner: banner)?.description == expected)
    }

    @Test("versions compare numerically, missing parts as zero")
    func ordering() {
        #expect(KernelVersion([6, 1, 192]) < KernelVersion([6, 12]))
        #expect(KernelVersion([6, 9]) < KernelVersion([6, 10, 1]))
        #expect(KernelVersion([6, 1]) == KernelVersion([6, 1, 0]))
    }

    @Test("the catalogue's aliases name pinned entries: series, flavours, point releases; nothing else")
    func aliases() throws {
        let lock = try KernelLock.load(path: repositoryURL.path + "/" + KernelLock.defaultPath)
        #expect(lock.entry(for: "6.1")?.release == lock.kernels.first { $0.name == lock.series["6.1"] }?.release)
        #expect(lock.entry(for: "5.10.218")?.release == "5.10.0-30-amd64")
        #expect(lock.entry(for: "6.1-cloud")?.flavour == .cloud && lock.entry(for: "6.1-cloud")?.version == lock.entry(for: "6.1")?.version)
        #expect(lock.entry(for: "6.12-rt")?.release.hasSuffix("-rt-amd64") == true)
        #expect(lock.entry(for: "7.2")?.packages.map(\.name).contains { $0.hasPrefix("linux-modules-") } == true)
        for series in ["5.10", "6.1", "6.12", "7.2", "7.3-rc"] { #expect(lock.entry(for: series) != nil, "\(series)") }
        #expect(lock.entry(for: "6.2") == nil && lock.entry(for: "6.1-foo") == nil)
        // Every pin is exact: a package, a version and a checksum.
        for e in lock.kernels { #expect(e.packages.allSatisfy { !$0.version.isEmpty && $0.sha256.count == 64 }, "\(e.name)") }
        let boot = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-boot-\(getpid())").path
        try FileManager.default.createDirectory(atPath: boot, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: boot) }
        #expect(throws: KernelNotFound.self) { try KernelCatalog.resolve("6.2", lock: lock, boot: boot) }
    }

    @Test("the drift report looks for the same line of builds: another ABI number or point release, never another flavour or series")
    func driftPatterns() throws {
        for (release, name, matches) in [
            ("6.1.0-56-amd64", "6.1.0-57-amd64", true), ("6.1.0-56-amd64", "6.1.0-57-cloud-amd64", false),
            ("6.12.117+deb12-amd64", "6.12.118+deb12-amd64", true), ("6.12.117+deb12-amd64", "6.12.118+deb13-amd64", false),
            ("5.10.0-46-amd64", "5.10.0-47-amd64", true), ("5.10.0-46-amd64", "6.1.0-47-amd64", false),
            ("7.3-amd64", "7.3-amd64", true),
        ] {
            let pattern = "^" + DebianKernels.releasePattern(release) + "$"
            #expect((name.range(of: pattern, options: .regularExpression) != nil) == matches, "\(release) ~ \(name)")
        }
        #expect(DebianKernels.upstream("7.3~rc7-1~exp1") == "7.3-rc7" && DebianKernels.upstream("6.1.192-3") == "6.1.192")
        #expect(DebianKernels.older("6.1.170-3", than: "6.1.192-2") && !DebianKernels.older("6.12.118-1~deb12u1", than: "6.12.117-1~deb12u1"))
    }

    @Test("a lock with a mistake is refused with the field: a duplicate name, an alias to nothing, a bad checksum")
    func badLock() throws {
        let good = """
            series: { "6.1": "6.1.192" }
            kernels:
              - { name: "6.1.192", flavour: generic, version: "6.1.192", release: 6.1.0-56-amd64, suite: bookworm-security,
                  packages: [{ name: linux-image-6.1.0-56-amd64, version: "6.1.192-2", size: 1, sha256: \(String(repeating: "a", count: 64)) }] }
            """
        #expect(try KernelLock.parse(good, path: "k.lock").entry(for: "6.1")?.name == "6.1.192")
        let e1 = #expect(throws: KernelLockError.self) { try KernelLock.parse(good.replacingOccurrences(of: "\"6.1\": \"6.1.192\"", with: "\"6.1\": \"6.1.9\""), path: "k.lock") }
        #expect(e1?.description == "k.lock: series.6.1: \"6.1.9\" is no kernel of the lock")
        let e2 = #expect(throws: KernelLockError.self) { try KernelLock.parse(good.replacingOccurrences(of: String(repeating: "a", count: 64), with: "abc"), path: "k.lock") }
        #expect(e2?.description.contains("kernels[0].packages[0].sha256") == true)
    }

    @Test("a kernel's config is its own: beside the image, in its modules directory, or in its root's /boot — never the host's")
    func configLookup() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-cfg-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let modules = root + "/usr/lib/modules/7.2.13+deb14-amd64"
        try FileManager.default.createDirectory(atPath: modules, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/boot", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: root + "/boot/vmlinuz-7.2.13+deb14-amd64", contents: Data())
        #expect(KernelConfig.locate(image: root + "/boot/vmlinuz-7.2.13+deb14-amd64", modules: modules, release: "7.2.13+deb14-amd64") == nil)
        FileManager.default.createFile(atPath: modules + "/config", contents: Data("CONFIG_9P_FS=m\n".utf8))
        let found = KernelConfig.locate(image: root + "/boot/vmlinuz-7.2.13+deb14-amd64", modules: modules, release: "7.2.13+deb14-amd64")
        #expect(found == modules + "/config")
        #expect(KernelConfig.read(release: "7.2.13+deb14-amd64", path: found)?.options["CONFIG_9P_FS"] == "m")
        // Another release never gets the running kernel's /proc/config.gz.
        #expect(KernelConfig.read(release: "5.10.0-30-amd64")?.source != "/proc/config.gz")
    }

    @Test("the machine's own release, which has no image, becomes a column that says why, not an error")
    func runningRelease() throws {
        let k = try KernelCatalog.resolve(Kernel.runningRelease, boot: "/nonexistent")
        #expect(k.unavailable?.contains("--kernel host") == true)
        #expect(try KernelCatalog.resolve("host").source == .host)
    }

    @Test("directory names: the label, or a path's file name with its release")
    func slugs() {
        #expect(kernel("6.12-cloud", release: "6.12.117+deb12-cloud-amd64").slug == "6.12-cloud")
        #expect(kernel("../linux/arch/x86/boot/bzImage", release: "6.19.0-rc1+").slug == "bzImage-6.19.0-rc1+")
    }

    @Test("--kernel NAME=PATH: the column and the results folder take the name given")
    func namedKernel() throws {
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("xl-vmlinuz-\(getpid())").path
        _ = FileManager.default.createFile(atPath: image, contents: Data(count: 16))
        defer { try? FileManager.default.removeItem(atPath: image) }
        let k = try KernelCatalog.resolve("6.1.176=" + image)
        #expect(k.label == "6.1.176" && k.slug == "6.1.176" && k.image == image)
        #expect(try KernelCatalog.resolve("mine=host").label == "mine")
        #expect(throws: KernelNotFound.self) { try KernelCatalog.resolve("a b=" + image) }
    }

    @Test("the version banner is read from a bzImage's real-mode header")
    func banner() throws {
        var image = Data(count: 0x400)
        image.replaceSubrange(0x202..<0x206, with: Data("HdrS".utf8))
        let text = "6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP"
        image.replaceSubrange(0x300..<(0x300 + text.utf8.count), with: Data(text.utf8))
        image[0x20E] = 0x00; image[0x20F] = 0x01  // 0x200 + 0x100
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-bz-\(getpid())").path
        try image.write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        #expect(try KernelImage.banner(of: path) == text)
    }
}

@Suite("Expectations")
struct ExpectationTests {
    let rules = try! Expectations.parse("""
        expectations:
          - kernel: host
            note: built without ESP
            skip:
              - test: "EvTests.S/*"
                reason: Requested type not found
          - kernel: ">=6.1 <6.1.100"
            fail:
              - test: "EvTests.S/f()"
                why: fixed in 6.1.100
          - kernel: ["*-cloud-amd64", "6.12*"]
            ignore-kernel-log:
              - line: "harmless"
                why: an example
        """)
    let host = Expectations.KernelFacts(label: "host", isHost: true, release: "6.18.44-fc", version: KernelVersion([6, 18, 44]))
    let old = Expectations.KernelFacts(label: "6.1", isHost: false, release: "6.1.0-9-amd64", version: KernelVersion([6, 1, 52]))
    let new = Expectations.KernelFacts(label: "6.1", isHost: false, release: "6.1.0-56-amd64", version: KernelVersion([6, 1, 192]))
    let cloud = Expectations.KernelFacts(label: "6.1-cloud", isHost: false, release: "6.1.0-56-cloud-amd64", version: KernelVersion([6, 1, 192]))

    var skipped: TestRecord { SuiteRun.parse(eventStream)["EvTests.S/s()"]! }
    var failed: TestRecord { SuiteRun.parse(eventStream)["EvTests.S/f()"]! }

    @Test("a skip is expected only on the kernels named and only for the reason named")
    func skips() {
        #expect(rules.expectedSkip(test: skipped, reason: "ESP: Requested type not found", on: host) != nil)
        #expect(rules.expectedSkip(test: skipped, reason: "ESP: requested TYPE not found", on: host) != nil, "case-insensitive")
        #expect(rules.expectedSkip(test: skipped, reason: "needs root", on: host) == nil)
        #expect(rules.expectedSkip(test: skipped, reason: "ESP: Requested type not found", on: new) == nil)
    }

    @Test("version ranges use the upstream version; globs the release")
    func selectors() {
        #expect(rules.expectedFailure(test: failed, on: old) != nil)
        #expect(rules.expectedFailure(test: failed, on: new) == nil)
        #expect(rules.ignoredKernelLog(on: cloud) == ["harmless"])
        #expect(rules.ignoredKernelLog(on: new).isEmpty)
    }

    @Test("a misspelt key is refused, not ignored")
    func unknownKey() {
        #expect(throws: ExpectationsError.self) {
            try Expectations.parse("expectations:\n  - kernel: host\n    skips:\n      - test: x\n        reason: y\n")
        }
        #expect(throws: ExpectationsError.self) {
            try Expectations.parse("expectations:\n  - kernel: host\n    skip:\n      - test: x\n")
        }
    }

    @Test("the repository's expectations file loads")
    func repositoryFile() throws {
        let file = try Expectations.load(path: repositoryURL.path + "/Fixtures/matrix/expectations.yaml")
        #expect(!file.expectations.isEmpty)
    }
}

@Suite("Verdicts")
struct VerdictTests {
    let rules = try! Expectations.parse("""
        expectations:
          - kernel: host
            skip:
              - test: "EvTests.S/s()"
                reason: Requested type not found
              - test: "EvTests.S/rs()"
                reason: Unknown device type
            fail:
              - test: "EvTests.S/p()"
                why: pretend it is broken here
        """)

    @Test("expected skips pass, unexpected ones fail; a pass of a known-failing test fails")
    func expectations() {
        let first = SuiteRun.parse(eventStream)
        var host = emptyResult(kernel("host", release: "6.18.44"), version: "6.18.44")
        Judge(expectations: rules).judge(&host, first: first, retry: nil, log: [], kernelLogOffset: 0)
        #expect(host.cells["EvTests.S/s()"]?.verdict == .skip)
        #expect(host.cells["EvTests.S/rs()"]?.verdict == .skip)
        #expect(host.cells["EvTests.S/p()"]?.verdict == .xpass)
        #expect(host.cells["EvTests.S/f()"]?.verdict == .fail)
        #expect(host.cells["EvTests.S/h()"]?.verdict == .didNotFinish)
        #expect(host.cells["EvTests.S/n()"]?.verdict == .missing)

        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        Judge(expectations: rules).judge(&vm, first: first, retry: nil, log: [], kernelLogOffset: 0)
        #expect(vm.cells["EvTests.S/s()"]?.verdict == .unexpectedSkip, "nothing goes green by skipping")
        #expect(vm.cells["EvTests.S/p()"]?.verdict == .pass)
    }

    @Test("a test that passes on its retry is flaky, with the first failure kept")
    func flaky() {
        let first = SuiteRun.parse(eventStream)
        let retry = SuiteRun.parse("""
            {"kind":"test","payload":{"displayName":"fails","id":"EvTests.S/f()/T.swift:5:4","kind":"function","name":"f()"},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":20.0,"since1970":1},"kind":"testStarted","messages":[],"testID":"EvTests.S/f()/T.swift:5:4"},"version":0}
            {"kind":"event","payload":{"instant":{"absolute":20.5,"since1970":1},"kind":"testEnded","messages":[],"testID":"EvTests.S/f()/T.swift:5:4"},"version":0}
            """)
        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        Judge(expectations: rules).judge(&vm, first: first, retry: retry, log: [], kernelLogOffset: 0)
        #expect(vm.cells["EvTests.S/f()"]?.verdict == .flaky)
        #expect(vm.cells["EvTests.S/f()"]?.detail?.contains("1 == 2") == true)
        #expect(!Verdict.flaky.isProblem)
    }

    @Test("a retry the deadline cut short leaves the first failure standing, not a missing test")
    func retryCutShort() {
        let first = SuiteRun.parse(eventStream)
        let retry = SuiteRun.parse("""
            {"kind":"test","payload":{"displayName":"fails","id":"EvTests.S/f()/T.swift:5:4","kind":"function","name":"f()"},"version":0}
            """)
        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        Judge(expectations: rules).judge(&vm, first: first, retry: retry, log: [], kernelLogOffset: 0)
        #expect(vm.cells["EvTests.S/f()"]?.verdict == .fail)
        #expect(vm.cells["EvTests.S/f()"]?.detail?.contains("not reached") == true)
    }

    @Test("a kernel warning fails the one test that ran when it was logged, else the kernel's run")
    func warnings() {
        let first = SuiteRun.parse(eventStream)
        // Offset 5: kernel-log time 7.0 is test-clock 12.0 (only f() and k() ran, 11.0–12.0),
        // 5.85 → 10.85 (only p(), 10.2–10.9), 1.0 → 6.0 (before any test).
        let log = [
            KernelLogRecord(sequence: 1, microseconds: 1_000_000, priority: 4, text: "WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 boot_thing"),
            KernelLogRecord(sequence: 2, microseconds: 5_850_000, priority: 0, text: "unregister_netdevice: waiting for xfrm0 to become free. Usage count = 2"),
            KernelLogRecord(sequence: 3, microseconds: 7_000_000, priority: 4, text: "------------[ cut here ]------------"),
            KernelLogRecord(sequence: 4, microseconds: 7_000_100, priority: 4, text: "refcount_t: underflow; use-after-free."),
            KernelLogRecord(sequence: 5, microseconds: 7_000_200, priority: 4, text: "Call Trace:"),
            KernelLogRecord(sequence: 6, microseconds: 7_000_300, priority: 4, text: " <TASK>"),
        ]
        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        Judge(expectations: rules).judge(&vm, first: first, retry: nil, log: log, kernelLogOffset: 5)
        #expect(vm.warnings.count == 3)
        #expect(vm.cells["EvTests.S/p()"]?.verdict == .warning)
        #expect(vm.cells["EvTests.S/p()"]?.detail?.contains("unregister_netdevice") == true)
        #expect(vm.warnings[2].test == nil && vm.warnings[2].candidates.sorted() == ["EvTests.S/f()", "EvTests.S/k()"])
        #expect(vm.warnings[2].warning.headline == "refcount_t: underflow; use-after-free.")
        #expect(vm.warnings[0].candidates.isEmpty)
        #expect(vm.problems >= 3)
    }

    /// The oops a 6.12.118 guest died of during `make test` (2026-12-06), as its kernel log had it.
    static let oops: [KernelLogRecord] = [
        "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
        "CPU: 1 UID: 0 PID: 1234 Comm: kworker/1:2 Not tainted 6.12.118+deb12-amd64 #1  Debian 6.12.118-1~deb12u1",
        "Workqueue: mld mld_ifc_work",
        "RIP: 0010:NF_HOOK.constprop.0+0x24/0xd0",
        "Call Trace:",
        " <TASK>",
        " ? die+0x36/0x90",
        " mld_sendpack+0x1a1/0x3a0",
        " mld_ifc_work+0x2c6/0x590",
        " process_one_work+0x177/0x330",
        " </TASK>",
    ].enumerated().map { KernelLogRecord(sequence: UInt64($0.offset + 1), microseconds: 1_000_000 + UInt64($0.offset), priority: 0, text: $0.element) }

    @Test("a guest that panicked: the console's lines after the last recorded one become records, and the panic a crash")
    func consoleAfterPanic() {
        let console = [
            "[   39.900000] eth1: port 1(eth1-p1) entered blocking state\r",
            "[   40.123456] sysrq: Trigger a crash\r",
            "[   40.123500] Kernel panic - not syncing: sysrq triggered crash\r",
            "[   40.124000] CPU: 1 PID: 321 Comm: XfrmLabPackageT Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2\r",
            "[   40.124100] Call Trace:\r",
            "[   40.124200]  <TASK>\r",
            "[   40.124300]  dump_stack_lvl+0x44/0x5c\r",
            "[   40.124400]  panic+0x118/0x2ed\r",
            "[   40.124500]  sysrq_handle_crash+0x16/0x20\r",
            "[   40.124600]  write_sysrq_trigger+0x24/0x40\r",
            "qemu-system-x86_64: terminating on signal 15\r",
        ].joined(separator: "\n")
        let records = KernelLog.consoleRecords(console, after: 40_000_000, sequence: 700)
        #expect(records.count == 9, "the line before the last recorded one and qemu's own are no records")
        #expect(records.first?.sequence == 701 && records.first?.text == "sysrq: Trigger a crash")
        let crashes = KernelLog.warnings(in: records).filter(\.isCrash)
        #expect(crashes.count == 1)
        #expect(crashes.first?.stack == ["dump_stack_lvl", "panic", "sysrq_handle_crash", "write_sysrq_trigger"])
    }

    @Test("a kernel result written before crashes were recorded still reads, with none")
    func resultWithoutCrashesReads() throws {
        var result = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        result.crashes = [KernelCrash(AttributedWarning(warning: KernelLog.warnings(in: Self.oops)[0], test: nil, candidates: []))]
        let encoded = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result)) as! [String: Any]
        #expect((encoded["crashes"] as? [Any])?.count == 1)
        var old = encoded
        old.removeValue(forKey: "crashes")
        let decoded = try JSONDecoder().decode(KernelResult.self, from: JSONSerialization.data(withJSONObject: old))
        #expect(decoded.crashes.isEmpty && decoded.release == "6.1.0-56-amd64")
    }

    @Test("a crash is kept with its fingerprint; one no rule names fails the matrix, one a rule names does not — and a rule with the wrong stack names nothing")
    func crashRules() throws {
        let oops = KernelLog.warnings(in: Self.oops)
        #expect(oops.count == 1 && oops[0].isCrash)
        #expect(oops[0].instructionPointer == "NF_HOOK.constprop.0")
        #expect(oops[0].stack == ["mld_sendpack", "mld_ifc_work", "process_one_work"], "a `?` guess is no frame")
        func judged(_ yaml: String) throws -> KernelResult {
            var vm = emptyResult(kernel("6.12-latest", release: "6.12.118+deb12-amd64"), version: "6.12.118")
            vm.status = .guestDied
            Judge(expectations: try Expectations.parse(yaml)).judge(&vm, first: SuiteRun.parse(""), retry: nil, log: Self.oops, kernelLogOffset: nil)
            return vm
        }
        let none = try judged("expectations: []")
        #expect(none.crashes.count == 1 && none.crashes[0].known == nil && none.problems >= 2)
        #expect(none.crashes[0].fingerprint.prefix(3) == ["NF_HOOK.constprop.0", "mld_sendpack", "mld_ifc_work"])
        let rule = """
            expectations:
              - kernel: ">=6.12.118 <6.13"
                crash:
                  - stack: [NF_HOOK.constprop.0, mld_sendpack, mld_ifc_work]
                    why: int3 in an MLD report's netfilter hook
            """
        let known = try judged(rule)
        #expect(known.crashes.count == 1 && known.crashes[0].known?.contains("int3 in an MLD report") == true)
        #expect(known.problems == 0, "the guest died of a crash a rule names")
        // Injected mismatches: a stack in the wrong order, a function the trace lacks, another kernel.
        for wrong in [rule.replacingOccurrences(of: "[NF_HOOK.constprop.0, mld_sendpack, mld_ifc_work]", with: "[mld_ifc_work, mld_sendpack]"),
                      rule.replacingOccurrences(of: "mld_sendpack,", with: "ip6_output,"),
                      rule.replacingOccurrences(of: ">=6.12.118 <6.13", with: "<6.12.118")] {
            let judgedWrong = try judged(wrong)
            #expect(judgedWrong.crashes.first?.known == nil && judgedWrong.problems >= 2, "\(wrong)")
            let report = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e",
                                      testBinary: "t", kernels: [judgedWrong])
            #expect(!report.ok)
        }
        #expect(throws: ExpectationsError.self) { try Expectations.parse(rule.replacingOccurrences(of: "stack:", with: "stacks:")) }
    }

    @Test("kmsg records parse, with escapes and without continuation lines")
    func kmsg() {
        let r = KernelLogRecord(kmsg: "4,1234,5678901,-;WARNING: at \\x3cfoo\\x3e\n SUBSYSTEM=net")
        #expect(r?.sequence == 1234)
        #expect(r?.microseconds == 5_678_901)
        #expect(r?.text == "WARNING: at <foo>")
        #expect(KernelLogRecord(kmsg: "garbage") == nil)
    }
}

@Suite("The matrix report")
struct ReportTests {
    @Test("differs lists tests whose behaviour differs, and capabilities and config that differ")
    func differs() throws {
        var host = emptyResult(kernel("host", release: "6.18.44"), version: "6.18.44")
        host.cells = ["T/esp()": Cell(verdict: .skip, detail: "ESP: Requested type not found"), "T/veth()": Cell(verdict: .pass)]
        host.capabilities = [Capability(name: "esp", value: "no", detail: "Requested type not found"), Capability(name: "veth", value: "yes")]
        host.config = ["CONFIG_INET_ESP": "n", "CONFIG_VETH": "y"]
        var vm = emptyResult(kernel("6.1", release: "6.1.0-56-amd64"), version: "6.1.192")
        vm.cells = ["T/esp()": Cell(verdict: .pass), "T/veth()": Cell(verdict: .flaky, detail: "x")]
        vm.capabilities = [Capability(name: "esp", value: "yes"), Capability(name: "veth", value: "yes")]
        vm.config = ["CONFIG_INET_ESP": "m", "CONFIG_VETH": "m"]
        host.xfrmStatCounters = ["XfrmInError", "XfrmOutStateDirError"]
        vm.xfrmStatCounters = ["XfrmInError"]
        let report = MatrixReport(created: Date(), host: "6.18.44", accelerator: "tcg", acceleratorReason: "test",
                                  expectations: "e.yaml", testBinary: "t", kernels: [host, vm])
        #expect(report.ok)
        #expect(report.differences.filter { $0.kind == "test" }.map(\.name) == ["T/esp()"], "flaky vs pass is not a difference")
        #expect(report.differences.contains { $0.kind == "capability" && $0.name == "esp" })
        #expect(report.differences.contains { $0.kind == "config" && $0.name == "CONFIG_INET_ESP" })
        #expect(!report.differences.contains { $0.name == "CONFIG_VETH" }, "y against m is no difference")
        #expect(report.differences.first { $0.kind == "counters" }?.values == ["host": "2, also XfrmOutStateDirError", "6.1": "1"])
        let text = report.text()
        #expect(text.contains("Differs between kernels (1 test)"))
        #expect(text.contains("MATRIX OK"))
        let xml = report.junit()
        #expect(xml.contains("<skipped message=\"skip: ESP: Requested type not found\"/>"))
        _ = try JSONSerialization.jsonObject(with: report.json())
    }

    @Test("a kernel asked only some tests shows the others as not selected: no failure, no difference; a test it lacks among its own is MISSING")
    func onlySome() {
        var host = emptyResult(kernel("host", release: "6.18.44"), version: "6.18.44")
        host.cells = ["T/report()": Cell(verdict: .pass), "T/other()": Cell(verdict: .pass)]
        var vm = emptyResult(kernel("6.12", release: "6.12.117+deb12-amd64"), version: "6.12.117")
        vm.only = ["report"]
        vm.cells = ["T/report()": Cell(verdict: .skip, detail: "x")]
        let report = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e",
                                  testBinary: "t", kernels: [host, vm])
        #expect(report.ok)
        #expect(report.kernels[1].cells["T/other()"]?.verdict == .notSelected)
        #expect(report.differences.filter { $0.kind == "test" }.map(\.name) == ["T/report()"])
        var whole = vm
        whole.only = nil
        let missing = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e",
                                   testBinary: "t", kernels: [host, whole])
        #expect(!missing.ok && missing.kernels[1].cells["T/other()"]?.verdict == .missing)
    }

    @Test("a kernel that never booted fails the matrix")
    func bootFailure() {
        var dead = emptyResult(kernel("6.12", release: "6.12.117+deb12-amd64"), version: "6.12.117")
        dead.status = .bootTimeout
        let report = MatrixReport(created: Date(), host: "h", accelerator: "tcg", acceleratorReason: "", expectations: "e",
                                  testBinary: "t", kernels: [dead])
        #expect(!report.ok)
        #expect(report.junit().contains("<failure message=\"boot-timeout"))
    }

    @Test("the probe table is read whatever its shape",
          arguments: [
              #"[{"name":"esp","available":false,"reason":"Requested type not found"}]"#,
              #"{"capabilities":[{"capability":"esp","supported":false,"answer":"Requested type not found"}]}"#,
              #"{"esp":{"ok":false,"detail":"Requested type not found"}}"#,
          ])
    func probeShapes(json: String) throws {
        let rows = try #require(ProbeTable.parse(json))
        #expect(rows == [Capability(name: "esp", value: "no", detail: "Requested type not found")])
    }
}

@Suite("Recording the kernel log")
struct KernelLogRecorderTests {
    @Test("a line written to the kernel log is recorded and timed on CLOCK_MONOTONIC",
          .enabled(if: geteuid() == 0 && access("/dev/kmsg", W_OK) == 0, "needs root and a writable /dev/kmsg"))
    func marks() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-kmsg-\(getpid())").path
        defer { unlink(path) }
        let recorder = try KernelLogRecorder(output: path, fromStart: false)
        let mark = recorder.mark("xfrmlab-matrix: test \(getpid()) \(UInt64(KernelLog.monotonic() * 1e6))")
        recorder.stop()
        let m = try #require(mark)
        // printk's clock and CLOCK_MONOTONIC agree to well within a second.
        #expect(abs((m.before + m.after) / 2 - m.logged) < 1)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("xfrmlab-matrix: test \(getpid())"))
    }
}

/// The repository this test file is in.
var repositoryURL: URL {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" && !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
        url.deleteLastPathComponent()
    }
    return url
}

@Suite("vng's initramfs with another 9p msize")
struct InitramfsTests {
    /// A cpio "newc" archive as vng writes one: each entry a header, its name, its data.
    static func archive(_ files: [(String, String)]) -> Data {
        var out = Data()
        func pad() { while out.count % 4 != 0 { out.append(0) } }
        for (i, (name, body)) in (files + [("TRAILER!!!", "")]).enumerated() {
            let fields = [i + 1, 0o100644, 0, 0, 1, 0, body.utf8.count, 0, 0, 0, 0, name.utf8.count + 1, 0]
            out += Data(("070701" + fields.map { String(format: "%08X", $0) }.joined()).utf8)
            out += Data(name.utf8) + Data([0])
            pad()
            out += Data(body.utf8)
            pad()
        }
        return out
    }

    static func files(_ data: Data) -> [String: String] {
        let bytes = [UInt8](data)
        var at = 0, files: [String: String] = [:]
        while at + 110 <= bytes.count, String(decoding: bytes[at..<at + 6], as: UTF8.self) == "070701" {
            func field(_ i: Int) -> Int { Int(String(decoding: bytes[(at + 6 + 8 * i)..<(at + 14 + 8 * i)], as: UTF8.self), radix: 16)! }
            let size = field(6), nameSize = field(11)
            let name = String(decoding: bytes[(at + 110)..<(at + 109 + nameSize)], as: UTF8.self)
            let start = (at + 110 + nameSize + 3) & ~3
            files[name] = String(decoding: bytes[start..<start + size], as: UTF8.self)
            at = (start + size + 3) & ~3
        }
        return files
    }

    @Test("the root mount's msize is changed, the entry's size with it, every other file as it was")
    func rewrite() throws {
        let mount = "mount -n -t 9p -o rw,version=9p2000.L,trans=virtio,access=any,msize=524288 /dev/root /newroot/\n"
        let original = Self.archive([("init", "#!/bin/sh\n" + mount + "exec switch_root\n"), ("modules/load_all.sh", "insmod 9p.ko\n")])
        let rewritten = try Initramfs.settingNinePMessageSize(original, to: 65536)
        let files = Self.files(rewritten)
        #expect(files["init"] == "#!/bin/sh\n" + mount.replacingOccurrences(of: "msize=524288", with: "msize=65536") + "exec switch_root\n")
        #expect(files["modules/load_all.sh"] == "insmod 9p.ko\n")
        #expect(files["TRAILER!!!"] == "")
    }

    @Test("an initramfs without vng's mount, or not a newc archive, is refused with the reason")
    func refusals() {
        #expect(throws: InitramfsError.self) { try Initramfs.settingNinePMessageSize(Self.archive([("init", "mount /\n")]), to: 65536) }
        let gzip = Data([0x1f, 0x8b, 8, 0] + [UInt8](repeating: 0, count: 200))
        #expect(throws: InitramfsError.self) { try Initramfs.settingNinePMessageSize(gzip, to: 65536) }
    }
}
