import ArgumentParser
import Foundation
import Scenarios

struct RunScenario: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Bring up a topology, run a scenario's checks, print the report, tear down.")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "The scenario (\(Connectivity.name)).")
    var scenario: String = Connectivity.name

    @Option(help: "The topology file.")
    var topology: String = "north-east-west"

    func run() async throws {
        global.bootstrap()
        try requireRoot()
        guard scenario == Connectivity.name else {
            throw ValidationError("unknown scenario \(scenario); known: \(Connectivity.name)")
        }
        let report = try await Connectivity.run(topologyPath: topologyPath(topology))
        print(report, terminator: "")
        if !report.passed { throw ExitCode(1) }
    }
}
