import CNetlink
import Foundation
import Glibc
import Namespaces
import Netlink
import Topology

/// The per-run secrets of one tunnel: an SPI and keys for each direction. Generated fresh for
/// every run from the kernel's random generator; keys print as `<key N bits>`.
public struct TunnelSecrets: Sendable, Hashable {
    public struct Direction: Sendable, Hashable {
        public var spi: UInt32
        public var algorithms: [XfrmAlgorithm]
    }
    public var leftToRight: Direction
    public var rightToLeft: Direction

    public static func generate(for tunnel: Tunnel) -> TunnelSecrets {
        func algorithms() -> [XfrmAlgorithm] {
            switch tunnel.algorithm {
            case .aead: return [.aesGCM(key: .random(bits: 160))]
            case .cbcHMAC: return [.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))]
            }
        }
        var generator = SystemRandomNumberGenerator()
        let a = UInt32.random(in: 0x1000...0xffff_fffe, using: &generator)
        var b = a
        while b == a { b = UInt32.random(in: 0x1000...0xffff_fffe, using: &generator) }
        return TunnelSecrets(leftToRight: Direction(spi: a, algorithms: algorithms()),
                             rightToLeft: Direction(spi: b, algorithms: algorithms()))
    }

    /// (outbound, inbound) as seen from the end on `host`.
    func directions(of tunnel: Tunnel, on host: String) -> (out: Direction, in: Direction) {
        tunnel.left.host == host ? (leftToRight, rightToLeft) : (rightToLeft, leftToRight)
    }
}

/// What a tunnel end needs in the kernel, as typed values: pure functions of the tunnel, the
/// host and the secrets, so the plan can be read (and tested) without a kernel.
public enum TunnelPlan {
    /// The mark outbound policies and SAs carry: the file's mark (`policy`), the key (`vti`).
    static func outboundMark(_ t: Tunnel) -> XfrmMark? {
        t.mark.map { XfrmMark($0.value, mask: $0.mask) }
    }

    /// Inbound SAs and policies: the key for `vti` (the device marks decrypted traffic with its
    /// ikey); none for `policy`, whose ESP arrives unmarked and whose decrypted packets are checked
    /// against the inbound policy with the mark they carry (none).
    static func inboundMark(_ t: Tunnel) -> XfrmMark? {
        t.style == .vti ? outboundMark(t) : nil
    }

    /// The two SAs of the end on `host`: outbound (local → remote) and inbound (remote → local).
    public static func states(_ t: Tunnel, on host: String, secrets: TunnelSecrets) -> [XfrmState] {
        guard let (local, remote) = t.ends(from: host) else { return [] }
        let (out, inbound) = secrets.directions(of: t, on: host)
        let encap = t.encapsulation == .udp ? XfrmEncapsulation() : nil
        let ifID = t.style == .xfrmi ? t.interfaceID : nil
        // One pair of SAs carries both inner families: the selector stays family-less
        // (`flag af-unspec`), or the kernel would narrow it to the outer family.
        return [
            XfrmState(source: local.address.bytes, destination: remote.address.bytes, spi: out.spi, mode: .tunnel,
                      reqid: t.reqid, algorithms: out.algorithms, encapsulation: encap, mark: outboundMark(t),
                      interfaceID: ifID, replayWindow: 32, flags: XfrmState.afUnspec),
            XfrmState(source: remote.address.bytes, destination: local.address.bytes, spi: inbound.spi, mode: .tunnel,
                      reqid: t.reqid, algorithms: inbound.algorithms, encapsulation: encap, mark: inboundMark(t),
                      interfaceID: ifID, replayWindow: 32, flags: XfrmState.afUnspec),
        ]
    }

    /// The policies of the end on `host`: for every pair of local and remote subnets of one
    /// family, `out` (local → remote) and `in` and `fwd` (remote → local), each with a tunnel-mode
    /// ESP template between the outer addresses.
    public static func policies(_ t: Tunnel, on host: String) -> [XfrmPolicy] {
        guard let (local, remote) = t.ends(from: host) else { return [] }
        let ifID = t.style == .xfrmi ? t.interfaceID : nil
        let outTemplate = XfrmTemplate(source: local.address.bytes, destination: remote.address.bytes, reqid: t.reqid)
        let inTemplate = XfrmTemplate(source: remote.address.bytes, destination: local.address.bytes, reqid: t.reqid)
        var out: [XfrmPolicy] = []
        for l in local.subnets {
            for r in remote.subnets where r.family == l.family {
                let outbound = XfrmSelector(source: l.address.bytes, sourcePrefixLength: l.prefixLength,
                                            destination: r.address.bytes, destinationPrefixLength: r.prefixLength)
                let inbound = XfrmSelector(source: r.address.bytes, sourcePrefixLength: r.prefixLength,
                                           destination: l.address.bytes, destinationPrefixLength: l.prefixLength)
                out.append(XfrmPolicy(selector: outbound, direction: .out, mark: outboundMark(t), interfaceID: ifID, templates: [outTemplate]))
                out.append(XfrmPolicy(selector: inbound, direction: .in, mark: inboundMark(t), interfaceID: ifID, templates: [inTemplate]))
                out.append(XfrmPolicy(selector: inbound, direction: .fwd, mark: inboundMark(t), interfaceID: ifID, templates: [inTemplate]))
            }
        }
        return out
    }

    /// The VTI or xfrm device of the end on `host` (nil for the `policy` style). `lower` is the
    /// device holding the outer address, which an xfrm interface is tied to.
    public static func device(_ t: Tunnel, on host: String, namespace: String?,
                              lower: (index: Int32, name: String)?) -> Request? {
        guard let (local, remote) = t.ends(from: host), let name = t.deviceName(of: local) else { return nil }
        let origin = t.location?.description
        switch t.style {
        case .policy:
            return nil
        case .vti:
            let key = t.mark?.value
            return LinkRequest.vti(namespace: namespace, name: name, local: local.address.bytes, remote: remote.address.bytes,
                                   inputKey: key, outputKey: key, origin: origin)
        case .xfrmi:
            return LinkRequest.xfrmInterface(namespace: namespace, name: name, interfaceID: t.interfaceID,
                                             link: lower?.index, linkName: lower?.name, origin: origin)
        }
    }

    /// Routes of the remote subnets into the device (`vti`, `xfrmi`); none for `policy`, where
    /// the policies pick the traffic after the ordinary route lookup.
    public static func routes(_ t: Tunnel, on host: String, namespace: String?, deviceIndex: Int32) -> [Request] {
        guard t.style != .policy, let (local, remote) = t.ends(from: host), let name = t.deviceName(of: local) else { return [] }
        return remote.subnets.filter { s in local.subnets.contains { $0.family == s.family } }.map { s in
            RouteRequest.add(namespace: namespace, destination: s.address.bytes, prefixLength: s.prefixLength,
                             outputInterface: deviceIndex, interfaceName: name, origin: t.location?.description)
        }
    }
}

/// The tunnels of a lab as installed: SPIs (never keys) per end, devices, and the UDP
/// encapsulation sockets that must stay open for ESP in UDP to be received.
public final class InstalledTunnels: @unchecked Sendable {
    public struct End: Sendable, Hashable, CustomStringConvertible {
        public var tunnel: String
        public var host: String
        public var style: Tunnel.Style
        public var outboundSPI: UInt32
        public var inboundSPI: UInt32
        public var device: String?
        public var description: String {
            "\(tunnel) on \(host) (\(style)): out spi 0x\(String(outboundSPI, radix: 16)), in spi 0x\(String(inboundSPI, radix: 16))"
                + (device.map { ", device \($0)" } ?? "")
        }
    }

    public let ends: [End]
    private var encapsulationSockets: [Int32]
    private let lock = NSLock()

    init(ends: [End], encapsulationSockets: [Int32]) {
        self.ends = ends
        self.encapsulationSockets = encapsulationSockets
    }

    /// The end of `tunnel` on `host`.
    public func end(_ tunnel: String, on host: String) -> End? { ends.first { $0.tunnel == tunnel && $0.host == host } }

    /// Whether UDP encapsulation sockets are held (ESP in UDP is only received while they are).
    public var holdsSockets: Bool { lock.withLock { !encapsulationSockets.isEmpty } }

    /// Closes the encapsulation sockets: each holds its namespace alive, so this must happen
    /// before the namespaces are deleted. Safe to call twice.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        for fd in encapsulationSockets { Glibc.close(fd) }
        encapsulationSockets = []
    }

    deinit { close() }
}

/// Installs a topology's tunnels into its namespaces: devices and routes (rtnetlink), states
/// and policies (XFRM), and UDP encapsulation sockets.
public enum TunnelInstaller {
    /// - Parameter namespaces: host name → its namespace.
    public static func install(_ topology: Topology, namespaces: [String: Namespace]) throws -> InstalledTunnels {
        var ends: [InstalledTunnels.End] = []
        var sockets: [Int32] = []
        do {
            // IKE tunnels are the daemons' to install (Daemons: `lab.startIKETunnels()`).
            for t in topology.tunnels where !t.usesIKE {
                let secrets = TunnelSecrets.generate(for: t)
                for host in [t.left.host, t.right.host] {
                    guard let ns = namespaces[host] else { throw TunnelError("\(t.location?.description ?? t.name): no namespace for host \(host)") }
                    try installEnd(t, on: host, in: ns, topology: topology, secrets: secrets)
                    if t.encapsulation == .udp, let (local, _) = t.ends(from: host) {
                        sockets.append(try openEncapsulationSocket(in: ns, address: local.address.bytes, port: 4500))
                    }
                    let (out, inbound) = secrets.directions(of: t, on: host)
                    ends.append(.init(tunnel: t.name, host: host, style: t.style, outboundSPI: out.spi, inboundSPI: inbound.spi,
                                      device: t.ends(from: host).flatMap { t.deviceName(of: $0.local) }))
                }
            }
        } catch {
            sockets.forEach { Glibc.close($0) }
            throw error
        }
        return InstalledTunnels(ends: ends, encapsulationSockets: sockets)
    }

    static func installEnd(_ t: Tunnel, on host: String, in ns: Namespace, topology: Topology, secrets: TunnelSecrets) throws {
        guard let (local, _) = t.ends(from: host) else { return }
        if t.style != .policy {
            // The device holding the outer address: an xfrm interface is tied to it.
            var lower: (Int32, String)?
            if let member = topology.attachments(of: host).map(\.attachment).first(where: { $0.addresses.contains { $0.address == local.address } }),
               let link = try ns.route.link(named: member.interface, namespace: ns.name) {
                lower = (link.index, member.interface)
            }
            if let request = TunnelPlan.device(t, on: host, namespace: ns.name, lower: lower) {
                try ns.route.request(request)
            }
            guard let name = t.deviceName(of: local), let device = try ns.route.link(named: name, namespace: ns.name) else {
                throw TunnelError("\(t.location?.description ?? t.name): the \(t.style) device of \(host) is missing after it was made")
            }
            try ns.route.batch(TunnelPlan.routes(t, on: host, namespace: ns.name, deviceIndex: device.index))
        }
        let xfrm = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
        defer { xfrm.close() }
        let origin = t.location?.description
        try xfrm.batch(TunnelPlan.states(t, on: host, secrets: secrets).map { XfrmStateRequest.add(namespace: ns.name, $0, origin: origin) }
            + TunnelPlan.policies(t, on: host).map { XfrmPolicyRequest.add(namespace: ns.name, $0, origin: origin) })
    }
}

/// A tunnel could not be installed as the file asked.
public struct TunnelError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Namespace {
    /// An `NETLINK_XFRM` socket inside the namespace (for states, policies, dumps).
    public func xfrmSocket() throws -> NetlinkSocket { try netlinkSocket(protocol: NetlinkSocket.xfrm) }

    /// A listener for `ACQUIRE` and `EXPIRE` in the namespace. Equivalent to `ip xfrm monitor acquire expire`.
    public func xfrmMonitor() throws -> XfrmMonitor {
        XfrmMonitor(socket: try netlinkSocket(protocol: NetlinkSocket.xfrm, groups: [XfrmMonitor.acquireGroup, XfrmMonitor.expireGroup]))
    }
}
