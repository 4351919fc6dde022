import ArgumentParser
import Foundation
import Lab
import Namespaces

/// `make test` saves the host's namespace before the whole run and compares it after: any
/// difference (a link, address, route, rule, xfrm state or policy, watched sysctl, nft rule
/// or legacy iptables table) fails the run.
struct HostSnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host-snapshot",
        abstract: "Save the host namespace's network state to a file, or compare it with one (exit 1 on any difference).",
        subcommands: [Save.self, Compare.self])

    struct Options: ParsableArguments {
        @Argument(help: "The snapshot file.")
        var file: String

        @Option(help: ArgumentHelp("Read this /run/netns namespace instead of the host's (tests use one standing in for the host).",
                                   visibility: .hidden))
        var namespace: String?

        func capture() throws -> HostSnapshot {
            guard let namespace else { return try HostSnapshot.capture() }
            let ns = try Namespace.open(name: namespace)
            defer { ns.delete(keepingEntry: true) }
            return try HostSnapshot.capture(in: ns)
        }
    }

    struct Save: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "save", abstract: "Write the host namespace's state to FILE.")
        @OptionGroup var options: Options

        func run() throws {
            let snapshot = try options.capture()
            try snapshot.file().write(toFile: options.file, atomically: true, encoding: .utf8)
            print("host snapshot: \(snapshot.lines.count) lines in \(options.file)")
        }
    }

    struct Compare: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "compare",
            abstract: "Compare the host namespace's state with FILE; list what differs and exit 1 if anything does.")
        @OptionGroup var options: Options

        func run() throws {
            let saved = try HostSnapshot.lines(ofFile: options.file)
            let differences = HostSnapshot.compare(saved: saved, current: try options.capture().lines)
            if differences.isEmpty {
                print("host snapshot: unchanged (\(saved.count) lines, \(options.file))")
                return
            }
            print("HOST CHANGED since \(options.file): \(differences.count) line(s) differ (- before, + now)")
            for d in differences { print("  \(d)") }
            throw ExitCode(1)
        }
    }
}
