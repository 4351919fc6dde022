import ArgumentParser
import Foundation
import Lab
import Namespaces

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Tear down a run left up by `xfrmlab up` and wait until the kernel has freed it.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var selection: RunSelection

    @Flag(help: "Tear down every detached run.")
    var all = false

    func run() throws {
        global.bootstrap()
        try requireRoot()
        let targets = all ? RunLookup.detached() : [try RunLookup.select(selection.id)]
        if targets.isEmpty { print("no run is up") }
        for found in targets {
            guard let run = try Run.adopt(id: found.id) else {
                throw ValidationError("run \(found.id) is owned by a live process (pid \(found.state?.pid ?? 0)); stop it instead")
            }
            let report = try RunLookup.remove(run: run, namespaces: found.namespaces)
            print("run \(found.id) down: \(report)")
        }
    }
}

/// Finding runs for `down`, `show`, `exec` and `gc`.
enum RunLookup {
    static func detached() -> [Run.Found] {
        Run.all().filter { !$0.live && $0.state?.detached == true }
    }

    /// The run named by `id`, or the only detached one.
    static func select(_ id: String?) throws -> Run.Found {
        let runs = Run.all()
        if let id {
            guard let r = runs.first(where: { $0.id == id }) else {
                throw ValidationError("no run \(id) (runs here: \(runs.map(\.id).joined(separator: ", ")))")
            }
            return r
        }
        let up = runs.filter { $0.state?.detached == true && !$0.live }
        switch up.count {
        case 1: return up[0]
        case 0: throw ValidationError("no run is up: start one with `xfrmlab up FILE`")
        default: throw ValidationError("several runs are up (\(up.map(\.id).joined(separator: ", "))): choose one with --run")
        }
    }

    /// Deletes a run's namespaces, waits for the kernel, removes its files.
    static func remove(run: Run, namespaces: [String]) throws -> ReleaseReport {
        defer { run.finish() }
        var opened: [Namespace] = []
        for name in namespaces {
            if let ns = try? Namespace.open(name: name) {
                opened.append(ns)
            } else {
                // Not a namespace any more (a half-made mount): just clear the file.
                Namespace.removeEntry(name: name)
            }
        }
        return try NamespaceReaper.delete(opened)
    }
}
