import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Topology

/// The first job on north/east/west: the topology the kernel holds is the one in the file,
/// west reaches north through nic (both families, request and answer), and a fwmark rule in
/// west sends marked traffic through table 50, i.e. through east, while unmarked traffic
/// does not touch east.
public enum Connectivity {
    public static let name = "connectivity"

    public static let definition = ScenarioDefinition(
        name: name,
        summary: "west reaches north through nic, and a fwmark rule sends marked traffic through table 50 (east)",
        topology: "north-east-west", checks: checks)

    public static func checks(_ lab: Lab) throws -> [Check] {
        var out: [Check] = []
        let mismatches = try lab.verify()
        out.append(Check("kernel state matches the file", passed: mismatches.isEmpty,
                         detail: mismatches.isEmpty ? "links, addresses, routes and rules of \(lab.hostNames.count) hosts read back over netlink" : mismatches.joined(separator: "; ")))
        let west = try lab.namespace("west"), north = try lab.namespace("north"), east = try lab.namespace("east")
        let north4 = try lab.address(of: "north", interface: "eth1"), north6 = try lab.address(of: "north", interface: "eth1", family: .ipv6)
        let west4 = try lab.address(of: "west", interface: "eth1")

        let udp = try Echo.udp(from: west, to: north, destination: north4.bytes)
        out.append(Check("west reaches north over UDP through nic", passed: udp.delivered && udp.answered
                         && udp.seenSource?.hasPrefix(west4.description + ":") == true, detail: udp.description))
        let ping4 = try Echo.ping(from: west, destination: north4.bytes)
        out.append(Check("west pings north (IPv4)", passed: ping4.answered, detail: ping4.description))
        let ping6 = try Echo.ping(from: west, destination: north6.bytes)
        out.append(Check("west pings north (IPv6)", passed: ping6.answered, detail: ping6.description))

        let plain = try lab.routeGet(on: "west", to: north4)
        let marked = try lab.routeGet(on: "west", to: north4, mark: 0x1)
        let nic = try lab.address(of: "nic", interface: "eth1"), eastAddress = try lab.address(of: "east", interface: "eth1")
        out.append(Check("unmarked: route get says table main via nic", passed: plain.table == 254 && plain.gateway == nic.bytes,
                         detail: "ip -n \(west.name) route get \(north4): \(plain.rendered { lab.interfaceName(index: $0, on: "west") })"))
        out.append(Check("mark 0x1: route get says table 50 via east", passed: marked.table == 50 && marked.gateway == eastAddress.bytes,
                         detail: "ip -n \(west.name) route get \(north4) mark 0x1: \(marked.rendered { lab.interfaceName(index: $0, on: "west") })"))

        // The same two packets for real: only the marked one is forwarded by east.
        let before = try SNMPCounters.read(east)["Ip.ForwDatagrams"]
        let unmarkedTrip = try Echo.udp(from: west, to: north, destination: north4.bytes, port: 7001)
        let middle = try SNMPCounters.read(east)["Ip.ForwDatagrams"]
        let markedTrip = try Echo.udp(from: west, to: north, destination: north4.bytes, port: 7002, mark: 0x1)
        let after = try SNMPCounters.read(east)["Ip.ForwDatagrams"]
        out.append(Check("unmarked UDP does not pass east", passed: unmarkedTrip.delivered && middle - before == 0,
                         detail: "east Ip.ForwDatagrams +\(middle - before); \(unmarkedTrip)"))
        out.append(Check("marked UDP (0x1) is forwarded by east", passed: markedTrip.delivered && after - middle == 1,
                         detail: "east Ip.ForwDatagrams +\(after - middle); \(markedTrip)"))
        return out
    }
}
