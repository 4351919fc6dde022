/// Graphviz (DOT) text for a topology: hosts as boxes, networks as ellipses with their
/// subnets, an edge per attachment labelled with the interface and its addresses, and a
/// dashed edge per IPsec tunnel with its style, mark or if_id, and its IKE daemons.
extension Topology {
    public func dot() -> String {
        func q(_ s: String) -> String { DOT.quoted(s) }
        var out = "graph \(q(name)) {\n"
        out += "  graph [layout=neato, overlap=false, splines=true, sep=\"+12\", fontname=\"Helvetica\", label=\(q(name)), labelloc=t, fontsize=16, pad=0.3];\n"
        out += "  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];\n"
        for h in hosts {
            var lines = ["<B>\(h.name)</B>"]
            if h.forwarding { lines.append("forwarding") }
            for m in h.masquerade { lines.append("masquerade out \(m.out)" + (m.from.map { " from \($0)" } ?? "")) }
            for r in h.rules { lines.append(DOT.html(r.description.replacingOccurrences(of: "rule ", with: ""))) }
            for r in h.routes where r.table != .main { lines.append(DOT.html("route \(r)")) }
            out += "  \(q("host:" + h.name)) [shape=box, style=\"rounded,filled\", fillcolor=\"#dbe9f6\", label=<\(lines.joined(separator: "<BR/>"))>];\n"
        }
        for n in networks {
            let subnets = n.subnets.map { DOT.html($0.description) }.joined(separator: "<BR/>")
            let kind = n.kind == .macvlan ? "<BR/><I>macvlan</I>" : (n.members.count > 2 ? "<BR/><I>bridge in \(n.bridge ?? "switch")</I>" : "")
            out += "  \(q("net:" + n.name)) [shape=ellipse, style=filled, fillcolor=\"#f3f3f3\", label=<<B>\(DOT.html(n.name))</B><BR/>\(subnets)\(kind)>];\n"
            for m in n.members {
                let label = DOT.quoted(lines: [m.interface] + m.addresses.map(\.description))
                out += "  \(q("host:" + m.host)) -- \(q("net:" + n.name)) [label=\(label), len=2.2];\n"
            }
        }
        for t in tunnels {
            var label = ["\(t.name): \(t.style.rawValue)"]
            switch t.style {
            case .policy: if let m = t.mark { label[0] += " mark \(m)" }
            case .vti: if let m = t.mark { label[0] += " key \(m.value)" }
            case .xfrmi: if let id = t.interfaceID { label[0] += " if_id \(id)" }
            }
            if let l = t.left.ike, let r = t.right.ike {
                label.append("IKE \(l.rawValue) → \(r.rawValue) (\(t.authentication.rawValue))")
            } else {
                label.append("static keys, \(t.algorithm.rawValue)" + (t.encapsulation == .udp ? ", ESP in UDP" : ""))
            }
            label.append(t.left.subnets.map(\.description).joined(separator: " ") + " ⇄ " + t.right.subnets.map(\.description).joined(separator: " "))
            out += "  \(q("host:" + t.left.host)) -- \(q("host:" + t.right.host)) [style=dashed, penwidth=2, color=\"#b5472c\", fontcolor=\"#b5472c\", len=3, label=\(DOT.quoted(lines: label))];\n"
        }
        return out + "}\n"
    }
}

/// Text made safe for DOT, for this module's pictures and the traces' (Probes).
public enum DOT {
    /// A quoted DOT string: backslashes and quotes escaped.
    public static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// A quoted DOT string of several lines (each escaped, then joined with DOT's `\n`).
    public static func quoted(lines: [String]) -> String {
        let one = lines.map { quoted($0).dropFirst().dropLast() }.joined(separator: "\\n")
        return "\"" + one + "\""
    }

    /// Text for an HTML-like label (`<…>`): `&`, `<` and `>` as entities.
    public static func html(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
