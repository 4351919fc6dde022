import ArgumentParser
import Foundation
import Glibc
import Lab
import Topology

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bring a topology up and leave it up (end it with `xfrmlab down`).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A topology file (YAML), or the name of one in Topologies/.")
    var file: String = "north-east-west"

    @Flag(help: "Stay in the foreground and tear down on SIGINT/SIGTERM (if killed outright, `xfrmlab gc` cleans up).")
    var foreground = false

    func run() throws {
        global.bootstrap()
        try requireRoot()
        // Block the stop signals before any thread exists, so every thread inherits the mask
        // and the main thread alone takes them with sigwait.
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        sigaddset(&stopSignals, SIGINT)
        sigaddset(&stopSignals, SIGTERM)
        if foreground { pthread_sigmask(SIG_BLOCK, &stopSignals, nil) }
        let topology = try Topology.load(path: topologyPath(file))
        let started = Date()
        let lab = try Lab.up(topology)
        let seconds = Date().timeIntervalSince(started)
        if foreground {
            print("run \(lab.run.id): \(topology.name) is up in \(String(format: "%.1f", seconds * 1000)) ms; SIGINT or SIGTERM tears it down")
            fflush(nil)
            var received: Int32 = 0
            sigwait(&stopSignals, &received)
            let report = try lab.down()
            print("down: \(report.map(String.init(describing:)) ?? "done")")
            return
        }
        try lab.detach()
        if global.json {
            let names = lab.run.state.namespaces
            let data = try JSONSerialization.data(withJSONObject: ["run": lab.run.id, "topology": topology.name,
                                                                   "namespaces": names, "seconds": seconds], options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("run \(lab.run.id): \(topology.name) is up in \(String(format: "%.1f", seconds * 1000)) ms")
            for host in lab.hostNames { print("  \(host)\t\(lab.run.namespaceName(for: host))") }
            if global.verbose {
                print("  phases: " + lab.timings.map { "\($0.phase) \(String(format: "%.2f", $0.seconds * 1000)) ms" }.joined(separator: ", "))
            }
            print("inspect with `xfrmlab show`, enter with `xfrmlab exec HOST -- CMD`, end with `xfrmlab down`")
        }
    }
}
