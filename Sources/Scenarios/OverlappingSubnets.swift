import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Topology
import Xfrm

/// Scenario 5: overlapping subnets. client1 and client2 both are 10.0.1.10 in 10.0.1.0/24, each
/// behind its own NAT router; the server must reach each as a different host — what KLIPS's
/// SAref bind did, done with today's kernel, by one of two selections:
/// - `marks`: per-peer marked outbound policies and SAs (mark 0x1 → client1, 0x2 → client2),
///   chosen by the sending socket's mark;
/// - `xfrmi`: one xfrm interface per peer (if_id 1, 2), each the only route of 10.0.1.0/24 in a
///   table of its own (101, 102), the table chosen by the socket's mark (rules in the topology)
///   or the interface by binding the socket to it.
///
/// The clients are behind NAT, so ESP goes in UDP (port 4500) and the server's SAs must use each
/// client's public address and port as its NAT shows them. Those are not known from a file: the
/// scenario lets each client send a NAT keepalive from its encapsulation socket, reads the
/// mapping out of the NAT router's conntrack table and builds the server's SAs with it over the
/// XFRM netlink API — as an IKE daemon learns the mapping from its peer's packets. (Hence no
/// `seen-as:` in the Tunnel model: a static file cannot know a NAT's port choice.)
public enum OverlappingSubnets {
    public static let name = "overlapping-subnets"

    public enum Selection: String, Sendable, CaseIterable, CustomStringConvertible {
        case marks
        case xfrmInterfaces = "xfrmi"
        public var description: String { rawValue }
    }

    public static let definition = ScenarioDefinition(
        name: name,
        summary: "the server reaches 10.0.1.10 behind client1 and 10.0.1.10 behind client2 (same subnet, each behind NAT, ESP in UDP) as two hosts, chosen by socket mark: per-peer marked SAs, or per-peer xfrm interfaces",
        topology: "overlapping-clients",
        unmetRequirement: { unmetRequirement(.xfrmInterfaces) },
        checks: { lab in try Selection.allCases.flatMap { try checks(lab, selection: $0) } })

    /// Why this kernel cannot run a selection (the capability and the kernel's answer), or nil.
    public static func unmetRequirement(_ selection: Selection) -> String? {
        var needed: [Capability.Name] = [.esp, .udpEncapsulation, .policyMark]
        if selection == .xfrmInterfaces { needed += [.xfrmInterface, .policyInterfaceID] }
        return needed.map(Capabilities.capability).first { !$0.available }?.skipReason
    }

    static let server: [UInt8] = [198, 51, 100, 1]
    static let serverInner: [UInt8] = [10, 99, 0, 1]
    static let serverSubnet: ([UInt8], Int) = ([10, 99, 0, 0], 24)
    static let clientSubnet: ([UInt8], Int) = ([10, 0, 1, 0], 24)
    /// Both clients' address.
    public static let client: [UInt8] = [10, 0, 1, 10]

    /// One client as the server reaches it.
    public struct Peer: Sendable, CustomStringConvertible {
        public var host: String
        public var nat: String
        /// The socket mark that selects it on the server.
        public var mark: UInt32
        /// `xfrmi`: the if_id and device of its xfrm interface on the server.
        public var interfaceID: UInt32?
        public var device: String?
        /// The client's address and ESP-in-UDP port as the server sees them (the NAT's mapping).
        public var seenAs: (address: [UInt8], port: UInt16)
        /// The server's SPIs towards and from this client.
        public var serverOutboundSPI: UInt32
        public var serverInboundSPI: UInt32
        public var description: String {
            "\(host) (mark 0x\(String(mark, radix: 16))\(device.map { ", \($0) if_id \(interfaceID ?? 0)" } ?? "")) seen as \(formatAddress(seenAs.address)):\(seenAs.port), server spi out 0x\(String(serverOutboundSPI, radix: 16)) in 0x\(String(serverInboundSPI, radix: 16))"
        }
    }

    /// The tunnels as installed, holding the UDP encapsulation sockets (ESP in UDP is received
    /// only while they are open). `close()` before the lab goes down.
    public final class Installed: @unchecked Sendable {
        public let selection: Selection
        public let peers: [Peer]
        private var sockets: [Int32]
        private let lock = NSLock()

        init(selection: Selection, peers: [Peer], sockets: [Int32]) {
            self.selection = selection
            self.peers = peers
            self.sockets = sockets
        }

        public func peer(_ host: String) -> Peer? { peers.first { $0.host == host } }

        public func close() {
            lock.lock()
            defer { lock.unlock() }
            sockets.forEach { Glibc.close($0) }
            sockets = []
        }

        /// Closes the sockets and removes what `install` made: the SAs and policies of the server
        /// and both clients, and the server's xfrm interfaces (their routes go with them), so
        /// the other selection can be installed in the same lab.
        /// Equivalent to `ip xfrm state flush; ip xfrm policy flush` and `ip link del xfrm-clientN`.
        public func remove(from lab: Lab) throws {
            close()
            for host in ["server", "client1", "client2"] {
                let ns = try lab.namespace(host)
                let xfrm = try ns.xfrmSocket()
                defer { xfrm.close() }
                try xfrm.batch([XfrmStateRequest.flush(namespace: ns.name), XfrmPolicyRequest.flush(namespace: ns.name)])
            }
            let server = try lab.namespace("server")
            for device in peers.compactMap(\.device) {
                try server.route.request(LinkRequest.delete(namespace: server.name, name: device))
            }
        }

        deinit { close() }
    }

    /// Installs both clients' tunnels to the server and, on the server, the peer selection.
    /// Equivalent, on client1 (client2 alike), to
    /// `ip xfrm state add src 10.0.1.10 dst 198.51.100.1 proto esp spi S mode tunnel encap espinudp 4500 4500 0.0.0.0 …`
    /// and on the server to `… src 198.51.100.1 dst 198.51.100.11 … encap espinudp 4500 PORT 0.0.0.0 mark 0x1/0xff`
    /// (or `if_id 1`), with the matching policies.
    public static func install(_ lab: Lab, selection: Selection) throws -> Installed {
        let serverNS = try lab.namespace("server")
        var sockets: [Int32] = []
        var peers: [Peer] = []
        do {
            sockets.append(try TunnelInstaller.openEncapsulationSocket(in: serverNS, address: server, port: 4500))
            for (i, (host, nat)) in [("client1", "nat1"), ("client2", "nat2")].enumerated() {
                let n = UInt32(i + 1)
                let ns = try lab.namespace(host)
                let encap = try TunnelInstaller.openEncapsulationSocket(in: ns, address: client, port: 4500)
                sockets.append(encap)
                let seenAs = try natMapping(lab, nat: nat, socket: encap)
                var peer = Peer(host: host, nat: nat, mark: n, interfaceID: selection == .xfrmInterfaces ? n : nil,
                                device: selection == .xfrmInterfaces ? "xfrm-\(host)" : nil, seenAs: seenAs,
                                serverOutboundSPI: 0, serverInboundSPI: 0)
                let (toClient, fromClient) = spis()
                peer.serverOutboundSPI = toClient
                peer.serverInboundSPI = fromClient
                let keyToClient = XfrmKey.random(bits: 160), keyFromClient = XfrmKey.random(bits: 160)
                try installClient(ns, spiIn: toClient, keyIn: keyToClient, spiOut: fromClient, keyOut: keyFromClient)
                try installServer(lab, serverNS, peer: peer, keyOut: keyToClient, keyIn: keyFromClient, reqid: n)
                peers.append(peer)
            }
            if selection == .marks {
                // One inbound policy for both peers: its template names no source, so either
                // client's SA satisfies it (the outbound side is what selects the peer).
                let inbound = XfrmSelector(source: clientSubnet.0, sourcePrefixLength: clientSubnet.1,
                                           destination: serverSubnet.0, destinationPrefixLength: serverSubnet.1)
                let template = XfrmTemplate(source: [0, 0, 0, 0], destination: server)
                let xfrm = try serverNS.xfrmSocket()
                defer { xfrm.close() }
                try xfrm.batch([XfrmDirection.in, .fwd].map {
                    XfrmPolicyRequest.add(namespace: serverNS.name, XfrmPolicy(selector: inbound, direction: $0, templates: [template]))
                })
            }
        } catch {
            sockets.forEach { Glibc.close($0) }
            throw error
        }
        return Installed(selection: selection, peers: peers, sockets: sockets)
    }

    static func spis() -> (UInt32, UInt32) {
        let a = UInt32.random(in: 0x1000...0xffff_fffe)
        var b = a
        while b == a { b = UInt32.random(in: 0x1000...0xffff_fffe) }
        return (a, b)
    }

    /// Sends a NAT keepalive (one 0xff byte, RFC 3948) from the client's encapsulation socket to
    /// the server's port 4500, then reads the mapping the NAT made for it from its conntrack table.
    public static func natMapping(_ lab: Lab, nat: String, socket: Int32) throws -> (address: [UInt8], port: UInt16) {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = UInt16(4500).bigEndian
        withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: server) }
        var keepalive: UInt8 = 0xff
        let sent = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socket, &keepalive, 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard sent == 1 else { throw SystemCallError("sendto", context: "NAT keepalive to \(formatAddress(server)):4500") }
        let natNS = try lab.namespace(nat)
        let deadline = Date().addingTimeInterval(3)
        repeat {
            if let entry = try Conntrack.entries(in: natNS).first(where: {
                $0.original.protocolNumber == 17 && $0.original.source == client && $0.original.sourcePort == 4500
                    && $0.original.destination == server && $0.original.destinationPort == 4500
            }), let reply = entry.reply, let port = reply.destinationPort {
                return (reply.destination, port)
            }
            usleep(10_000)
        } while Date() < deadline
        throw SetupError("\(nat): no conntrack entry for the keepalive \(formatAddress(client)):4500 → \(formatAddress(server)):4500 after 3 s")
    }

    /// A client: policy-based, its subnet to the server's inner subnet, ESP in UDP to the
    /// server's public address.
    static func installClient(_ ns: Namespace, spiIn: UInt32, keyIn: XfrmKey, spiOut: UInt32, keyOut: XfrmKey) throws {
        let encap = XfrmEncapsulation(sourcePort: 4500, destinationPort: 4500)
        let out = XfrmSelector(source: clientSubnet.0, sourcePrefixLength: clientSubnet.1,
                               destination: serverSubnet.0, destinationPrefixLength: serverSubnet.1)
        let inbound = XfrmSelector(source: serverSubnet.0, sourcePrefixLength: serverSubnet.1,
                                   destination: clientSubnet.0, destinationPrefixLength: clientSubnet.1)
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        try xfrm.batch([
            XfrmStateRequest.add(namespace: ns.name, XfrmState(source: client, destination: server, spi: spiOut, reqid: 1,
                                                               algorithms: [.aesGCM(key: keyOut)], encapsulation: encap, replayWindow: 32)),
            XfrmStateRequest.add(namespace: ns.name, XfrmState(source: server, destination: client, spi: spiIn, reqid: 1,
                                                               algorithms: [.aesGCM(key: keyIn)], encapsulation: encap, replayWindow: 32)),
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: out, direction: .out,
                                                                 templates: [XfrmTemplate(source: client, destination: server, reqid: 1)])),
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: inbound, direction: .in,
                                                                 templates: [XfrmTemplate(source: server, destination: client, reqid: 1)])),
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: inbound, direction: .fwd,
                                                                 templates: [XfrmTemplate(source: server, destination: client, reqid: 1)])),
        ])
    }

    /// The server's end towards one peer: SAs to and from its NAT mapping, an outbound policy
    /// with the peer's mark (`marks`) or if_id (`xfrmi`, with the device, its inbound policies
    /// and its table's route).
    static func installServer(_ lab: Lab, _ ns: Namespace, peer: Peer, keyOut: XfrmKey, keyIn: XfrmKey, reqid: UInt32) throws {
        let mark = peer.interfaceID == nil ? XfrmMark(peer.mark, mask: 0xff) : nil
        let out = XfrmSelector(source: serverSubnet.0, sourcePrefixLength: serverSubnet.1,
                               destination: clientSubnet.0, destinationPrefixLength: clientSubnet.1)
        let inbound = XfrmSelector(source: clientSubnet.0, sourcePrefixLength: clientSubnet.1,
                                   destination: serverSubnet.0, destinationPrefixLength: serverSubnet.1)
        var requests: [Request] = [
            XfrmStateRequest.add(namespace: ns.name, XfrmState(
                source: server, destination: peer.seenAs.address, spi: peer.serverOutboundSPI, reqid: reqid, algorithms: [.aesGCM(key: keyOut)],
                encapsulation: XfrmEncapsulation(sourcePort: 4500, destinationPort: peer.seenAs.port), mark: mark,
                interfaceID: peer.interfaceID, replayWindow: 32)),
            XfrmStateRequest.add(namespace: ns.name, XfrmState(
                source: peer.seenAs.address, destination: server, spi: peer.serverInboundSPI, reqid: reqid, algorithms: [.aesGCM(key: keyIn)],
                encapsulation: XfrmEncapsulation(sourcePort: peer.seenAs.port, destinationPort: 4500),
                interfaceID: peer.interfaceID, replayWindow: 32)),
            XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(
                selector: out, direction: .out, mark: mark, interfaceID: peer.interfaceID,
                templates: [XfrmTemplate(source: server, destination: peer.seenAs.address, reqid: reqid)])),
        ]
        if let ifID = peer.interfaceID, let device = peer.device {
            let lower = try lab.index(of: "eth0", on: "server")
            try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: device, interfaceID: ifID, link: lower, linkName: "eth0"))
            guard let link = try ns.route.link(named: device, namespace: ns.name) else {
                throw SetupError("server: \(device) is missing after it was made")
            }
            try ns.route.request(RouteRequest.add(namespace: ns.name, destination: clientSubnet.0, prefixLength: clientSubnet.1,
                                                  outputInterface: link.index, interfaceName: device, table: 100 + ifID))
            for direction in [XfrmDirection.in, .fwd] {
                requests.append(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(
                    selector: inbound, direction: direction, interfaceID: ifID,
                    templates: [XfrmTemplate(source: peer.seenAs.address, destination: server, reqid: reqid)])))
            }
        }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        try xfrm.batch(requests)
    }

    /// What the server reaching one peer looked like.
    public struct Observation: Sendable {
        public var peer: Peer
        public var how: String
        public var trip: RoundTrip
        public var trace: Trace
    }

    /// A UDP exchange from the server's inner address to 10.0.1.10, answered by the peer's
    /// namespace (its name is the answer), selected by the peer's mark or, with `bindDevice`,
    /// by binding the socket to the peer's xfrm interface. Traced on every host.
    public static func reach(_ lab: Lab, _ peer: Peer, port: UInt16, by selector: Selector) throws -> Observation {
        var mark: UInt32?, device: String?, how = "unmarked socket"
        switch selector {
        case .mark(let m):
            mark = m
            how = "socket mark 0x\(String(m, radix: 16))"
        case .device:
            device = peer.device
            how = "socket bound to \(peer.device ?? "no device")"
        case .nothing:
            break
        }
        let (trip, trace) = try lab.trace(hosts: ["server", "nat1", "nat2", "client1", "client2"]) {
            try Echo.udp(from: lab.namespace("server"), to: lab.namespace(peer.host), destination: client, port: port,
                         source: serverInner, mark: mark, device: device, timeout: 2)
        }
        return Observation(peer: peer, how: how, trip: trip, trace: trace)
    }

    /// How the server's socket picks a peer.
    public enum Selector: Sendable {
        /// `SO_MARK`.
        case mark(UInt32)
        /// `SO_BINDTODEVICE` to the peer's xfrm interface.
        case device
        case nothing
    }

    /// The path to one peer and back: out of the server as ESP in UDP with that peer's SPI to
    /// its NAT, in through its NAT, decrypted at that client, answered the same way; the other
    /// client never sees it, and no NAT sees it in clear.
    public static func expectation(_ installed: Installed, to host: String, port: UInt16, mark: UInt32?) -> PathExpectation {
        guard let peer = installed.peer(host) else { return PathExpectation("no peer \(host)").then(.on(host)) }
        let other = host == "client1" ? "client2" : "client1"
        var e = PathExpectation("the server reaches 10.0.1.10 behind \(host) (\(installed.selection))")
        var request = HopPattern.on("server", .output).udp(from: serverInner, to: client, port: port)
        if let mark { request = request.mark(mark, mask: 0xff) }
        e = e.then(request)
        if let device = peer.device { e = e.then(.on("server", .postrouting).udp(to: client, port: port).out(device)) }
        return e
            .then(.on("server", .postrouting).esp(spi: peer.serverOutboundSPI, from: server, to: peer.seenAs.address).out("eth0"))
            .then(.on(peer.nat, .forward).esp(spi: peer.serverOutboundSPI, to: client).in("wan").out("lan"))
            .then(.on(host, .input).udp(from: serverInner, to: client, port: port))
            .then(.on(host, .postrouting).esp(from: client, to: server).out("eth0"))
            .then(.on(peer.nat, .forward).esp(to: server).in("lan").out("wan"))
            .then(.on("server", .input).udp(from: client, to: serverInner))
            .never(.on(other, .input).udp(to: client, port: port))
            .never(.on("nat1", .forward).udp(to: client, port: port))
            .never(.on("nat2", .forward).udp(to: client, port: port))
    }

    public static func checks(_ lab: Lab, selection: Selection) throws -> [Check] {
        if let reason = unmetRequirement(selection) {
            return [Check("\(selection): not run", passed: false, detail: reason)]
        }
        let installed = try install(lab, selection: selection)
        defer { try? installed.remove(from: lab) }
        var out: [Check] = [Check("\(selection): NAT mappings learned from keepalives", passed: installed.peers.count == 2,
                                  detail: installed.peers.map(\.description).joined(separator: "; "))]
        var port: UInt16 = selection == .marks ? 7500 : 7600
        for peer in installed.peers {
            port += 1
            let o = try reach(lab, peer, port: port, by: .mark(peer.mark))
            let verdict = expectation(installed, to: peer.host, port: port, mark: peer.mark).evaluate(o.trace)
            let name = try lab.namespace(peer.host).name
            out.append(Check("\(selection): \(o.how) reaches 10.0.1.10 behind \(peer.host)",
                             passed: o.trip.answered && o.trip.reply == name && verdict.passed,
                             detail: "\(o.trip); \(verdict.report)"))
            if selection == .xfrmInterfaces {
                port += 1
                let bound = try reach(lab, peer, port: port, by: .device)
                let boundVerdict = expectation(installed, to: peer.host, port: port, mark: nil).evaluate(bound.trace)
                out.append(Check("\(selection): \(bound.how) reaches 10.0.1.10 behind \(peer.host)",
                                 passed: bound.trip.answered && bound.trip.reply == name && boundVerdict.passed,
                                 detail: "\(bound.trip); \(boundVerdict.report)"))
            }
        }
        // Unmarked and unbound, nothing selects a peer: no policy, no table routes 10.0.1.0/24.
        port += 1
        let plain = try reach(lab, installed.peers[0], port: port, by: .nothing)
        let reached = plain.trace.hops.contains { ["client1", "client2"].contains($0.host) && $0.packet.destinationPort == port }
        out.append(Check("\(selection): an unmarked socket reaches neither client", passed: !plain.trip.delivered && !reached,
                         detail: "\(plain.trip)"))
        return out
    }
}

extension OverlappingSubnets {
    /// The scenario could not set itself up.
    public struct SetupError: Error, CustomStringConvertible, Sendable {
        public var message: String
        public init(_ message: String) { self.message = message }
        public var description: String { message }
    }
}
