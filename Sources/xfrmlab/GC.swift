import ArgumentParser
import Daemons
import Foundation
import Lab
import Namespaces

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove what killed runs left behind (namespaces, capability probe namespaces, IKE daemon directories), and only that: nothing whose owner still lives is touched.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Also remove runs left up on purpose by `xfrmlab up`.")
    var includeDetached = false

    @Flag(help: "Say what would be removed, remove nothing.")
    var dryRun = false

    func run() throws {
        global.bootstrap()
        try requireRoot()
        var removed = 0
        if !dryRun { removed += Run.sweepTemporaryFiles().count }
        for found in Run.all() where !found.live {
            if found.state?.detached == true && !includeDetached { continue }
            if dryRun {
                print("would remove run \(found.id): \(found.namespaces.joined(separator: " "))")
                continue
            }
            // adopt() takes the run's lock, so a run that comes alive meanwhile is skipped.
            guard let run = try Run.adopt(id: found.id) else { continue }
            let report = try RunLookup.remove(run: run, namespaces: found.namespaces)
            print("removed run \(found.id) (\(found.namespaces.count) namespace(s)): \(report)")
            removed += 1
        }
        // Capability probes killed mid-way (their maker's pid is in the name; only dead ones).
        for name in dryRun ? Leftovers.deadProbeNamespaces() : Leftovers.removeDeadProbeNamespaces() {
            print(dryRun ? "would remove probe namespace \(name)" : "removed probe namespace \(name) (its prober is dead)")
            removed += 1
        }
        // IKE daemons' private directories whose owner is dead (their `.owner` file or run id).
        for path in Leftovers.sweepOwnedDirectories(under: DaemonInstance.baseDirectory, dryRun: dryRun) {
            print(dryRun ? "would remove daemon directory \(path)" : "removed daemon directory \(path) (its owner is dead)")
            removed += 1
        }
        if removed == 0 && !dryRun { print("nothing to remove") }
    }
}
