import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Topology

/// The bench's observation workloads: packets injected and observed per second through NFLOG,
/// and the time from `up` to the first verdict, each beside the same done with the usual tools.
extension Bench {
    /// The nft log rules the rate is measured through: two hooks, one group, as the tracer has them.
    static let rateGroup: UInt16 = 7390
    static let ratePort: UInt16 = 7390

    struct RateRow {
        var tool: String
        var rates: [Double] = []
        var observed: [Int] = []
        var note = ""
    }

    /// On a north-east-west lab: west sends `count` UDP datagrams marked 0x1 to north as fast as it
    /// can while NFLOG rules at output and postrouting log them; the rate is datagrams per second
    /// from the first send until the last of the 2 × count log messages was parsed (mark, hook,
    /// interfaces, headers). Then the same lab through nft + `tcpdump -i nflog:G` + a Python sender.
    func measureTraceRate(_ topology: Topology, count: Int) throws -> [RateRow] {
        let lab = try Lab.up(topology)
        defer { _ = try? lab.down() }
        let west = try lab.namespace("west")
        let north = try lab.address(of: "north").bytes
        var ours = RateRow(tool: "xfrmlab (NFLOG over libmnl)")
        for _ in 0..<repeats {
            let (rate, seen) = try rateOnce(lab, west: west, destination: north, count: count)
            ours.rates.append(rate)
            ours.observed.append(seen)
        }
        ours.note = "\(count) datagrams, logged at output and postrouting (\(2 * count) messages per run); observed (median) \(medianInt(ours.observed))"
        var rows = [ours]
        guard !noPeers else { return rows }
        var peer = RateRow(tool: "nft + tcpdump")
        let script = FileManager.default.fileExists(atPath: topologyPath("../Benchmarks/trace_peer.py")) ? topologyPath("../Benchmarks/trace_peer.py") : "Benchmarks/trace_peer.py"
        for _ in 0..<repeats {
            let r = try Namespaces.Process.execute(["python3", script, "--namespace", west.name, "--destination", "192.1.3.33",
                                                     "--count", String(count), "--group", String(Self.rateGroup + 1),
                                                     "--port", String(Self.ratePort + 1)], timeout: 120)
            guard r.succeeded, let data = r.standardOutput.data(using: .utf8),
                  let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                peer.note = "failed: \(r.standardError.suffix(300))"
                break
            }
            peer.rates.append(json["rate"] as? Double ?? .nan)
            peer.observed.append(json["observed"] as? Int ?? 0)
            peer.tool = "nft + tcpdump \(json["version"] as? String ?? "?")"
        }
        if peer.note.isEmpty { peer.note = "same datagrams and rules; tcpdump -c \(2 * count) on nflog:\(Self.rateGroup + 1) writing pcap to /dev/null; observed (median) \(medianInt(peer.observed))" }
        rows.append(peer)
        return rows
    }

    func rateOnce(_ lab: Lab, west: Namespace, destination: [UInt8], count: Int) throws -> (rate: Double, observed: Int) {
        let rules = """
        table inet xfrmlab_bench {
          chain output { type filter hook output priority mangle + 1; policy accept;
            udp dport \(Self.ratePort) log prefix "west" group \(Self.rateGroup)
          }
          chain postrouting { type filter hook postrouting priority mangle + 1; policy accept;
            udp dport \(Self.ratePort) log prefix "west" group \(Self.rateGroup)
          }
        }

        """
        try west.check(["nft", "-f", "-"], input: rules)
        defer { _ = try? west.execute(["nft", "delete", "table", "inet", "xfrmlab_bench"]) }
        let listener = try NFLogListener(namespace: west, group: Self.rateGroup)
        defer { listener.close() }
        // Enlarge the listener's buffer as tcpdump does (it asks for 2 MiB): a burst outruns any reader.
        try listener.setReceiveBuffer(bytes: 4 << 20)
        let fd = try west.openSocket(domain: AF_INET, type: Int32(SOCK_DGRAM.rawValue), protocol: 0)
        defer { Glibc.close(fd) }
        var mark: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = Self.ratePort.bigEndian
        address.sin_addr.s_addr = destination.withUnsafeBytes { $0.load(as: UInt32.self) }
        let payload = [UInt8](repeating: 0x78, count: 64)
        let target = address
        let started = Date()
        let sender = Thread {
            var a = target
            for _ in 0..<count {
                _ = withUnsafePointer(to: &a) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
            }
        }
        sender.start()
        var seen = 0, last = started
        let deadline = started.addingTimeInterval(30)
        while seen < 2 * count && Date() < deadline {
            do {
                let got = try listener.drain(timeout: 0.5, quiet: 0)
                if got.isEmpty { if Date().timeIntervalSince(last) > 1 { break } else { continue } }
                seen += got.filter { $0.packet?.destinationPort == Self.ratePort && $0.mark == 1 }.count
                last = Date()
            } catch let e as SystemCallError where e.errno == ENOBUFS {
                continue  // messages lost to a full buffer: counted as not observed
            }
        }
        while !sender.isFinished { usleep(1000) }
        return (Double(count) / last.timeIntervalSince(started), seen)
    }

    struct VerdictRow {
        var tool: String
        var ms: [Double] = []
        var note = ""
    }

    /// From the start of `up` until west's first ping of north is answered: xfrmlab (netlink
    /// bring-up, ICMP echo from a socket in west), then the iproute2 script + `ip netns exec ping`.
    func measureFirstVerdict(_ name: String, _ topology: Topology, path: String) throws -> [VerdictRow] {
        var ours = VerdictRow(tool: "xfrmlab")
        let north = try Topology.load(path: path).networks.flatMap(\.members).first { $0.host == "north" }?.addresses.first
        guard let target = north?.address.bytes else { return [] }
        for _ in 0..<repeats {
            let t0 = Date()
            let lab = try Lab.up(topology)
            let trip = try Echo.ping(from: lab.namespace("west"), destination: target, timeout: 3, attempts: 15)
            let ms = Date().timeIntervalSince(t0) * 1000
            _ = try lab.down()
            guard trip.answered else { ours.note = "no answer: \(trip)"; break }
            ours.ms.append(ms)
            usleep(UInt32(settle * 1_000_000))
        }
        var rows = [ours]
        guard !noPeers else { return rows }
        let script = topologyPath("../Benchmarks/peers.py")
        let peers = FileManager.default.fileExists(atPath: script) ? script : "Benchmarks/peers.py"
        let r = try Namespaces.Process.execute(["python3", peers, "--tool", "iproute2", "--prefix", "xlbench\(getpid())v-",
                                                 "--repeat", String(repeats), "--settle", String(settle),
                                                 "--verdict-ping", "west:\(formatAddress(target))", path], timeout: 600)
        guard r.succeeded, let data = r.standardOutput.data(using: .utf8),
              let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            rows.append(VerdictRow(tool: "iproute2 + ping", note: "failed: \(r.standardError.suffix(300))"))
            return rows
        }
        rows.append(VerdictRow(tool: "iproute2 \(json["version"] as? String ?? "?") + ping", ms: json["verdict_ms"] as? [Double] ?? [],
                               note: "`sh up.sh` then `ip netns exec west ping -c1 -i0.2 -w3`, timed together"))
        return rows
    }

    func medianInt(_ v: [Int]) -> Int { v.isEmpty ? 0 : v.sorted()[v.count / 2] }

    func traceReport(rate: [RateRow], verdict: [VerdictRow], count: Int) -> String {
        var out = "\nobservation (north-east-west, median of \(repeats) runs)\n"
        let ours = rate.first.map { median($0.rates) } ?? .nan
        for r in rate {
            let m = median(r.rates)
            out += pad("NFLOG trace rate", 20) + pad(r.tool, 34) + String(format: "%9.0f datagrams/s", m)
                + (r.tool.hasPrefix("xfrmlab") ? "" : String(format: "   (xfrmlab / peer %.1f×)", ours / m)) + "\n"
            if !r.note.isEmpty { out += "    \(r.note)\n" }
        }
        let first = verdict.first.map { median($0.ms) } ?? .nan
        for v in verdict {
            let m = median(v.ms)
            out += pad("up → first verdict", 20) + pad(v.tool, 34) + String(format: "%9.2f ms", m)
                + (v.tool == "xfrmlab" ? "" : String(format: "   (peer / xfrmlab %.1f×)", m / first)) + "\n"
            if !v.note.isEmpty { out += "    \(v.note)\n" }
        }
        return out
    }
}
