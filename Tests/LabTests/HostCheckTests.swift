import Foundation
import Glibc
import Lab
import Namespaces
import Testing
import XfrmLabTesting

/// `xfrmlab host-snapshot save/compare`, the check around the whole of `make test`. The
/// deliberate changes are made in a namespace standing in for the host, never in the host's own.
@Suite("Host snapshot before and after a test run")
struct HostCheckTests {
    @Test("the comparison lists what went and what came, a changed object as - and + side by side")
    func comparison() {
        let before = ["address eth0 192.0.2.2/24", "link eth0 flags 0x1003 mtu 1500", "sysctl net.ipv4.ip_forward = 0"]
        let after = ["address eth0 192.0.2.2/24", "link eth0 flags 0x1003 mtu 1500", "link xl1-west flags 0x1003 mtu 1500",
                     "sysctl net.ipv4.ip_forward = 1"]
        #expect(HostSnapshot.compare(saved: before, current: before) == [])
        #expect(HostSnapshot.compare(saved: before, current: after) == [
            "+ link xl1-west flags 0x1003 mtu 1500",
            "- sysctl net.ipv4.ip_forward = 0",
            "+ sysctl net.ipv4.ip_forward = 1",
        ])
        // A line twice is two objects (say two equal routes in different tables' dumps).
        #expect(HostSnapshot.compare(saved: ["a", "a"], current: ["a"]) == ["- a"])
    }

    @Test("nft rules keep their table and chain; counters and timeouts, which move on their own, are not compared")
    func rulesetLines() {
        let ruleset = """
        table inet filter {
        \tchain input {
        \t\ttype filter hook input priority filter; policy accept;
        \t\ttcp dport 22 counter packets 12 bytes 840 accept
        \t}
        \tset seen {
        \t\ttype ipv4_addr
        \t\telements = { 192.0.2.1 expires 1m2s }
        \t}
        }
        """
        let lines = HostSnapshot.rulesetLines(ruleset)
        #expect(lines.contains("nft table inet filter / chain input / tcp dport 22 counter accept"))
        #expect(lines.contains("nft table inet filter / set seen / elements = { 192.0.2.1 }"))
        let later = ruleset.replacingOccurrences(of: "packets 12 bytes 840", with: "packets 99 bytes 9999")
            .replacingOccurrences(of: "1m2s", with: "58s")
        #expect(HostSnapshot.rulesetLines(later) == lines)
        let changed = ruleset.replacingOccurrences(of: "dport 22", with: "dport 23")
        #expect(HostSnapshot.compare(saved: lines, current: HostSnapshot.rulesetLines(changed)) == [
            "- nft table inet filter / chain input / tcp dport 22 counter accept",
            "+ nft table inet filter / chain input / tcp dport 23 counter accept",
        ])
    }

    @Test("xfrmlab host-snapshot compare exits 1 and lists a deliberate change made in a namespace standing in for the host",
          .tags(.privileged), .needsNamespaces)
    func deliberateChangeReported() throws {
        let name = "xlhc\(getpid())"
        let ns = try Namespace.create(name: name)
        defer { ns.delete() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("xlhc\(getpid()).snapshot").path
        defer { unlink(file) }
        let xfrmlab = { (args: [String]) in try Namespaces.Process.execute([xfrmlabBinary, "host-snapshot"] + args + ["--namespace", name]) }

        let save = try xfrmlab(["save", file])
        try #require(save.succeeded, "\(save)")
        let saved = try HostSnapshot.lines(ofFile: file)
        #expect(saved.contains("link lo flags 0x8 mtu 65536 address 00:00:00:00:00:00"), "\(saved)")
        #expect(saved.contains("sysctl net.ipv4.ip_forward = 0"))
        let unchanged = try xfrmlab(["compare", file])
        #expect(unchanged.succeeded && unchanged.standardOutput.contains("unchanged"), "\(unchanged)")

        try ns.check(["ip", "link", "set", "lo", "up"])
        try ns.check(["ip", "address", "add", "10.77.0.1/32", "dev", "lo"])
        try ns.check(["ip", "rule", "add", "fwmark", "0x7", "lookup", "77", "priority", "77"])
        try ns.check(["ip", "xfrm", "policy", "add", "dir", "out", "src", "10.77.0.1", "dst", "10.77.0.2", "mark", "0x7"])
        try ns.setSysctls([("net.ipv4.ip_forward", "1")])
        try ns.check(["nft", "add table inet xlhc; add chain inet xlhc out { type filter hook output priority 0; }; add rule inet xlhc out counter"])
        let changed = try xfrmlab(["compare", file])
        #expect(changed.status == 1, "\(changed)")
        let out = changed.standardOutput
        for line in ["- link lo flags 0x8 mtu 65536", "+ link lo flags 0x9 mtu 65536",
                     "+ address lo 10.77.0.1/32", "+ rule family 2 77: from all fwmark 0x7 lookup 77",
                     "+ xfrm policy ", "- sysctl net.ipv4.ip_forward = 0", "+ sysctl net.ipv4.ip_forward = 1",
                     "+ nft table inet xlhc / chain out / counter"] {
            #expect(out.contains(line), "missing \(line) in:\n\(out)")
        }

        // Traffic moves the rule's counter; that alone is no difference.
        let resave = try xfrmlab(["save", file])
        try #require(resave.succeeded, "\(resave)")
        _ = try ns.execute(["ping", "-c", "2", "-i", "0.2", "10.77.0.1"])
        let afterTraffic = try xfrmlab(["compare", file])
        #expect(afterTraffic.succeeded, "\(afterTraffic)")
    }
}
