import ArgumentParser
import Foundation
import Scenarios

struct RunScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Bring up a topology, run a scenario's checks, print the report, tear down.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The scenario (see --list).")
    var scenario: String = Connectivity.name

    @Option(help: "The topology file (default: the scenario's own).")
    var topology: String?

    @Flag(help: "List the scenarios.")
    var list = false

    func run() async throws {
        global.bootstrap()
        if list {
            for s in ScenarioCatalog.all { print("\(s.name)\t\(s.topology)\t\(s.summary)") }
            return
        }
        try requireRoot()
        guard let definition = ScenarioCatalog.named(scenario) else {
            throw ValidationError("unknown scenario \(scenario); known: \(ScenarioCatalog.all.map(\.name).joined(separator: ", "))")
        }
        let report = try definition.run(topologyPath: topologyPath(topology ?? definition.topology))
        print(report, terminator: "")
        // A scenario the kernel cannot run exits 2 (not a pass, not a failure of the question).
        if report.skipped != nil { throw ExitCode(2) }
        if !report.passed { throw ExitCode(1) }
    }
}
