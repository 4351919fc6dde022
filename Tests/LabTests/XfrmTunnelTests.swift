import CNetlink
import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// Tunnels from topology files carry traffic through ESP: seen as an answer, as SA counters that
/// move, and as ESP with the expected SPI on east's wire. Needs a kernel with ESP (a VM).
@Suite("IPsec tunnels between west's and east's subnets really use ESP", .tags(.privileged, .vm), .needsNamespaces, .serialized)
struct XfrmTunnelTests {
    enum Family: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case ipv4, ipv6
        var west: [UInt8] { parseAddress(self == .ipv4 ? "192.0.1.254" : "2001:db8:0:1::254")! }
        var east: [UInt8] { parseAddress(self == .ipv4 ? "192.0.2.254" : "2001:db8:0:2::254")! }
        var testDescription: String { rawValue }
    }

    /// What one UDP exchange through the tunnel showed.
    struct Observation: CustomStringConvertible {
        var trip: RoundTrip
        var inbound: CapturedPacket?
        var outbound: CapturedPacket?
        var westOut: XfrmState?
        var eastIn: XfrmState?
        var wire: [CapturedPacket]
        var description: String {
            "\(trip); on east's eth1: \(wire.map(\.description).joined(separator: "; ")); west out SA \(westOut?.counters.description ?? "missing"); east in SA \(eastIn?.counters.description ?? "missing")"
        }
    }

    /// The SA on `host` with `spi`, read back from the kernel.
    static func state(_ lab: Lab, _ host: String, spi: UInt32) throws -> XfrmState? {
        let xfrm = try lab.namespace(host).xfrmSocket()
        defer { xfrm.close() }
        return try xfrm.xfrmStates().first { $0.spi == spi }
    }

    /// Sends UDP from west's subnet address to east's, answered by east, while capturing on
    /// east's public interface.
    static func exchange(_ lab: Lab, _ family: Family, mark: UInt32? = nil, replyMark: UInt32? = nil, port: UInt16) throws -> Observation {
        let tunnel = try #require(lab.tunnels?.end("west-east", on: "west"))
        let east = try #require(lab.tunnels?.end("west-east", on: "east"))
        let capture = try PacketCapture(namespace: lab.namespace("east"), interface: "eth1")
        let trip = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: family.east, port: port,
                                source: family.west, mark: mark, replyMark: replyMark, timeout: 5)
        let inbound = try capture.next(timeout: 1) { $0.direction == .incoming && $0.esp != nil }
        let outbound = try capture.next(timeout: 1) { $0.direction == .outgoing && $0.esp != nil }
        _ = try capture.collect(for: 0.1)
        return Observation(trip: trip, inbound: inbound, outbound: outbound,
                           westOut: try state(lab, "west", spi: tunnel.outboundSPI),
                           eastIn: try state(lab, "east", spi: east.inboundSPI), wire: capture.packets)
    }

    /// Loads a tunnel file, with the algorithm and encapsulation of the case.
    static func topology(_ style: Tunnel.Style, algorithm: Tunnel.Algorithm = .aead, encap: Tunnel.Encapsulation? = nil) throws -> Topology {
        var t = try Topology.load(path: topologyFile("west-east-\(style.rawValue)"))
        t.tunnels[0].algorithm = algorithm
        t.tunnels[0].encapsulation = encap
        return t
    }

    static func checkThroughESP(_ o: Observation, lab: Lab, udp: Bool = false) throws {
        let west = try #require(lab.tunnels?.end("west-east", on: "west"))
        let east = try #require(lab.tunnels?.end("west-east", on: "east"))
        #expect(o.trip.answered, "\(o)")
        let inbound = try #require(o.inbound, "no ESP arrived on east's eth1: \(o)")
        #expect(inbound.esp?.spi == west.outboundSPI, "\(o)")
        #expect(inbound.esp?.udpEncapsulated == udp, "\(o)")
        #expect(inbound.source.map(formatAddress) == "192.1.2.45" && inbound.destination.map(formatAddress) == "192.1.2.23")
        let outbound = try #require(o.outbound, "east's answer left without ESP: \(o)")
        #expect(outbound.esp?.spi == east.outboundSPI, "\(o)")
        #expect(west.outboundSPI == east.inboundSPI)
        #expect((o.westOut?.counters.packets ?? 0) >= 1, "\(o)")
        #expect((o.eastIn?.counters.packets ?? 0) >= 1, "\(o)")
        // East sends nothing of the exchange in clear. (Incoming cleartext copies are expected:
        // a policy-mode SA re-injects what it decrypted on the device the ESP came in on.)
        #expect(!o.wire.contains { $0.direction == .outgoing && ($0.udpPorts?.destination == 7100 || $0.udpPorts?.source == 7100) }, "\(o)")
        #expect(o.wire.firstIndex { $0.esp != nil } ?? .max < o.wire.firstIndex { $0.udpPorts?.destination == 7100 } ?? .max,
                "cleartext came before any ESP: \(o)")
    }

    @Test("policy style: UDP from 192.0.1.254 to 192.0.2.254 (and the IPv6 twins) marked 0x101 is answered through ESP",
          .requires(.esp), arguments: Family.allCases)
    func policyStyle(_ family: Family) async throws {
        try await Self.topology(.policy).withLab { lab in
            // 0x101 & 0xff == 0x1: the mask is what matters; east marks its answer 0x1.
            let o = try Self.exchange(lab, family, mark: 0x101, replyMark: 0x1, port: 7100)
            try Self.checkThroughESP(o, lab: lab)
        }
    }

    @Test("policy style: a packet whose mark does not match the policy (0x2) does not take the tunnel",
          .requires(.esp), arguments: Family.allCases)
    func policyStyleWrongMark(_ family: Family) async throws {
        try await Self.topology(.policy).withLab { lab in
            let west = try #require(lab.tunnels?.end("west-east", on: "west"))
            let eastBefore = try XfrmStatistics.read(lab.namespace("east"))
            let capture = try PacketCapture(namespace: lab.namespace("east"), interface: "eth1")
            let trip = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: family.east, port: 7101,
                                    source: family.west, mark: 0x2, timeout: 1)
            // It goes out in clear by the ordinary route, and east's inbound policy, which wants
            // ESP for that traffic, drops it.
            let clear = try capture.next(timeout: 1) { $0.udpPorts?.destination == 7101 }
            _ = try capture.collect(for: 0.2)
            #expect(clear != nil, "the unmatched packet did not arrive in clear: \(capture.packets)")
            #expect(!capture.packets.contains { $0.esp != nil }, "\(capture.packets)")
            #expect(!trip.delivered, "\(trip)")
            // The capture is kept as a pcap file for Wireshark.
            let pcap = FileManager.default.temporaryDirectory.appendingPathComponent("xlxfrm-\(getpid())-\(family).pcap").path
            try capture.writePCAP(to: pcap)
            defer { unlink(pcap) }
            let file = try Data(contentsOf: URL(fileURLWithPath: pcap))
            #expect(Array(file.prefix(4)) == [0xd4, 0xc3, 0xb2, 0xa1])
            #expect(file.count == 24 + capture.packets.reduce(0) { $0 + 16 + $1.bytes.count })
            #expect(try Self.state(lab, "west", spi: west.outboundSPI)?.counters.packets == 0)
            let eastAfter = try XfrmStatistics.read(lab.namespace("east"))
            #expect(eastAfter["XfrmInTmplMismatch"] > eastBefore["XfrmInTmplMismatch"] || eastAfter["XfrmInNoPols"] > eastBefore["XfrmInNoPols"],
                    "\(eastAfter.increases(since: eastBefore))")
        }
    }

    @Test("vti style: UDP between the subnets routed into vti-west-east is answered through ESP",
          .requires(.esp), .requires(.vti), arguments: Family.allCases)
    func vtiStyle(_ family: Family) async throws {
        try await Self.topology(.vti).withLab { lab in
            let o = try Self.exchange(lab, family, port: 7100)
            try Self.checkThroughESP(o, lab: lab)
            let device = try #require(try lab.namespace("west").route.tunnelLinks().first { $0.link.name == "vti-west-east" })
            #expect(device.kind == "vti" && device.inputKey == 0x10 && device.outputKey == 0x10, "\(device)")
            #expect(o.westOut?.mark == XfrmMark(0x10))
        }
    }

    @Test("xfrmi style: UDP between the subnets routed into xfrm-west-east is answered through ESP",
          .requires(.esp), .requires(.xfrmInterface), arguments: Family.allCases)
    func xfrmiStyle(_ family: Family) async throws {
        try await Self.topology(.xfrmi).withLab { lab in
            let o = try Self.exchange(lab, family, port: 7100)
            try Self.checkThroughESP(o, lab: lab)
            let device = try #require(try lab.namespace("west").route.tunnelLinks().first { $0.link.name == "xfrm-west-east" })
            #expect(device.kind == "xfrm" && device.interfaceID == 7, "\(device)")
            #expect(device.lowerIndex == (try lab.index(of: "eth1", on: "west")))
            #expect(o.westOut?.interfaceID == 7)
            #expect((device.link.statistics?.txPackets ?? 0) >= 1, "the packet did not leave through the xfrm interface")
        }
    }

    @Test("cbc(aes) + hmac(sha256) in UDP on port 4500 carries the traffic, in each style",
          .requires(.espCBCHMAC), .requires(.udpEncapsulation), .requires(.vti), .requires(.xfrmInterface),
          arguments: Tunnel.Style.allCases)
    func cbcInUDP(_ style: Tunnel.Style) async throws {
        try await Self.topology(style, algorithm: .cbcHMAC, encap: .udp).withLab { lab in
            let mark: UInt32? = style == .policy ? 0x1 : nil
            let o = try Self.exchange(lab, .ipv4, mark: mark, replyMark: mark, port: 7100)
            try Self.checkThroughESP(o, lab: lab, udp: true)
            let names = o.westOut?.algorithms.map(\.name)
            #expect(names == ["cbc(aes)", "hmac(sha256)"], "\(String(describing: names))")
            #expect(o.westOut?.encapsulation == XfrmEncapsulation(), "\(String(describing: o.westOut))")
        }
    }

    @Test("traffic outside the tunnel's subnets does not take it (east's public address)",
          .requires(.esp), .requires(.vti), .requires(.xfrmInterface), arguments: Tunnel.Style.allCases)
    func outsideTheSubnets(_ style: Tunnel.Style) async throws {
        try await Self.topology(style).withLab { lab in
            let west = try #require(lab.tunnels?.end("west-east", on: "west"))
            let capture = try PacketCapture(namespace: lab.namespace("east"), interface: "eth1")
            let trip = try Echo.udp(from: lab.namespace("west"), to: lab.namespace("east"), destination: [192, 1, 2, 23], port: 7102,
                                    mark: style == .policy ? 0x1 : nil, timeout: 2)
            #expect(trip.answered, "\(trip)")
            let wire = try capture.collect(for: 0.3)
            #expect(wire.contains { $0.udpPorts?.destination == 7102 }, "the exchange did not show on the wire: \(wire)")
            #expect(!wire.contains { $0.esp != nil }, "\(wire)")
            #expect(try Self.state(lab, "west", spi: west.outboundSPI)?.counters.packets == 0)
        }
    }
}
