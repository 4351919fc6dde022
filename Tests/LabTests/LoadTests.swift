import Foundation
import Lab
import Probes
import Testing
import XfrmLabTesting
import Topology

@Suite("Large topologies", .tags(.privileged), .needsNamespaces)
struct LoadTests {
    @Test("1,000 hosts on one bridge come up, carry traffic end to end, and are all freed")
    func thousandHosts() async throws {
        let topology = Topology.star(hosts: 1000)
        let started = Date()
        let lab = try Lab.up(topology, options: LabOptions(releaseTimeout: 120))
        let upSeconds = Date().timeIntervalSince(started)
        do {
            #expect(lab.namespaces.count == 1001)
            let hub = try lab.snapshot("hub")
            #expect(hub.links.filter { $0.master != nil }.count == 1000, "bridge ports")
            // One cause of datagrams lost on 6.1 under TCG: traffic before the kernel's link watch
            // had handled the hub's thousand ports, whose ARP went to a no-op queue. (The other,
            // the full input backlog, is handled at the trips below.)
            let waited = try lab.waitUntilLinksOperational(hosts: ["hub", "h1", "h2", "h500", "h1000"], timeout: 120)
            print("1000 hosts: every link operational \(String(format: "%.2f", waited)) s after up returned")
            for (from, to) in [("h1", "h1000"), ("h500", "hub"), ("h1000", "h2")] {
                // Every multicast the thousand new interfaces send (MLD reports, router
                // solicitations) is flooded to 999 ports, each copy into one CPU's backlog
                // (net.core.netdev_max_backlog, 1000, not per namespace): under TCG an ARP request
                // can be dropped there for seconds after up. So the datagram is sent again each
                // second, as a UDP application retries, for up to 10 s; the backlog's drops in
                // the meantime are evidence when it still fails.
                let dropsBefore = backlogDrops()
                let trip = try Echo.udp(from: lab.namespace(from), to: lab.namespace(to),
                                        destination: lab.address(of: to).bytes, port: 7400, timeout: 10, resendEvery: 1)
                let drops = backlogDrops().map { after in dropsBefore.map { after - $0 } } ?? nil
                let evidence = "\(trip); backlog drops meanwhile (/proc/net/softnet_stat): \(drops.map(String.init) ?? "unreadable")"
                print("1000 hosts: \(evidence)")
                #expect(trip.answered, "\(evidence)")
            }
        } catch {
            _ = try? lab.down()
            throw error
        }
        let report = try #require(try lab.down())
        #expect(report.complete, "\(report)")
        #expect(report.unhashed == 1001)
        print("1000 hosts: up \(String(format: "%.2f", upSeconds)) s, \(report)")
    }
}

/// Packets every CPU's input backlog dropped since boot (the second column of
/// /proc/net/softnet_stat, hexadecimal, a line per CPU): read only, for the evidence.
private func backlogDrops() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/net/softnet_stat", encoding: .utf8) else { return nil }
    return text.split(separator: "\n").reduce(0) { sum, line in
        let columns = line.split(separator: " ")
        return sum + (columns.count > 1 ? Int(columns[1], radix: 16) ?? 0 : 0)
    }
}
