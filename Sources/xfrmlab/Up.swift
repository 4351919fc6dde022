import ArgumentParser
import Foundation
import Lab
import Topology

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bring a topology up and leave it up (end it with `xfrmlab down`).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A topology file (YAML), or the name of one in Topologies/.")
    var file: String = "north-east-west"

    func run() throws {
        global.bootstrap()
        try requireRoot()
        let topology = try Topology.load(path: topologyPath(file))
        let started = Date()
        let lab = try Lab.up(topology)
        let seconds = Date().timeIntervalSince(started)
        try lab.detach()
        if global.json {
            let names = lab.run.state.namespaces
            let data = try JSONSerialization.data(withJSONObject: ["run": lab.run.id, "topology": topology.name,
                                                                   "namespaces": names, "seconds": seconds], options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("run \(lab.run.id): \(topology.name) is up in \(String(format: "%.1f", seconds * 1000)) ms")
            for host in lab.hostNames { print("  \(host)\t\(lab.run.namespaceName(for: host))") }
            print("inspect with `xfrmlab show`, enter with `xfrmlab exec HOST -- CMD`, end with `xfrmlab down`")
        }
    }
}
