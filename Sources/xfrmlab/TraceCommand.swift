import ArgumentParser
import Foundation
import Lab
import Netlink
import Probes
import Topology

/// One round trip through a topology, traced hook by hook, printed and optionally drawn.
struct TraceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Bring up a topology, send one marked round trip, print its trace hook by hook and draw it (with the expected path beside it), tear down.",
        discussion: """
        Example: xfrmlab trace north-east-west --from west --to north --mark 0x1 \\
                   --expect "east forward" --never "nic forward out eth1" --picture trace.png
        An --expect or --never pattern is "HOST HOOK [mark M[/MASK]] [in IF] [out IF] [esp]" and
        concerns the request (packets to the destination). Exit 1 when the expectation fails.
        """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A topology file, or the name of one in Topologies/.")
    var topology: String = "north-east-west"

    @Option(help: "The host that sends.")
    var from: String

    @Option(help: "The host that answers.")
    var to: String

    @Option(help: "The destination address (default: the answering host's first address of the family).")
    var address: String?

    @Flag(help: "IPv6 instead of IPv4.")
    var ipv6 = false

    @Option(help: "udp, tcp or ping.")
    var proto: String = "udp"

    @Option(help: "The destination port (udp, tcp).")
    var port: UInt16 = 7400

    @Option(help: "SO_MARK on the request (0x1 or 1).", transform: parseNumber)
    var mark: UInt32?

    @Option(name: .customLong("expect"), help: "A hop the request must take, in order per host (repeatable).")
    var expectations: [String] = []

    @Option(name: .customLong("never"), help: "A hop the request must not take (repeatable).")
    var forbidden: [String] = []

    @Option(help: "Draw the trace to this file: .svg, .png, .pdf or .dot (Graphviz).")
    var picture: String?

    func validate() throws {
        guard ["udp", "tcp", "ping"].contains(proto) else { throw ValidationError("--proto is udp, tcp or ping, not \(proto)") }
        for p in expectations + forbidden { _ = try TraceCommand.pattern(p) }
    }

    func run() async throws {
        global.bootstrap()
        try requireRoot()
        let topology = try Topology.load(path: topologyPath(topology))
        let passed: Bool = try await topology.withLab { lab in
            let sender = try lab.namespace(from), answerer = try lab.namespace(to)
            let destination: [UInt8]
            if let address {
                guard let a = IPAddress(address) else { throw ValidationError("--address \(address) is not an IP address") }
                destination = a.bytes
            } else {
                destination = try lab.address(of: to, family: ipv6 ? .ipv6 : .ipv4).bytes
            }
            let (trip, trace) = try lab.trace {
                switch proto {
                case "tcp": return try Echo.tcp(from: sender, to: answerer, destination: destination, port: port, mark: mark)
                case "ping": return try Echo.ping(from: sender, destination: destination, mark: mark)
                default: return try Echo.udp(from: sender, to: answerer, destination: destination, port: port, mark: mark)
                }
            }
            print(trip)
            print("trace (\(trace.hops.count) hops; order is exact within a host):")
            print(trace, terminator: "")
            var expectation: PathExpectation?
            if !expectations.isEmpty || !forbidden.isEmpty {
                var e = PathExpectation("\(from) → \(to)")
                for p in expectations { e = e.then(try TraceCommand.pattern(p).to(destination)) }
                for p in forbidden { e = e.never(try TraceCommand.pattern(p).to(destination)) }
                expectation = e
            }
            let verdict = expectation?.evaluate(trace)
            if let verdict { print(verdict.passed ? "PASS  \(verdict.report)" : "FAIL  \(verdict.report)", terminator: verdict.passed ? "\n" : "") }
            if let picture {
                let title = "\(proto) \(from) → \(formatAddress(destination))" + (mark.map { " mark 0x\(String($0, radix: 16))" } ?? "")
                    + " on \(topology.name)"
                try trace.writePicture(to: picture, expected: expectation, title: title)
                print("picture: \(picture)")
            }
            return verdict?.passed ?? trip.answered
        }
        if !passed { throw ExitCode(1) }
    }

    /// "HOST HOOK [mark M[/MASK]] [in IF] [out IF] [esp]".
    static func pattern(_ text: String) throws -> HopPattern {
        let words = text.split(separator: " ").map(String.init)
        guard words.count >= 2, let hook = Hook(rawValue: words[1]) else {
            throw ValidationError("\"\(text)\": a hop is HOST HOOK (\(Hook.allCases.map(\.rawValue).joined(separator: "|"))) [mark M[/MASK]] [in IF] [out IF] [esp]")
        }
        var p = HopPattern.on(words[0], hook)
        var i = 2
        while i < words.count {
            let word = words[i]
            if word == "esp" { p = p.esp(); i += 1; continue }
            guard i + 1 < words.count else { throw ValidationError("\"\(text)\": \(word) needs a value") }
            let value = words[i + 1]
            switch word {
            case "mark":
                let parts = value.split(separator: "/").map(String.init)
                guard let m = try? parseNumber(parts[0]) else { throw ValidationError("\"\(text)\": mark \(value) is not a number") }
                let mask = parts.count > 1 ? try? parseNumber(parts[1]) : UInt32.max
                guard let mask else { throw ValidationError("\"\(text)\": mask in \(value) is not a number") }
                p = p.mark(m, mask: mask)
            case "in": p = p.in(value)
            case "out": p = p.out(value)
            default: throw ValidationError("\"\(text)\": unknown word \(word) (mark, in, out, esp)")
            }
            i += 2
        }
        return p
    }
}

/// "0x1f" or "31".
func parseNumber(_ s: String) throws -> UInt32 {
    let value = s.hasPrefix("0x") ? UInt32(s.dropFirst(2), radix: 16) : UInt32(s)
    guard let value else { throw ValidationError("\(s) is not a number (decimal or 0x hex)") }
    return value
}
