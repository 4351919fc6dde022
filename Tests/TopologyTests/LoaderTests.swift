import Foundation
import Testing
import Topology

/// Where the test data is: the example topologies next to the package's Sources, found from
/// this file (through symlinks, so a package that links Tests/TopologyTests in also works),
/// and the bad files copied into the test bundle.
enum Fixtures {
    static let packageRoot: URL = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func example(_ name: String) -> String {
        packageRoot.appendingPathComponent("Topologies").appendingPathComponent(name).path
    }

    static let badDirectory: URL = Bundle.module.url(forResource: "BadTopologies", withExtension: nil)!

    static let badFiles: [String] = {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: badDirectory.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted()
    }()

    static func text(_ path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }
}

/// The problems `body` throws, or none (recording an issue) when it does not throw a TopologyError.
func problems(_ body: () throws -> Topology, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> TopologyError? {
    do {
        let topology = try body()
        Issue.record("expected a TopologyError, got \(topology.name)", sourceLocation: sourceLocation)
    } catch let error as TopologyError {
        return error
    } catch {
        Issue.record("expected a TopologyError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

@Suite("Loading the example topologies")
struct ExampleTopologyTests {
    @Test func northEastWest() throws {
        let path = Fixtures.example("north-east-west.yaml")
        let t = try Topology.load(path: path)
        #expect(t.name == "north-east-west")
        #expect(t.source == path)
        #expect(t.hosts.map(\.name) == ["west", "east", "north", "nic"])
        #expect(t.networks.map(\.name) == ["public-2", "public-3", "west-private", "east-private", "north-private"])

        let west = try #require(t.host(named: "west"))
        #expect(!west.forwarding)
        #expect(west.location?.description == "\(path):7:3")
        #expect(west.routes.count == 4)
        #expect(west.routes[0].to == CIDR("0.0.0.0/0"))
        #expect(west.routes[0].via == IPAddress("192.1.2.254"))
        #expect(west.routes[1].to == CIDR("::/0"))
        #expect(west.routes[1].via == IPAddress("2001:db8:1:2::254"))
        #expect(west.routes[3].table == RouteTable(50))
        #expect(west.routes[3].location?.line == 13)
        #expect(west.routes[2].table == .main)

        let rule = try #require(west.rules.first)
        #expect(rule.fwmark == Mark(0x1, mask: 0xff))
        #expect(rule.table == RouteTable(50))
        #expect(rule.priority == 100)
        #expect(rule.family == .ipv4)
        #expect(!rule.invert)
        #expect(rule.location?.description == "\(path):15:9")
        #expect(rule.description == "rule priority 100 fwmark 0x1/0xff lookup 50")

        #expect(t.host(named: "east")?.forwarding == true)
        #expect(t.host(named: "nic")?.forwarding == true)
        #expect(t.host(named: "nic")?.routes.isEmpty == true)

        let public2 = t.networks[0]
        #expect(public2.bridge == "nic")
        #expect(public2.subnets == [CIDR("192.1.2.0/24")!, CIDR("2001:db8:1:2::/64")!])
        #expect(public2.location?.line == 30)
        #expect(public2.members.map(\.host) == ["nic", "west", "east"])
        let westOnPublic = public2.members[1]
        #expect(westOnPublic.interface == "eth1")
        #expect(westOnPublic.addresses.map(\.description) == ["192.1.2.45/24", "2001:db8:1:2::45/64"])
        #expect(westOnPublic.location?.description == "\(path):35:9")

        #expect(t.attachments(of: "west").map { "\($0.network.name):\($0.attachment.interface)" }
            == ["public-2:eth1", "west-private:eth0"])
        #expect(t.attachments(of: "north").flatMap { $0.attachment.addresses.map(\.description) }
            == ["192.1.3.33/24", "2001:db8:1:3::33/64", "198.18.66.254/24", "2001:db8:66::254/64"])
    }

    @Test func readmeExampleLoads() throws {
        let readme = try Fixtures.text(Fixtures.example("README.md"))
        let start = try #require(readme.range(of: "```yaml\n"))
        let end = try #require(readme.range(of: "```", range: start.upperBound..<readme.endIndex))
        let t = try Topology.parse(yaml: String(readme[start.upperBound..<end.lowerBound]), file: "README.md")
        #expect(t.hosts.count == 3)
        #expect(t.networks.count == 2)
    }

    @Test func clientsBehindNAT() throws {
        let path = Fixtures.example("client1-client2-server.yaml")
        let t = try Topology.load(path: path)
        #expect(t.name == "client1-client2-server")
        #expect(t.hosts.count == 6)
        #expect(t.networks.count == 3)
        let nat1 = try #require(t.host(named: "nat1"))
        #expect(nat1.forwarding)
        #expect(nat1.masquerade.map { "\($0.out) \($0.from?.description ?? "-") \($0.location?.description ?? "-")" }
            == ["wan 10.0.1.0/24 \(path):17:9"])
        // The same private address on two networks is fine: they are separate segments.
        let lans = t.networks.filter { $0.name.hasPrefix("lan") }
        #expect(lans.map { $0.members[1].addresses } == [[CIDR("10.0.1.10/24")!], [CIDR("10.0.1.10/24")!]])
        #expect(t.networks[0].members.count == 4)
        #expect(t.networks[0].bridge == "internet")
        #expect(t.host(named: "client2")?.routes.first?.via == IPAddress("10.0.1.1"))
        #expect(t.host(named: "client2")?.location?.line == 27)
    }
}

@Suite("Validation problems")
struct ValidationTests {
    struct Expectation {
        var line: Int
        var field: String
        var substring: String
    }

    /// `# expect: LINE FIELD SUBSTRING`; a FIELD of `-` means a problem with the document itself.
    static func expectation(in text: String) -> Expectation? {
        guard let first = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first,
              first.hasPrefix("# expect: ") else { return nil }
        let parts = first.dropFirst("# expect: ".count).split(separator: " ", maxSplits: 2)
        guard parts.count == 3, let line = Int(parts[0]) else { return nil }
        return Expectation(line: line, field: parts[1] == "-" ? "" : String(parts[1]), substring: String(parts[2]))
    }

    @Test func thereAreEnoughBadFiles() {
        #expect(Fixtures.badFiles.count >= 14)
    }

    @Test("Each bad file reports its one mistake", arguments: Fixtures.badFiles)
    func badFile(_ name: String) throws {
        let path = Fixtures.badDirectory.appendingPathComponent(name).path
        let expected = try #require(Self.expectation(in: try Fixtures.text(path)), "\(name) has no # expect: line")
        let error = try #require(problems { try Topology.load(path: path) })
        #expect(error.problems.contains {
            $0.line == expected.line && $0.field == expected.field && $0.message.contains(expected.substring)
        }, "\(name): expected line \(expected.line) \(expected.field) \"\(expected.substring)\", got:\n\(error)")
        #expect(error.problems.count == 1, "one mistake, one problem; got:\n\(error)")
        #expect(error.description.contains(name))
        #expect(error.problems.allSatisfy { $0.file == path })
    }

    @Test func severalMistakesAreAllReported() throws {
        let yaml = """
            name: several
            hosts:
              west:
                forwarding: perhaps
                routes:
                  - { to: default, via: 192.1.2.300 }
                  - { to: 192.0.2.0/24, dev: eth9 }
              east:
                colour: blue
              west:
                forwarding: true
            networks:
              - name: public
                subnets: [192.1.2.0/24]
                mtu: 100000
                members:
                  - { host: west, interface: eth1, addresses: [192.1.2.45] }
                  - { host: east, interface: eth1, addresses: [192.1.3.23] }
                  - { host: north, interface: eth1 }

            """
        let error = try #require(problems { try Topology.parse(yaml: yaml, file: "several.yaml") })
        let found = error.problems.map { "\($0.line) \($0.field)" }
        #expect(found == [
            "4 hosts.west.forwarding",
            "6 hosts.west.routes[0].via",
            "7 hosts.west.routes[1].dev",
            "9 hosts.east.colour",
            "10 hosts.west",
            "15 networks[0].mtu",
            "18 networks[0].members[1].addresses[0]",
            "19 networks[0].members[2].host",
        ], "\(error)")
        let lines = error.description.split(separator: "\n")
        #expect(lines.count == 8)
        #expect(lines.allSatisfy { $0.hasPrefix("several.yaml:") })
        #expect(lines[1] == #"several.yaml:6:29: hosts.west.routes[0].via: "192.1.2.300" is not an IP address"#)
    }

    @Test func unreadableFile() throws {
        let error = try #require(problems { try Topology.load(path: "/nonexistent/topology.yaml") })
        #expect(error.problems.count == 1)
        #expect(error.problems.first?.line == 0)
        #expect(error.problems.first?.message == "No such file or directory")
        #expect(error.description == "/nonexistent/topology.yaml:0:0: No such file or directory")
    }

    @Test func notUTF8() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("topology-\(UUID()).yaml").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data("name: x\nhosts: {}\n# caf".utf8 + [0xE9] + Data("\n".utf8))))
        let error = try #require(problems { try Topology.load(path: path) })
        #expect(error.problems.map { "\($0.line):\($0.column) \($0.message)" } == ["3:6 the file is not valid UTF-8"])
    }

    @Test func nulByte() throws {
        let error = try #require(problems { try Topology.parse(yaml: "name: x\nhos\0ts: {}\n", file: "nul.yaml") })
        #expect(error.problems.map { "\($0.line):\($0.column) \($0.message)" } == ["2:4 the file contains a NUL byte"])
    }

    @Test func controlCharacter() throws {
        let error = try #require(problems { try Topology.parse(yaml: "name: x\nhosts:\n  a\u{1}: {}\n", file: "c.yaml") })
        #expect(error.problems.count == 1)
        #expect(error.problems.first?.line == 3)
        #expect(error.problems.first?.message.hasPrefix("YAML syntax error") == true)
    }

    @Test func duplicateKeysDoNotHideOtherProblems() throws {
        let yaml = "name: dup\nhosts:\n  a: { routes: [ { to: 10.0.0.0/8, to: 10.0.0.0/8, via: x } ] }\n  b:\n  a: {}\n  b: {}\n"
        let error = try #require(problems { try Topology.parse(yaml: yaml, file: "dup.yaml") })
        #expect(error.problems.map { "\($0.line):\($0.column) \($0.field)" } == [
            "3:36 hosts.a.routes[0].to",
            "3:57 hosts.a.routes[0].via",
            "5:3 hosts.a",
            "6:3 hosts.b",
        ], "\(error)")
        #expect(error.problems.first?.message == #"duplicate key "to" (first at column 20)"#)
        #expect(error.problems[2].message == #"duplicate host "a" (first at line 3)"#)
    }

    @Test func problemDescription() {
        let p = TopologyError.Problem(file: "Topologies/x.yaml", line: 12, column: 7, field: "hosts.west.routes[1].via",
                                      message: #""192.1.2.300" is not an IP address"#)
        #expect(p.description == #"Topologies/x.yaml:12:7: hosts.west.routes[1].via: "192.1.2.300" is not an IP address"#)
        let q = TopologyError.Problem(file: "x.yaml", line: 3, column: 1, field: "", message: "YAML syntax error: oops")
        #expect(TopologyError(problems: [p, q]).description.split(separator: "\n").last == "x.yaml:3:1: YAML syntax error: oops")
    }
}

@Suite("Values")
struct ValueTests {
    static let network = """
        networks:
          - name: lan
            subnets: [10.0.0.0/24, "2001:db8::/64"]
            members:
              - { host: a, interface: eth0, addresses: 10.0.0.1 }
              - { host: b, interface: eth0, addresses: ["10.0.0.2/24", "2001:db8::2"] }
        """

    static func topology(hosts: String, networks: String = network) throws -> Topology {
        try Topology.parse(yaml: "name: values\nhosts:\n\(hosts)\n\(networks)\n", file: "values.yaml")
    }

    @Test(arguments: [
        ("0x1/0xff", Mark(1, mask: 0xff)),
        ("\"0x1/0xff\"", Mark(1, mask: 0xff)),
        ("0x10", Mark(16)),
        ("16", Mark(16)),
        ("\"16/0xf0\"", Mark(16, mask: 0xf0)),
        ("0xffffffff", Mark(.max)),
        ("4294967295/255", Mark(.max, mask: 255)),
    ])
    func fwmarkForms(text: String, mark: Mark) throws {
        let t = try Self.topology(hosts: "  a:\n    rules: [ { fwmark: \(text), lookup: 7 } ]\n  b:", networks: Self.network)
        #expect(t.host(named: "a")?.rules.first?.fwmark == mark)
    }

    @Test func defaultRouteTakesItsFamilyFromViaOrSrc() throws {
        let hosts = """
              a:
                routes:
                  - { to: default, dev: eth0 }
                  - { to: default, via: "2001:db8::1" }
                  - { to: default, src: "2001:db8::2", dev: eth0, table: local, metric: 0x10 }
                  - { to: 10.9.0.0/16, type: unreachable }
                  - { to: 10.8.0.1, via: 10.0.0.2, table: 4294967295 }
              b:
            """
        let t = try Self.topology(hosts: hosts, networks: Self.network)
        let routes = try #require(t.host(named: "a")?.routes)
        #expect(routes.map(\.to.description) == ["0.0.0.0/0", "::/0", "::/0", "10.9.0.0/16", "10.8.0.1/32"])
        #expect(routes[0].dev == "eth0")
        #expect(routes[2].dev == "eth0")
        #expect(routes[2].table == .local)
        #expect(routes[2].metric == 16)
        #expect(routes[3].type == .unreachable)
        #expect(routes[4].table == RouteTable(.max))
    }

    @Test func everythingAHostCanHave() throws {
        let hosts = """
              a:
                forwarding: yes
                sysctls:
                  net.ipv4.conf.all.rp_filter: 0
                  net.ipv6.conf.eth0.accept_dad: "0"
                rules:
                  - { from: "2001:db8::/32", lookup: main, not: true, iif: lo, oif: eth0, priority: 0 }
                  - { family: ipv6, table: 100 }
                masquerade:
                  - out: eth0
                nftables: |
                  table inet nat {
                    chain post { type nat hook postrouting priority srcnat; }
                  }
              b: ~
            """
        let t = try Self.topology(hosts: hosts, networks: Self.network)
        let a = try #require(t.host(named: "a"))
        #expect(a.forwarding)
        #expect(a.sysctls.map { "\($0.key)=\($0.value)@\($0.location?.line ?? -1)" }
            == ["net.ipv4.conf.all.rp_filter=0@6", "net.ipv6.conf.eth0.accept_dad=0@7"])
        #expect(a.rules.map(\.description) == ["-6 rule priority 0 not from 2001:db8::/32 iif lo oif eth0 lookup main",
                                               "-6 rule lookup 100"])
        #expect(a.masquerade.first?.out == "eth0")
        #expect(a.masquerade.first?.from == nil)
        #expect(a.nftables?.hasPrefix("table inet nat {\n") == true)
        let b = try #require(t.host(named: "b"))
        #expect(b.location?.description == "values.yaml:17:3")
        #expect(!b.forwarding && b.routes.isEmpty && b.rules.isEmpty && b.sysctls.isEmpty && b.nftables == nil)
        let lan = t.networks[0]
        #expect(lan.subnets == [CIDR("10.0.0.0/24")!, CIDR("2001:db8::/64")!])
        #expect(lan.members[0].addresses == [CIDR("10.0.0.1/24")!])
        #expect(lan.members[1].addresses == [CIDR("10.0.0.2/24")!, CIDR("2001:db8::2/64")!])
    }

    @Test func ipv6AddressesTakeTheirSubnetsLength() throws {
        let networks = """
            networks:
              - name: lan
                subnets: ["10.0.0.0/30", "2001:db8::/64", "10.1.0.0/31"]
                mtu: 9000
                members:
                  - { host: a, interface: eth0, addresses: [10.0.0.1, "2001:db8::1", 10.1.0.0] }
                  - { host: b, interface: eth0, addresses: [10.0.0.2, "2001:db8::2/64", 10.1.0.1] }
            """
        let t = try Self.topology(hosts: "  a:\n  b:", networks: networks)
        #expect(t.networks[0].mtu == 9000)
        #expect(t.networks[0].members.map { $0.addresses.map(\.description) } == [
            ["10.0.0.1/30", "2001:db8::1/64", "10.1.0.0/31"],
            ["10.0.0.2/30", "2001:db8::2/64", "10.1.0.1/31"],
        ])
    }

    @Test func hostsWithoutNetworksAreFine() throws {
        let t = try Topology.parse(yaml: "name: alone\nhosts:\n  a:\n    routes: [ { to: 10.0.0.0/8, type: blackhole } ]\n", file: "alone.yaml")
        #expect(t.hosts.map(\.name) == ["a"])
        #expect(t.networks.isEmpty)
        #expect(t.host(named: "a")?.routes.first?.description == "blackhole 10.0.0.0/8")
    }
}

@Suite("Hosts owned by a user namespace")
struct UserNamespaceHostLoaderTests {
    @Test("user-namespace: true is nobody, a number is that uid; anything else is refused with its line and field")
    func userNamespaceKey() throws {
        let t = try Topology.parse(yaml: "name: u\nhosts:\n  a:\n    user-namespace: true\n  b:\n    user-namespace: 1000\n  c: {}\n", file: "u.yaml")
        #expect(t.host(named: "a")?.userNamespace == 65534 && t.host(named: "b")?.userNamespace == 1000 && t.host(named: "c")?.userNamespace == nil)
        let e = problems { try Topology.parse(yaml: "name: u\nhosts:\n  a:\n    user-namespace: root\n", file: "u.yaml") }
        #expect(e?.description.contains("u.yaml:4") == true && e?.description.contains("user-namespace") == true
                && e?.description.contains("neither true, false nor a uid") == true, "\(String(describing: e))")
        #expect(problems { try Topology.parse(yaml: "name: u\nhosts:\n  a:\n    user-namespace: 0\n", file: "u.yaml") } != nil)
    }
}
