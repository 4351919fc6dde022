import ArgumentParser
import Foundation
import Glibc
import Lab
import Namespaces
import Topology

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench",
        abstract: "Bring topologies up and down side by side with an iproute2 script and pyroute2 doing the same work, and print the ratios.")

    @OptionGroup var global: GlobalOptions

    @Option(name: .customLong("repeat"), help: "Repeats per tool and topology (the median is reported).")
    var repeats: Int = 5

    @Option(help: "Hosts in the star topology.")
    var star: Int = 200

    @Option(help: "Topology files to measure besides the star.")
    var topology: [String] = ["north-east-west"]

    @Option(help: "Seconds to let the kernel finish freeing namespaces between runs (for every tool alike).")
    var settle: Double = 1.0

    @Flag(help: "Only this harness (no peers).")
    var noPeers = false

    @Option(help: "Datagrams per run for the NFLOG trace rate (0: skip the observation workloads).")
    var tracePackets: Int = 5000

    struct Row {
        var workload: String
        var tool: String
        var up: [Double]
        var down: [Double]
        var note: String = ""
    }

    func run() throws {
        global.bootstrap()
        try requireRoot()
        var rows: [Row] = []
        var workloads: [(name: String, topology: Topology, peerArgs: [String])] = []
        for t in topology {
            let path = topologyPath(t)
            let loaded = try Topology.load(path: path)
            workloads.append((loaded.name, loaded, [path]))
        }
        workloads.append(("star-\(star)", Topology.star(hosts: star), ["--star", String(star)]))

        for w in workloads {
            progress("\(w.name): xfrmlab ×\(repeats)")
            rows.append(try measureOurs(w.name, w.topology))
            // A command as a user runs it, start to exit: as the iproute2 script is timed.
            if let file = w.peerArgs.first, !file.hasPrefix("--") {
                progress("\(w.name): xfrmlab up as a process ×\(repeats)")
                rows.append(try measureProcess(w.name, file: file))
            }
            guard !noPeers else { continue }
            for tool in ["iproute2", "pyroute2"] {
                progress("\(w.name): \(tool) ×\(repeats)")
                rows.append(try measurePeer(w.name, tool: tool, args: w.peerArgs))
            }
        }
        print(report(rows))

        // Observation: NFLOG trace rate and up → first verdict, on north-east-west.
        guard tracePackets > 0, let w = workloads.first(where: { $0.name == "north-east-west" }) else { return }
        progress("north-east-west: NFLOG trace rate ×\(repeats)")
        let rate = try measureTraceRate(w.topology, count: tracePackets)
        progress("north-east-west: up → first verdict ×\(repeats)")
        let verdict = try measureFirstVerdict(w.name, w.topology, path: w.peerArgs[0])
        print(traceReport(rate: rate, verdict: verdict, count: tracePackets))
    }

    func progress(_ s: String) { warn("bench: " + s) }

    /// Up is everything until the lab is usable; down is the deletes (the kernel frees the
    /// namespaces afterwards, as for the peers). The kernel's cleanup is then awaited outside
    /// the timing, and its time reported beside.
    func measureOurs(_ name: String, _ topology: Topology) throws -> Row {
        var row = Row(workload: name, tool: "xfrmlab", up: [], down: [])
        var release: [Double] = []
        for _ in 0..<repeats {
            let t0 = Date()
            let lab = try Lab.up(topology, options: LabOptions(verifyRelease: true, releaseTimeout: 120))
            row.up.append(Date().timeIntervalSince(t0) * 1000)
            let report = try lab.down()
            // The peers time their deletes; the kernel frees namespaces after that. Report the
            // same (our deletes) and, beside it, how long until the kernel confirmed the release.
            row.down.append((report?.deleteSeconds ?? 0) * 1000)
            release.append((report?.seconds ?? 0) * 1000)
            usleep(UInt32(settle * 1_000_000))
        }
        row.note = String(format: "the kernel confirmed every namespace freed %.0f ms (median) after down began", median(release))
        return row
    }

    /// `xfrmlab up FILE` run as its own process (this very binary), timed from fork to exit as
    /// the peers' `sh UP.sh` is; `xfrmlab down` afterwards is timed the same way.
    func measureProcess(_ name: String, file: String) throws -> Row {
        let me = selfPath()
        var row = Row(workload: name, tool: "xfrmlab process", up: [], down: [])
        for _ in 0..<repeats {
            let t0 = Date()
            let up = try Namespaces.Process.execute([me, "up", file, "--json"], timeout: 120)
            row.up.append(Date().timeIntervalSince(t0) * 1000)
            guard up.succeeded, let json = try? JSONSerialization.jsonObject(with: Data(up.standardOutput.utf8)) as? [String: Any],
                  let id = json["run"] as? String else {
                throw ValidationError("xfrmlab up \(file) as a process failed: \(up)")
            }
            let t1 = Date()
            let down = try Namespaces.Process.execute([me, "down", "--run", id], timeout: 120)
            row.down.append(Date().timeIntervalSince(t1) * 1000)
            guard down.succeeded else { throw ValidationError("xfrmlab down --run \(id) failed: \(down)") }
            usleep(UInt32(settle * 1_000_000))
        }
        row.note = "the whole command, start to exit (down waits until the kernel freed the namespaces; the peers' down does not)"
        return row
    }

    func measurePeer(_ name: String, tool: String, args: [String]) throws -> Row {
        let script = topologyPath("../Benchmarks/peers.py")
        let peers = FileManager.default.fileExists(atPath: script) ? script : "Benchmarks/peers.py"
        let prefix = "xlbench\(getpid())-"
        let r = try Namespaces.Process.execute(["python3", peers, "--tool", tool, "--prefix", prefix, "--repeat", String(repeats),
                                                 "--settle", String(settle)] + args, timeout: 3600)
        guard r.succeeded, let data = r.standardOutput.data(using: .utf8),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            return Row(workload: name, tool: tool, up: [], down: [], note: "failed: \(r.standardError.suffix(300))")
        }
        let version = json["version"] as? String ?? "?"
        return Row(workload: name, tool: "\(tool) \(version)", up: json["up_ms"] as? [Double] ?? [],
                   down: json["down_ms"] as? [Double] ?? [], note: "")
    }

    func median(_ v: [Double]) -> Double {
        guard !v.isEmpty else { return .nan }
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }

    func report(_ rows: [Row]) -> String {
        var out = "\nmedian of \(repeats) runs, milliseconds (kernel \(kernelRelease()), \(ProcessInfo.processInfo.activeProcessorCount) cores)\n"
        out += "workload            tool              up ms    down ms   up ratio, peer / xfrmlab: library (process)\n"
        for workload in Set(rows.map(\.workload)).sorted() {
            let group = rows.filter { $0.workload == workload }
            let ours = group.first { $0.tool == "xfrmlab" }.map { median($0.up) } ?? .nan
            let process = group.first { $0.tool == "xfrmlab process" }.map { median($0.up) }
            for r in group {
                let up = median(r.up), down = median(r.down)
                let ratio = r.tool.hasPrefix("xfrmlab") ? ""
                    : String(format: "%.1f×", up / ours) + (process.map { String(format: " (%.1f×)", up / $0) } ?? "")
                out += pad(workload, 20) + pad(r.tool, 18) + pad(String(format: "%8.2f", up), 9) + pad(String(format: "%10.2f", down), 13) + ratio + "\n"
                if !r.note.isEmpty { out += "    \(r.note)\n" }
            }
        }
        return out
    }
}
