import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Topology

/// Scenario 4: a daemon's own marked sockets. strongSwan's kernel-libipsec host-to-host set-up
/// routes the peer's own address into the tunnel (table 220) and keeps its IKE and ESP out of it
/// by marking its sockets (`charon.plugins.socket-default.fwmark = 0x42`) and making the rule
/// skip that mark (`charon.plugins.kernel-netlink.fwmark = !0x42`, i.e.
/// `ip rule add not fwmark 0x42 lookup 220`), with rp_filter 2.
///
/// The question: does marked traffic (the daemon's) bypass table 220 both ways, while unmarked
/// traffic takes it? The routing half needs no ESP: the topology (daemon-fwmark) has a second
/// link, tun0, standing in for charon's TUN device. The daemon half (charon itself, with
/// kernel-libipsec) is in Tests/LabTests/DaemonFwmarkTests.swift.
public enum DaemonFwmark {
    public static let name = "daemon-fwmark"
    /// The daemon's socket mark.
    public static let daemonMark: UInt32 = 0x42
    /// The daemon's port (IKE); the marked probe goes there. (Not 4500: datagrams there
    /// without the non-ESP marker read as ESP in UDP.)
    public static let daemonPort: UInt16 = 500
    /// Ordinary traffic between the two hosts.
    public static let trafficPort: UInt16 = 7000

    public static let definition = ScenarioDefinition(
        name: name,
        summary: "a daemon's own sockets marked 0x42 bypass the tunnel's table 220 (rule `not fwmark 0x42 lookup 220`, rp_filter 2); unmarked traffic takes it",
        topology: "daemon-fwmark", checks: checks)

    /// What one family's probes showed.
    public struct Observation: Sendable {
        public var family: IPAddress.Family
        public var unmarkedRoute: RouteInfo
        public var markedRoute: RouteInfo
        public var daemonTrip: RoundTrip
        public var daemonTrace: Trace
        public var trafficTrip: RoundTrip
        public var trafficTrace: Trace
    }

    /// Route queries, then one exchange between marked sockets on both ends (the daemon's) and
    /// one between unmarked sockets, each traced on both hosts.
    public static func observe(_ lab: Lab, family: IPAddress.Family, daemonPort: UInt16 = daemonPort,
                               trafficPort: UInt16 = trafficPort) throws -> Observation {
        let west = try lab.namespace("west"), east = try lab.namespace("east")
        let eastAddress = try lab.address(of: "east", interface: "eth1", family: family)
        let unmarked = try lab.routeGet(on: "west", to: eastAddress)
        let marked = try lab.routeGet(on: "west", to: eastAddress, mark: daemonMark)
        let (daemonTrip, daemonTrace) = try lab.trace(hosts: ["west", "east"]) {
            try Echo.udp(from: west, to: east, destination: eastAddress.bytes, port: daemonPort, mark: daemonMark, replyMark: daemonMark)
        }
        let (trafficTrip, trafficTrace) = try lab.trace(hosts: ["west", "east"]) {
            try Echo.udp(from: west, to: east, destination: eastAddress.bytes, port: trafficPort)
        }
        return Observation(family: family, unmarkedRoute: unmarked, markedRoute: marked, daemonTrip: daemonTrip,
                           daemonTrace: daemonTrace, trafficTrip: trafficTrip, trafficTrace: trafficTrace)
    }

    /// The daemon's exchange: out of eth1 with its mark both ways, never into tun0.
    public static func bypassExpectation(_ lab: Lab, family: IPAddress.Family, port: UInt16 = daemonPort) throws -> PathExpectation {
        let w = try lab.address(of: "west", interface: "eth1", family: family).bytes
        let e = try lab.address(of: "east", interface: "eth1", family: family).bytes
        return PathExpectation("the daemon's marked packets bypass table 220 (\(family))")
            .then(.on("west", .output).udp(from: w, to: e, port: port).mark(daemonMark))
            .then(.on("west", .postrouting).udp(to: e, port: port).mark(daemonMark).out("eth1"))
            .then(.on("east", .input).udp(to: e, port: port).in("eth1"))
            .then(.on("east", .postrouting).udp(from: e, to: w).mark(daemonMark).out("eth1"))
            .then(.on("west", .input).udp(from: e, to: w).in("eth1"))
            .never(.on("west", .postrouting).udp(to: e, port: port).out("tun0"))
            .never(.on("east", .postrouting).udp(from: e, to: w).out("tun0"))
    }

    /// Ordinary traffic: unmarked, into tun0 (the tunnel) both ways, never out of eth1.
    public static func tunnelExpectation(_ lab: Lab, family: IPAddress.Family, port: UInt16 = trafficPort) throws -> PathExpectation {
        let w = try lab.address(of: "west", interface: "eth1", family: family).bytes
        let e = try lab.address(of: "east", interface: "eth1", family: family).bytes
        return PathExpectation("unmarked traffic takes table 220 into the tunnel (\(family))")
            .then(.on("west", .postrouting).udp(from: w, to: e, port: port).mark(0).out("tun0"))
            .then(.on("east", .input).udp(to: e, port: port).in("tun0"))
            .then(.on("east", .postrouting).udp(from: e, to: w).mark(0).out("tun0"))
            // rp_filter 2 lets it in: eth1 is the way back to east, but any route will do.
            .then(.on("west", .input).udp(from: e, to: w).in("tun0"))
            .never(.on("west", .postrouting).udp(to: e, port: port).out("eth1"))
            .never(.on("east", .postrouting).udp(from: e, to: w).out("eth1"))
    }

    public static func checks(_ lab: Lab) throws -> [Check] {
        var out: [Check] = []
        let tunnelGateway: [IPAddress.Family: [UInt8]] = [.ipv4: try lab.address(of: "east", interface: "tun0").bytes,
                                                          .ipv6: try lab.address(of: "east", interface: "tun0", family: .ipv6).bytes]
        for family in [IPAddress.Family.ipv4, .ipv6] {
            let o = try observe(lab, family: family)
            let westAddress = try lab.address(of: "west", interface: "eth1", family: family).bytes
            let name: (Int32) -> String? = { lab.interfaceName(index: $0, on: "west") }
            out.append(Check("\(family): unmarked, route get says table 220 into tun0",
                             passed: o.unmarkedRoute.table == 220 && o.unmarkedRoute.gateway == tunnelGateway[family]
                                 && o.unmarkedRoute.preferredSource == westAddress,
                             detail: o.unmarkedRoute.rendered(linkName: name)))
            out.append(Check("\(family): mark 0x42, route get says table main via eth1",
                             passed: o.markedRoute.table == RouteRequest.mainTable && o.markedRoute.outputInterface.flatMap(name) == "eth1",
                             detail: o.markedRoute.rendered(linkName: name) + " (mark 0x42)"))
            let bypass = try bypassExpectation(lab, family: family).evaluate(o.daemonTrace)
            out.append(Check("\(family): the daemon's marked sockets talk over eth1 both ways", passed: o.daemonTrip.answered && bypass.passed,
                             detail: "\(o.daemonTrip); \(bypass.report)"))
            let tunnel = try tunnelExpectation(lab, family: family).evaluate(o.trafficTrace)
            out.append(Check("\(family): unmarked traffic goes through the tunnel both ways", passed: o.trafficTrip.answered && tunnel.passed,
                             detail: "\(o.trafficTrip); \(tunnel.report)"))
        }
        return out
    }
}
