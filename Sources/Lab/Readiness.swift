import Foundation
import Glibc
import Netlink

extension Lab {
    /// Waits until every administratively up link of these hosts is operationally up: the kernel's
    /// link watch has handled its carrier (and given it its real queue: until then what the device
    /// sends goes to a no-op queue and is dropped). Returns the seconds it waited.
    ///
    /// Bring-up does not wait for it: a few links are handled at once; a thousand bridge ports
    /// take the link watch seconds under TCG, and an ARP request sent before is lost (three lost
    /// ones, and the datagram waiting for the neighbour is dropped with them).
    @discardableResult
    public func waitUntilLinksOperational(hosts: [String], timeout: Double = 60) throws -> Double {
        let started = Date()
        var pending: [String] = []
        repeat {
            pending = []
            for host in hosts {
                let ns = try namespace(host)
                for link in try ns.route.links() where link.isUp && !link.isOperational {
                    pending.append("\(host) \(link.name) (operstate \(link.operationalState.map(String.init) ?? "?"))")
                }
            }
            if pending.isEmpty { return Date().timeIntervalSince(started) }
            usleep(20_000)
        } while Date().timeIntervalSince(started) < timeout
        throw LabError("links still not operational after \(Int(timeout)) s: \(pending.prefix(8).joined(separator: ", "))\(pending.count > 8 ? " and \(pending.count - 8) more" : "")")
    }
}
