import Foundation
import Testing
import Topology

@Suite("Topology pictures")
struct GraphTests {
    static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
        }
        return "."
    }()

    @Test("the DOT text has a node per host and network and an edge per attachment, labelled with its addresses")
    func dotText() throws {
        let t = try Topology.load(path: Self.root + "/Topologies/north-east-west.yaml")
        let dot = t.dot()
        for h in t.hosts { #expect(dot.contains("\"host:\(h.name)\" [shape=box")) }
        for n in t.networks { #expect(dot.contains("\"net:\(n.name)\" [shape=ellipse")) }
        let edges = dot.split(separator: "\n").filter { $0.contains(" -- ") }
        #expect(edges.count == t.networks.reduce(0) { $0 + $1.members.count })
        #expect(dot.contains("\"host:west\" -- \"net:public-2\" [label=\"eth1\\n192.1.2.45/24\\n2001:db8:1:2::45/64\""))
        #expect(dot.contains("priority 100 fwmark 0x1/0xff lookup 50"))
        #expect(dot.contains("bridge in nic"))
    }

    @Test("tunnels are dashed edges between their hosts with style, if_id and IKE daemons")
    func tunnels() throws {
        let t = try Topology.load(path: Fixtures.example("west-east-ike.yaml"))
        let dot = t.dot()
        #expect(dot.contains("\"host:west\" -- \"host:east\" [style=dashed"))
        #expect(dot.contains("west-east: xfrmi if_id 7\\nIKE strongswan → libreswan (certificates)\\n192.0.1.0/24 ⇄ 192.0.2.0/24"))
        let vti = try Topology.load(path: Fixtures.example("west-east-vti.yaml")).dot()
        #expect(vti.contains(": vti key ") && vti.contains("static keys, aead"))
    }

    @Test("Graphviz renders it", .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dot"), "Graphviz's dot is not installed"))
    func renders() throws {
        let t = try Topology.load(path: Self.root + "/Topologies/client1-client2-server.yaml")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("xfrmlab-graph-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let dotFile = dir.appendingPathComponent("t.dot"), svg = dir.appendingPathComponent("t.svg")
        try t.dot().write(to: dotFile, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/dot")
        p.arguments = ["-Tsvg", "-o", svg.path, dotFile.path]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let text = try String(contentsOf: svg, encoding: .utf8)
        #expect(text.contains("<svg"))
        for name in ["client1", "client2", "server", "nat1", "nat2", "198.51.100.11/24"] { #expect(text.contains(name)) }
    }
}
