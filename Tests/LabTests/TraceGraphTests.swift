import Foundation
import Namespaces
import Probes
import Testing
import XfrmLabTesting

/// Pictures of traces (`Trace.dot(expected:)`), checked on the DOT text of made-up traces.
@Suite("A trace drawn as a picture")
struct TraceGraphTests {
    static let west: [UInt8] = [192, 1, 2, 45], east: [UInt8] = [192, 1, 2, 23]
    static let westPrivate: [UInt8] = [192, 0, 1, 1], eastPrivate: [UInt8] = [192, 0, 2, 1]

    /// An IPv4 header with protocol `proto`, then `transport`.
    static func ipv4(_ proto: UInt8, _ source: [UInt8], _ destination: [UInt8], _ transport: [UInt8]) -> PacketSummary {
        let header: [UInt8] = [0x45, 0, 0, UInt8(20 + transport.count), 0, 0, 0, 0, 64, proto, 0, 0] + source + destination
        return PacketSummary(header + transport)!
    }
    static func udp(_ s: [UInt8], _ d: [UInt8], port: UInt16 = 7000) -> PacketSummary {
        ipv4(17, s, d, [0x9c, 0x40, UInt8(port >> 8), UInt8(port & 0xff), 0, 8, 0, 0])
    }
    static func esp(_ s: [UInt8], _ d: [UInt8], spi: UInt32) -> PacketSummary {
        ipv4(50, s, d, [UInt8(spi >> 24), UInt8(spi >> 16 & 0xff), UInt8(spi >> 8 & 0xff), UInt8(spi & 0xff), 0, 0, 0, 1])
    }

    /// west encrypts a datagram for east's private subnet; east decrypts and delivers it.
    static let tunnel = Trace(hops: [
        Hop(host: "west", hook: .output, mark: 0x1, outInterface: "eth1", packet: udp(westPrivate, eastPrivate), sequence: 0),
        Hop(host: "west", hook: .postrouting, mark: 0x1, outInterface: "eth1", packet: udp(westPrivate, eastPrivate), sequence: 1),
        Hop(host: "west", hook: .output, mark: 0x1, outInterface: "eth1", packet: esp(west, east, spi: 0x1001), sequence: 2),
        Hop(host: "west", hook: .postrouting, mark: 0x1, outInterface: "eth1", packet: esp(west, east, spi: 0x1001), sequence: 3),
        Hop(host: "east", hook: .prerouting, connectionMark: 0x5, inInterface: "eth1", packet: esp(west, east, spi: 0x1001), sequence: 0),
        Hop(host: "east", hook: .input, inInterface: "eth1", packet: esp(west, east, spi: 0x1001), sequence: 1),
        Hop(host: "east", hook: .prerouting, mark: 0x7, inInterface: "eth1", packet: udp(westPrivate, eastPrivate), sequence: 2),
        Hop(host: "east", hook: .input, mark: 0x7, inInterface: "eth1", packet: udp(westPrivate, eastPrivate), sequence: 3),
    ], hosts: ["west", "east"], links: ["west eth1": ["east eth1"], "east eth1": ["west eth1"]])

    @Test("each host is a box of its hops in the kernel's order, with the 5-tuple or the SPI, interfaces and marks")
    func hopsAndHosts() {
        let dot = TraceGraphTests.tunnel.dot()
        #expect(dot.hasPrefix("digraph"))
        #expect(dot.contains("subgraph cluster_host0 {\n      label=<<B>west</B>>"))
        #expect(dot.contains("subgraph cluster_host1 {\n      label=<<B>east</B>>"))
        #expect(dot.contains("hop0 [label=<<B>west · output</B><BR/>udp 192.0.1.1:40000 → 192.0.2.1:7000<BR/>out eth1 · mark 0x1>"))
        #expect(dot.contains("<B>west · postrouting</B><BR/>ESP spi 0x1001<BR/>192.1.2.45 → 192.1.2.23<BR/>out eth1 · mark 0x1>"))
        #expect(dot.contains("<B>east · prerouting</B><BR/>ESP spi 0x1001<BR/>192.1.2.45 → 192.1.2.23<BR/>in eth1 · mark 0x0 · ct mark 0x5>"))
        #expect(dot.contains("hop0 -> hop1;"))
        #expect(!dot.contains("cluster_expected"))
    }

    @Test("encapsulation and decapsulation are labelled on the arrow where the packet changes, the wire joins the two hosts")
    func encapsulation() {
        let dot = TraceGraphTests.tunnel.dot()
        #expect(dot.contains("hop1 -> hop2 [label=\"encapsulated: ESP spi 0x1001\""))
        #expect(dot.contains("hop5 -> hop6 [label=\"decapsulated from spi 0x1001\""))
        // The ESP packet leaves west at postrouting and arrives at east's prerouting; the
        // plain datagram never crossed the wire, so it has no such arrow.
        #expect(dot.contains("hop3 -> hop4 [label=\"eth1 → eth1\", style=bold"))
        #expect(!dot.contains("hop1 -> hop6"))
        #expect(dot.components(separatedBy: "style=bold").count == 2)
    }

    @Test("a failed expectation stands beside the trace: matched steps joined to their hops, the missing step and the forbidden hop in red")
    func expectationBeside() {
        let e = PathExpectation("mark 0x7 after decapsulation")
            .then(.on("west", .postrouting).esp(spi: 0x1001).out("eth1"))
            .then(.on("east", .input).udp().mark(0x8))
            .never(.on("east", .input).esp())
        let dot = TraceGraphTests.tunnel.dot(expected: e)
        #expect(dot.contains("label=<<B>expected: mark 0x7 after decapsulation</B>>"))
        #expect(dot.contains("step0 [label=<west postrouting: esp spi 0x1001 out eth1<BR/><I>matched</I>>"))
        #expect(dot.contains("step1 [label=<east input: udp mark 0x8<BR/><I>MISSING</I>>, fillcolor=\"#f8d0d0\""))
        #expect(dot.contains("step0 -> hop3 [style=dashed"))
        #expect(!dot.contains("step1 -> hop"))
        #expect(dot.contains("never0 [label=<never: east input: esp<BR/><I>SEEN 1×</I>>"))
        #expect(dot.contains("never0 -> hop5 [style=dashed, color=\"#c00000\""))
        #expect(dot.contains("hop5 [label=<<B>east · input</B>") && dot.contains("fillcolor=\"#f8d0d0\", color=\"#c00000\", penwidth=2];"))
    }

    @Test("a failed expectation draws its picture where XFRMLAB_TRACE_PICTURES says (the matrix: beside the results); a passed one draws none",
          .enabled(if: Executable.find("dot") != nil, "Graphviz's dot is not on PATH"))
    func picturesOfFailures() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("xlpictures\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let wrong = PathExpectation("wrong: east input mark 0x8").then(.on("east", .input).udp().mark(0x8))
        let first = wrong.evaluate(TraceGraphTests.tunnel, pictures: directory)
        #expect(!first.passed)
        #expect(first.report.hasSuffix("picture: \(directory)/wrong__east_input_mark_0x8.svg\n"), "\(first.report)")
        let second = wrong.evaluate(TraceGraphTests.tunnel, pictures: directory)
        #expect(second.report.contains("picture: \(directory)/wrong__east_input_mark_0x8-2.svg"))
        let svg = try String(contentsOfFile: directory + "/wrong__east_input_mark_0x8.svg", encoding: .utf8)
        #expect(svg.contains("MISSING"))
        let right = PathExpectation("right").then(.on("east", .input).udp().mark(0x7))
        #expect(right.evaluate(TraceGraphTests.tunnel, pictures: directory).passed)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
                == ["wrong__east_input_mark_0x8-2.svg", "wrong__east_input_mark_0x8.svg"])
        // Without the variable (as in a plain `swift test`), no picture and no mention of one.
        #expect(!wrong.evaluate(TraceGraphTests.tunnel, pictures: nil).report.contains("picture:"))
    }

    @Test("an empty trace says so")
    func empty() {
        #expect(Trace(hops: [], hosts: ["west"]).dot().contains("no packet was seen at any traced hook"))
    }

    @Test("writePicture renders SVG and PNG through Graphviz", .enabled(if: Executable.find("dot") != nil, "Graphviz's dot is not on PATH"))
    func render() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("xltrace\(getpid())").path
        defer { for ext in ["svg", "png"] { unlink(base + "." + ext) } }
        try TraceGraphTests.tunnel.writePicture(to: base + ".svg", title: "tunnel")
        let svg = try String(contentsOfFile: base + ".svg", encoding: .utf8)
        #expect(svg.contains("<svg") && svg.contains("encapsulated: ESP spi 0x1001"))
        try TraceGraphTests.tunnel.writePicture(to: base + ".png")
        let png = try #require(FileManager.default.contents(atPath: base + ".png"))
        #expect(png.starts(with: [0x89, 0x50, 0x4e, 0x47]))
        #expect(throws: Error.self) { try TraceGraphTests.tunnel.writePicture(to: base + ".jpeg") }
    }
}

/// `xfrmlab trace`, as a user runs it.
@Suite("xfrmlab trace", .tags(.privileged), .needsNamespaces)
struct TraceCommandTests {
    @Test("a marked round trip passes its expected path and is drawn; a wrong path exits 1 and its picture shows the missing step")
    func traceCommand() throws {
        let dot = FileManager.default.temporaryDirectory.appendingPathComponent("xltracecmd\(getpid()).dot").path
        defer { unlink(dot) }
        let right = try Namespaces.Process.execute([xfrmlabBinary, "trace", "north-east-west", "--from", "west", "--to", "north",
                                                    "--mark", "0x1", "--expect", "west postrouting mark 0x1 out eth1",
                                                    "--expect", "east forward", "--never", "nic forward mark 0x1", "--picture", dot])
        #expect(right.succeeded, "\(right)")
        #expect(right.standardOutput.contains("PASS  west → north: as expected"))
        #expect(right.standardOutput.contains("east forward: udp 192.1.2.45:"))
        #expect(try String(contentsOfFile: dot, encoding: .utf8).contains("label=<<B>expected: west → north</B>>"))

        let wrong = try Namespaces.Process.execute([xfrmlabBinary, "trace", "north-east-west", "--from", "west", "--to", "north",
                                                    "--expect", "east forward", "--picture", dot])
        #expect(wrong.status == 1, "\(wrong)")
        #expect(wrong.standardOutput.contains("missing: east forward: any packet to 192.1.3.33"))
        #expect(try String(contentsOfFile: dot, encoding: .utf8).contains("<I>MISSING</I>"))

        let bad = try Namespaces.Process.execute([xfrmlabBinary, "trace", "--from", "west", "--to", "north", "--expect", "east sideways"])
        #expect(bad.status != 0 && bad.standardError.contains("a hop is HOST HOOK"), "\(bad)")
    }
}
