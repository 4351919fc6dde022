import ArgumentParser
import Foundation
import Glibc
import Logging

@main
struct XfrmLab: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xfrmlab",
        abstract: "Build network-namespace topologies, drive the kernel's IPsec, and prove where marked packets go.",
        subcommands: [Up.self, Down.self, Show.self, Exec.self, GC.self, RunScenario.self, Graph.self, Bench.self, Probe.self,
                      MatrixCommand.self, MatrixGuest.self, MatrixInitramfs.self, KernelsCommand.self, HostSnapshotCommand.self, TraceCommand.self, Reproduce.self, ReportCommand.self, FindingsCommand.self, CheckDocs.self, Init.self, Bisect.self, BisectStep.self])
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Flag(name: .shortAndLong, help: "Log what is done.")
    var verbose = false

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func bootstrap() {
        let level: Logger.Level = verbose ? .debug : .warning
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
    }
}

/// Picks the run a command acts on: the one named, or the only one left up.
struct RunSelection: ParsableArguments {
    @Option(name: .customLong("run"), help: "The run id (see `xfrmlab show --runs`); defaults to the only detached run.")
    var id: String?
}

/// The repository's Topologies/ folder, found from the working directory or the executable.
func topologyPath(_ name: String) -> String {
    if FileManager.default.fileExists(atPath: name) { return name }
    let candidates = ["Topologies/\(name)", "Topologies/\(name).yaml"]
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    let roots = [FileManager.default.currentDirectoryPath, exe.appendingPathComponent("../../..").standardized.path,
                 exe.appendingPathComponent("../..").standardized.path]
    for root in roots {
        for c in candidates where FileManager.default.fileExists(atPath: root + "/" + c) { return root + "/" + c }
    }
    return name
}

func requireRoot() throws {
    guard geteuid() == 0 else {
        throw ValidationError("xfrmlab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces")
    }
}

/// Prints to standard error.
func warn(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
