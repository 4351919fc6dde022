import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Scenarios
import Testing
import XfrmLabTesting
import Topology

@Suite("Topologies come up as the files say", .tags(.privileged), .needsNamespaces)
struct TopologyBuildTests {
    @Test("north/east/west: the kernel holds every link, address, route and rule of the file")
    func northEastWestReadBack() async throws {
        let topology = try Topology.load(path: topologyFile("north-east-west"))
        try await topology.withLab { lab in
            #expect(try lab.verify() == [])
            let nic = try lab.snapshot("nic")
            let bridge = try #require(nic.links.first { $0.name == "eth1" })
            #expect(bridge.kind == "bridge")
            let ports = nic.links.filter { $0.master == bridge.index }
            #expect(ports.count == 2)
            let west = try lab.snapshot("west")
            #expect(west.rules.contains { $0.priority == 100 && $0.fwmark == 1 && $0.fwmask == 0xff && $0.table == 50 })
            #expect(west.routes.contains { $0.table == 50 && $0.destinationLength == 0 && $0.gateway == [192, 1, 2, 23] })
            #expect(try lab.namespace("east").sysctl("net.ipv4.ip_forward") == "1")
            #expect(try lab.namespace("west").sysctl("net.ipv4.ip_forward") == "0")
        }
    }

    @Test("north/east/west: west reaches north through nic, and mark 0x1 takes table 50 through east")
    func northEastWestTraffic() async throws {
        let topology = try Topology.load(path: topologyFile("north-east-west"))
        try await topology.withLab { lab in
            for check in try Connectivity.checks(lab) {
                #expect(check.passed, "\(check)")
            }
        }
    }

    @Test("client1/client2/server: both clients share 10.0.1.10 and reach the server as different NAT addresses")
    func overlappingClients() async throws {
        let topology = try Topology.load(path: topologyFile("client1-client2-server"))
        try await topology.withLab { lab in
            #expect(try lab.verify() == [])
            let server = try lab.namespace("server")
            let serverAddress = try lab.address(of: "server")
            #expect(try lab.address(of: "client1") == lab.address(of: "client2"))
            let one = try Echo.udp(from: lab.namespace("client1"), to: server, destination: serverAddress.bytes, port: 7100)
            let two = try Echo.udp(from: lab.namespace("client2"), to: server, destination: serverAddress.bytes, port: 7101)
            #expect(one.answered && two.answered, "\(one); \(two)")
            #expect(one.seenSource?.hasPrefix("198.51.100.11:") == true, "\(one)")
            #expect(two.seenSource?.hasPrefix("198.51.100.12:") == true, "\(two)")
        }
    }

    @Test("macvlan networks: members' macvlans on a bridge in a switch namespace reach each other")
    func macvlanNetworks() async throws {
        let yaml = """
        name: macvlans
        hosts:
          a: {}
          b: {}
          c: {}
          gw: {}
        networks:
          - name: shared
            kind: macvlan
            subnets: [10.77.0.0/24, "2001:db8:77::/64"]
            members:
              - { host: a, interface: mv0, addresses: [10.77.0.1, "2001:db8:77::1"] }
              - { host: b, interface: mv0, addresses: [10.77.0.2, "2001:db8:77::2"] }
          - name: other
            kind: macvlan
            subnets: [10.78.0.0/24]
            members:
              - { host: gw, interface: mv9, addresses: [10.78.0.254] }
              - { host: c, interface: mv1, addresses: [10.78.0.3] }
        """
        try await Topology.parse(yaml: yaml, file: "macvlans.yaml").withLab { lab in
            #expect(try lab.verify() == [])
            #expect(try lab.snapshot("a").links.first { $0.name == "mv0" }?.kind == "macvlan")
            #expect(lab.namespaces["_sw-shared"] != nil)
            let v4 = try Echo.udp(from: lab.namespace("a"), to: lab.namespace("b"), destination: [10, 77, 0, 2])
            #expect(v4.answered, "\(v4)")
            let v6 = try Echo.ping(from: lab.namespace("b"), destination: lab.address(of: "a", family: .ipv6).bytes)
            #expect(v6.answered, "\(v6)")
            // The round trip of the request answered, not zero (`make run` printed 0.00 ms once).
            #expect(v6.seconds > 0 && v6.seconds < 1, "\(v6)")
            let other = try Echo.ping(from: lab.namespace("c"), destination: [10, 78, 0, 254])
            #expect(other.answered, "\(other)")
            let across = try Echo.ping(from: lab.namespace("c"), destination: [10, 77, 0, 1])
            #expect(!across.answered, "two macvlan networks must not be joined: \(across)")
        }
    }

    @Test("a route the kernel refuses names the file line and leaves nothing behind")
    func kernelRefusalRollsBack() async throws {
        // 203.0.113.1 is on no subnet of west: the kernel refuses the gateway.
        // A name of this process's own: another suite may run the same test at the same time.
        let name = "refused-\(getpid())"
        let yaml = """
        name: \(name)
        hosts:
          west:
            routes:
              - { to: 10.9.0.0/16, via: 203.0.113.1 }
          east: {}
        networks:
          - name: wire
            subnets: [192.0.2.0/24]
            members:
              - { host: west, interface: eth0, addresses: [192.0.2.1] }
              - { host: east, interface: eth0, addresses: [192.0.2.2] }
        """
        let topology = try Topology.parse(yaml: yaml, file: "refused.yaml")
        let error = try #require(throws: NetlinkError.self) { try Lab.up(topology) }
        #expect(error.errno == ENETUNREACH)
        #expect(error.origin?.hasPrefix("refused.yaml:5:") == true, "\(error)")
        #expect(error.request.contains("route add 10.9.0.0/16 via 203.0.113.1"))
        // Other tests run in parallel: look for this topology's run only.
        let left = Run.all().filter { $0.state?.topology == name }
        #expect(left.isEmpty, "a run was left: \(left.map(\.id)) \(left.flatMap(\.namespaces))")
    }

    @Test("two labs of the same topology run side by side without colliding")
    func sideBySide() async throws {
        let topology = try Topology.load(path: topologyFile("north-east-west"))
        try await topology.withLab { a in
            try await topology.withLab { b in
                #expect(a.run.id != b.run.id)
                #expect(try a.verify() == [])
                #expect(try b.verify() == [])
                let trip = try Echo.udp(from: b.namespace("west"), to: b.namespace("north"),
                                        destination: b.address(of: "north").bytes)
                #expect(trip.answered, "\(trip)")
            }
        }
    }

    @Test("after down the kernel has freed every namespace and the run's files are gone")
    func teardownIsComplete() throws {
        let lab = try Lab.up(try Topology.load(path: topologyFile("north-east-west")))
        let prefix = lab.run.prefix
        #expect(namespacesLeft(prefix: prefix).count == 4)
        let report = try #require(try lab.down())
        #expect(report.complete, "\(report)")
        #expect(report.unhashed == 4)
        #expect(namespacesLeft(prefix: prefix).isEmpty)
        #expect(!FileManager.default.fileExists(atPath: Run.stateDirectory + "/\(lab.run.id).json"))
    }
}

/// A host whose network namespace an unprivileged user's own user namespace owns.
@Suite("User-namespace hosts", .tags(.privileged), .needsNamespaces, .requires(.userNamespaces))
struct UserNamespaceHostTests {
    static let yaml = """
        name: userns
        hosts:
          user:
            user-namespace: true
          plain: {}
        networks:
          - name: n
            subnets: [10.9.0.0/24]
            members:
              - { host: user, interface: eth0, addresses: [10.9.0.1] }
              - { host: plain, interface: eth0, addresses: [10.9.0.2] }
        """

    @Test("its processes and sockets act as the owner's root: mapped to nobody, administering its own namespace, not another")
    func actsAsOwner() async throws {
        try await Topology.parse(yaml: Self.yaml, file: "userns.yaml").withLab { lab in
            let user = try lab.namespace("user"), plain = try lab.namespace("plain")
            #expect(user.ownedByUserNamespace && !plain.ownedByUserNamespace)
            // The harness built it like any host: the address is there, and reachable.
            #expect(try plain.execute(["ping", "-c", "1", "-W", "2", "10.9.0.1"]).succeeded)
            // A process as the owner: root inside, nobody outside.
            let id = try user.executeAsOwner(["cat", "/proc/self/uid_map", "/proc/self/status"])
            #expect(id.succeeded && id.standardOutput.contains("0      65534          1"), "\(id)")
            #expect(id.standardOutput.split(separator: "\n").contains { $0.hasPrefix("Uid:") && $0.contains("\t0\t0\t0\t0") }, "\(id)")
            // The owner administers its own namespace with the same typed requests ...
            let own = try user.ownerNetlinkSocket(protocol: NetlinkSocket.route)
            defer { own.close() }
            try own.request(LinkRequest.bridge(namespace: user.name, name: "br-own"))
            #expect(try user.route.link(named: "br-own") != nil)
            // ... and a plain host's namespace is not the owner's to open sockets in by default.
            let refused = #expect(throws: SystemCallError.self) { try plain.ownerNetlinkSocket(protocol: NetlinkSocket.route) }
            #expect(refused?.description.contains("machine's user namespace") == true, "\(String(describing: refused))")
        }
    }
}
