import ArgumentParser
import Daemons
import Foundation
import Glibc
import Lab
import Topology

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "up", abstract: "Bring a topology up and leave it up (end it with `xfrmlab down`).")

    @OptionGroup var global: GlobalOptions

    @Argument(help: "A topology file (YAML), or the name of one in Topologies/.")
    var file: String = "north-east-west"

    @Flag(help: "Stay in the foreground and tear down on SIGINT/SIGTERM (if killed outright, `xfrmlab gc` cleans up).")
    var foreground = false

    @Option(name: .customLong("strongswan"), help: ArgumentHelp("Run the file's strongSwan ends from PATH: a root filesystem (another release's, e.g. /var/lib/xfrmlab/daemons/trixie-strongswan) or your build's install prefix (an end's own ike-from: wins).", valueName: "PATH"))
    var strongSwan: String?

    @Option(name: .customLong("libreswan"), help: ArgumentHelp("Run the file's libreswan ends from PATH: a root filesystem or an unpacked prefix (an end's own ike-from: wins).", valueName: "PATH"))
    var libreswan: String?

    func validate() throws {
        for (option, path, check) in [("--strongswan", strongSwan, { Installation.strongSwan(at: $0).map(\.description) }),
                                      ("--libreswan", libreswan, { Installation.libreswan(at: $0).map(\.description) })]
            as [(String, String?, (String) -> Result<String, DaemonError>)] {
            guard let path else { continue }
            if case .failure(let e) = check(path) { throw ValidationError("\(option) \(path): \(e.message)") }
        }
    }

    func run() throws {
        global.bootstrap()
        try requireRoot()
        if foreground { StopSignal.install() }
        let topology = try Topology.load(path: topologyPath(file))
        // The daemons are this process's children and go with it: they need --foreground.
        if let t = topology.tunnels.first(where: \.usesIKE), !foreground {
            throw ValidationError("\(t.location?.description ?? topology.name): tunnel \(t.name) is negotiated by IKE daemons, which live only as long as this command: use --foreground")
        }
        let started = Date()
        let lab = try Lab.up(topology)
        let seconds = Date().timeIntervalSince(started)
        if foreground {
            print("run \(lab.run.id): \(topology.name) is up in \(String(format: "%.1f", seconds * 1000)) ms; SIGINT or SIGTERM tears it down")
            var ike: IKETunnels?
            if topology.tunnels.contains(where: \.usesIKE) {
                do {
                    var installations: [IKEDaemonKind: String] = [:]
                    installations[.strongSwan] = strongSwan
                    installations[.libreswan] = libreswan
                    ike = try lab.startIKETunnels(installations: installations)
                } catch {
                    _ = try? lab.down()
                    throw error
                }
                for (t, tunnel) in ike!.tunnels {
                    print("  tunnel \(t.name): \(tunnel), established: \(tunnel.timings)")
                }
            }
            fflush(nil)
            StopSignal.wait()
            do { try ike?.down() } catch { warn("stopping the IKE daemons: \(error)") }
            let report = try lab.down()
            print("down: \(report.map(String.init(describing:)) ?? "done")")
            return
        }
        try lab.detach()
        if lab.tunnels?.holdsSockets == true {
            warn("note: ESP-in-UDP tunnels receive only while their encapsulation sockets are open, i.e. while this process lives; use --foreground to keep them")
        }
        for end in lab.tunnels?.ends ?? [] where !global.json { print("  tunnel \(end)") }
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

/// SIGINT and SIGTERM turned into a byte on a pipe, so the main thread can wait for them
/// whichever thread the kernel delivers them to.
enum StopSignal {
    nonisolated(unsafe) static var pipeFDs: [Int32] = [-1, -1]

    /// Catches the signals from now on (before the lab exists, so none is lost).
    static func install() {
        guard pipe(&pipeFDs) == 0 else { return }
        let handler: @convention(c) (Int32) -> Void = { _ in
            var byte: UInt8 = 1
            _ = write(StopSignal.pipeFDs[1], &byte, 1)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }

    /// Blocks until one of them came.
    static func wait() {
        var byte: UInt8 = 0
        while read(pipeFDs[0], &byte, 1) < 0 && errno == EINTR {}
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }
}
