import Foundation
import Namespaces
import Netlink
import Topology

/// A trace drawn with Graphviz: each host a box holding its hops in the order the kernel logged
/// them (hook, interfaces, mark, connection mark, the inner 5-tuple or the ESP SPI); an arrow
/// from a hop that leaves a host to the hop where the same packet arrives at the next one; the
/// step where a packet is encapsulated into ESP (or comes out of it) marked on its arrow. With
/// an expectation, its path stands beside the trace: each step joined to the hop it matched,
/// missing steps and forbidden hops in red.
extension Trace {
    public func dot(expected: PathExpectation? = nil, title: String? = nil) -> String {
        var out = "digraph \"trace\" {\n"
        let heading = title ?? expected.map { "trace: \($0.name)" } ?? "trace"
        out += "  graph [rankdir=TB, newrank=true, fontname=\"Helvetica\", fontsize=16, label=\(DOT.quoted(heading)), labelloc=t, nodesep=0.35, ranksep=0.35, pad=0.3];\n"
        out += "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10, fillcolor=\"#ffffff\"];\n"
        out += "  edge [fontname=\"Helvetica\", fontsize=9, color=\"#444444\"];\n"
        let match = expected?.match(self)
        let violating = Set(match?.violations.flatMap { $0 } ?? [])

        out += "  subgraph cluster_actual {\n    label=<<B>actual trace</B>>; style=\"rounded\"; color=\"#999999\";\n"
        if hops.isEmpty {
            out += "    none [label=\"no packet was seen at any traced hook\", style=dashed];\n"
        }
        for (h, host) in hosts.enumerated() {
            let list = hops.indices.filter { hops[$0].host == host }
            guard !list.isEmpty else { continue }
            out += "    subgraph cluster_host\(h) {\n      label=<<B>\(DOT.html(host))</B>>; style=\"rounded,filled\"; fillcolor=\"#eef3f8\"; color=\"#7f9cbf\";\n"
            for i in list {
                let hop = hops[i]
                let esp = hop.packet.proto == .esp || hop.packet.encapsulated
                let fill = violating.contains(i) ? "#f8d0d0" : esp ? "#fde8c8" : "#ffffff"
                let border = violating.contains(i) ? ", color=\"#c00000\", penwidth=2" : ""
                out += "      hop\(i) [label=<\(label(hop))>, fillcolor=\"\(fill)\"\(border)];\n"
            }
            // Within a host, the kernel's own order.
            for (a, b) in zip(list, list.dropFirst()) {
                out += "      hop\(a) -> hop\(b)" + attributes(transition(hops[a], hops[b])) + ";\n"
            }
            out += "    }\n"
        }
        // Between hosts: a packet leaving through an interface is the next one that arrives
        // elsewhere with the same protocol, destination, ports or SPI (the source may have been
        // rewritten by NAT after the log rule saw it).
        var arrived = Set<Int>()
        for i in hops.indices where hops[i].hook == .postrouting || hops[i].hook == .forward {
            guard let out0 = hops[i].outInterface, out0 != "lo", hops[i].hook == .postrouting || !hasPostrouting(after: i),
                  !changesEncapsulation(i, next: true) else { continue }
            let p = hops[i].packet
            // Where the interface leads, when the lab said (else any other host).
            let ends = links["\(hops[i].host) \(out0)"].map(Set.init)
            if let j = hops.indices.first(where: { j in
                !arrived.contains(j) && hops[j].host != hops[i].host && hops[j].hook == .prerouting && !changesEncapsulation(j, next: false)
                    && (ends?.contains("\(hops[j].host) \(hops[j].inInterface ?? "")") ?? true)
                    && hops[j].packet.proto == p.proto && hops[j].packet.destination == p.destination
                    && hops[j].packet.destinationPort == p.destinationPort && hops[j].packet.spi == p.spi
            }) {
                arrived.insert(j)
                out += "    hop\(i) -> hop\(j) [label=\(DOT.quoted("\(out0) → \(hops[j].inInterface ?? "?")")), style=bold, color=\"#2060a0\", constraint=true];\n"
            }
        }
        out += "  }\n"

        if let expected, let match {
            out += "  subgraph cluster_expected {\n    label=<<B>expected: \(DOT.html(expected.name))</B>>; style=\"rounded\"; color=\"#999999\";\n"
            for (s, step) in expected.steps.enumerated() {
                let found = match.steps[s]
                let state = found.hop != nil ? "matched" : found.outOfOrder ? "MISSING (seen, but out of order)" : "MISSING"
                let colors = found.hop != nil ? "fillcolor=\"#d8f0d8\", color=\"#2a7a2a\"" : "fillcolor=\"#f8d0d0\", color=\"#c00000\", penwidth=2"
                out += "    step\(s) [label=<\(DOT.html(step.description))<BR/><I>\(state)</I>>, \(colors)];\n"
            }
            for (a, b) in zip(expected.steps.indices, expected.steps.indices.dropFirst()) {
                out += "    step\(a) -> step\(b);\n"
            }
            for (f, rule) in expected.forbidden.enumerated() {
                let broken = !match.violations[f].isEmpty
                let colors = broken ? "fillcolor=\"#f8d0d0\", color=\"#c00000\", penwidth=2" : "fillcolor=\"#eeeeee\""
                out += "    never\(f) [label=<never: \(DOT.html(rule.description))<BR/><I>\(broken ? "SEEN \(match.violations[f].count)×" : "not seen")</I>>, \(colors)];\n"
            }
            if let last = expected.steps.indices.last {
                for f in expected.forbidden.indices { out += "    step\(last) -> never\(f) [style=invis];\n" }
            }
            out += "  }\n"
            for (s, found) in match.steps.enumerated() {
                if let hop = found.hop { out += "  step\(s) -> hop\(hop) [style=dashed, color=\"#2a7a2a\", arrowhead=none, constraint=false];\n" }
            }
            for (f, list) in match.violations.enumerated() {
                for hop in list { out += "  never\(f) -> hop\(hop) [style=dashed, color=\"#c00000\", arrowhead=none, constraint=false];\n" }
            }
        }
        return out + "}\n"
    }

    /// A forwarded packet is logged again at postrouting when that hook is traced: draw the
    /// wire from there, not from forward.
    private func hasPostrouting(after i: Int) -> Bool {
        hops[(i + 1)...].contains { $0.host == hops[i].host && $0.hook == .postrouting && $0.packet == hops[i].packet }
    }

    /// Whether the host's next (or previous) hop after `i` is the same packet turned into ESP or
    /// out of it: a plain packet about to be encapsulated never reaches the wire, and one just
    /// decapsulated did not come from it.
    private func changesEncapsulation(_ i: Int, next: Bool) -> Bool {
        let host = hops[i].host
        let neighbour = next ? hops[(i + 1)...].first { $0.host == host } : hops[..<i].last { $0.host == host }
        guard let neighbour else { return false }
        let esp = { (h: Hop) in h.packet.proto == .esp || h.packet.encapsulated }
        return esp(neighbour) && !esp(hops[i])
    }

    /// Writes `path` as DOT, SVG or PNG by its extension (SVG and PNG through Graphviz's `dot`).
    public func writePicture(to path: String, expected: PathExpectation? = nil, title: String? = nil) throws {
        try Graphviz.write(dot(expected: expected, title: title), to: path)
    }
}

/// Graphviz's `dot`, run as a command (pictures are made once per run, not per packet).
public enum Graphviz {
    /// Writes DOT text to `path`: as it is for `.dot` (or `.gv`), rendered for `.svg`, `.png`, `.pdf`.
    public static func write(_ dot: String, to path: String) throws {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "dot" || ext == "gv" {
            try dot.write(toFile: path, atomically: true, encoding: .utf8)
            return
        }
        guard ["svg", "png", "pdf"].contains(ext) else {
            throw SystemCallError("dot", errno: EINVAL, context: "\(path): a picture is .dot, .svg, .png or .pdf")
        }
        guard Executable.find("dot") != nil else {
            throw SystemCallError("dot", errno: ENOENT, context: "Graphviz's dot is not installed (make deps installs it)")
        }
        let r = try Namespaces.Process.execute(["dot", "-T\(ext)", "-Gdpi=96", "-o", path], input: dot)
        guard r.succeeded else { throw SystemCallError("dot", errno: EIO, context: "\(r)") }
    }
}

/// The hop as an HTML-like label: host and hook, the packet, interfaces, marks.
private func label(_ hop: Hop) -> String {
    let p = hop.packet
    var lines = ["<B>\(DOT.html(hop.host)) · \(hop.hook.rawValue)</B>"]
    let src = formatAddress(p.source), dst = formatAddress(p.destination)
    if p.proto == .esp || p.encapsulated {
        lines.append("ESP spi 0x\(String(p.spi ?? 0, radix: 16))" + (p.encapsulated ? " in UDP \(p.sourcePort ?? 0)→\(p.destinationPort ?? 0)" : ""))
        lines.append(DOT.html("\(src) → \(dst)"))
    } else {
        switch p.proto {
        case .udp, .tcp: lines.append(DOT.html("\(p.proto.rawValue) \(src):\(p.sourcePort ?? 0) → \(dst):\(p.destinationPort ?? 0)"))
        case .icmp, .icmpv6: lines.append(DOT.html("\(p.proto.rawValue) type \(p.icmpType ?? 0) \(src) → \(dst)"))
        default: lines.append(DOT.html("\(p)"))
        }
    }
    var where_: [String] = []
    if let i = hop.inInterface { where_.append("in \(i)") }
    if let o = hop.outInterface { where_.append("out \(o)") }
    var marks = "mark 0x\(String(hop.mark, radix: 16))"
    if let ct = hop.connectionMark { marks += " · ct mark 0x\(String(ct, radix: 16))" }
    lines.append(DOT.html((where_ + [marks]).joined(separator: " · ")))
    return lines.joined(separator: "<BR/>")
}

/// Encapsulation (plain → ESP) and decapsulation (ESP → plain) between two hops of one host.
private func transition(_ a: Hop, _ b: Hop) -> (label: String, color: String)? {
    let espA = a.packet.proto == .esp || a.packet.encapsulated, espB = b.packet.proto == .esp || b.packet.encapsulated
    if !espA && espB { return ("encapsulated: ESP spi 0x\(String(b.packet.spi ?? 0, radix: 16))", "#d07000") }
    if espA && !espB { return ("decapsulated from spi 0x\(String(a.packet.spi ?? 0, radix: 16))", "#d07000") }
    return nil
}

private func attributes(_ t: (label: String, color: String)?) -> String {
    guard let t else { return "" }
    return " [label=\(DOT.quoted(t.label)), color=\"\(t.color)\", fontcolor=\"\(t.color)\", penwidth=2]"
}
