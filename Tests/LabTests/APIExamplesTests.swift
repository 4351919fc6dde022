import Daemons
import Foundation
import Lab
import Namespaces
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// Docs/API.md's examples, as written there: they compile with the suite, so the page cannot
/// name an API that is gone. The ones that need no namespace also run.
@Suite("Docs/API.md examples")
struct APIExamplesTests {
    @Test("Netlink: the host's links are read; a change to the host is refused before it is sent")
    func netlink() throws {
        let route = try NetlinkSocket(protocol: NetlinkSocket.route)   // the host's: reads only
        defer { route.close() }
        for link in try route.links() { _ = (link.index, link.name, link.isUp) }
        #expect(throws: HostNamespaceRefused.self) { try route.request(LinkRequest.bridge(namespace: nil, name: "br0")) }
    }

    @Test("Topology: a file loads, and its mistakes come with file, line and column")
    func topology() throws {
        let t = try Topology.load(path: topologyFile("north-east-west"))
        #expect(t.hosts.map(\.name) == ["west", "east", "north", "nic"])
    }

    // The rest need root and namespaces (or a kernel with ESP, or the daemons): compiled only.

    func namespaces() throws {
        let ns = try Namespace.create(name: "xldemo1")
        defer { ns.delete() }
        try ns.check(["ip", "link", "set", "lo", "up"])
        _ = try ns.sysctl("net.ipv4.ip_forward")
    }

    func lab() async throws {
        try await Topology.load(path: "Topologies/north-east-west.yaml").withLab { lab in
            let r = try lab.routeGet(on: "west", to: try lab.address(of: "north"), mark: 0x1)
            print(r)
        }
    }

    func probes() async throws {
        try await Topology.load(path: "Topologies/north-east-west.yaml").withLab { lab in
            let north = try lab.address(of: "north").bytes
            let (trip, trace) = try lab.trace {
                try Echo.udp(from: lab.namespace("west"), to: lab.namespace("north"), destination: north, port: 7200, mark: 0x1)
            }
            let viaEast = PathExpectation("marked request via east")
                .then(.on("west", .postrouting).udp(to: north).mark(0x1).out("eth1"))
                .then(.on("east", .forward).udp(to: north))
                .never(.on("east", .forward).udp(from: north))
            print(trip, viaEast.evaluate(trace).report)
            try trace.writePicture(to: "trace.png", expected: viaEast)
        }
    }

    func xfrm() {
        let esp = Capabilities.capability(.esp)
        print(esp.available, esp.answer)
    }

    func daemons() async throws {
        try await Topology.load(path: "Fixtures/daemons/west-east.yaml").withLab { lab in
            let c = try IKEConfiguration.between(lab, "west", "east", subnets: true, style: .xfrmInterface(id: 7))
            try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c),
                                        DaemonSpec(.libreswan, host: "east", configuration: c.mirrored)) { tunnel in
                print(tunnel.timings)
            }
        }
    }

    func scenarios() throws {
        let report = try ScenarioCatalog.named("connectivity")!.run(topologyPath: "Topologies/north-east-west.yaml")
        print(report)
    }
}
