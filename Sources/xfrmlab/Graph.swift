import ArgumentParser
import Foundation
import Namespaces
import Topology

struct Graph: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "graph",
        abstract: "Draw a topology (hosts, networks, addresses, rules) as SVG and PNG through Graphviz.")

    @Argument(help: "A topology file, or the name of one in Topologies/.")
    var file: String = "north-east-west"

    @Option(name: .shortAndLong, help: "Output path without extension (writes .dot, .svg and .png).")
    var output: String?

    func run() throws {
        let topology = try Topology.load(path: topologyPath(file))
        let base = output ?? topology.name
        let dot = topology.dot()
        try dot.write(toFile: base + ".dot", atomically: true, encoding: .utf8)
        guard Executable.find("dot") != nil else {
            throw ValidationError("Graphviz's `dot` is not installed (make deps installs it); wrote \(base).dot")
        }
        for format in ["svg", "png"] {
            let r = try Namespaces.Process.execute(["dot", "-T\(format)", "-Gdpi=110", "-o", "\(base).\(format)", "\(base).dot"])
            guard r.succeeded else { throw ValidationError("dot -T\(format) failed: \(r.standardError)") }
        }
        print("wrote \(base).dot, \(base).svg, \(base).png")
    }
}
