import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Topology
import Xfrm

/// The address family of a scenario case: inner and outer addresses alike.
public enum ScenarioFamily: String, Sendable, CaseIterable, CustomStringConvertible {
    case ipv4, ipv6
    var width: Int { self == .ipv4 ? 4 : 16 }
    var addressFamily: UInt8 { self == .ipv4 ? UInt8(AF_INET) : UInt8(AF_INET6) }
    public var description: String { rawValue }

    /// `0.0.0.0/0` or `::/0`.
    public var everything: CIDR { CIDR(address: self == .ipv4 ? .v4([0, 0, 0, 0]) : .v6(Array(repeating: 0, count: 16)), prefixLength: 0) }
    /// A host prefix (/32, /128) of `bytes`, an address of this family.
    public func host(_ bytes: [UInt8]) -> CIDR { CIDR(address: self == .ipv4 ? .v4(bytes) : .v6(bytes), prefixLength: width * 8) }
}

/// The addresses of libreswan's west-east layout that the scenarios' cases use, read from the
/// topology the case runs on (so a topology file is their one source): west's and east's
/// public addresses (eth1), nic's on the same network, west's and east's private addresses
/// (eth0) and the networks those are on.
public struct WestEast: Sendable {
    public var family: ScenarioFamily
    public var westOuter: [UInt8]
    public var eastOuter: [UInt8]
    public var nic: [UInt8]
    public var westInner: [UInt8]
    public var eastInner: [UInt8]
    public var westSubnet: CIDR
    public var eastSubnet: CIDR

    public init(_ topology: Topology, family: ScenarioFamily) throws {
        let wanted: IPAddress.Family = family == .ipv4 ? .ipv4 : .ipv6
        func find(_ host: String, _ interface: String) throws -> (address: [UInt8], network: CIDR) {
            for network in topology.networks {
                for m in network.members where m.host == host && m.interface == interface {
                    guard let a = m.addresses.first(where: { $0.family == wanted }) else { continue }
                    return (a.address.bytes, network.subnets.first { $0.family == wanted && $0.contains(a.address) } ?? a.network)
                }
            }
            throw LabError("\(topology.source ?? topology.name): the scenario needs an \(family) address on \(host) \(interface) (libreswan's west-east layout)")
        }
        self.family = family
        (westOuter, _) = try find("west", "eth1")
        (eastOuter, _) = try find("east", "eth1")
        (nic, _) = try find("nic", "eth1")
        (westInner, westSubnet) = try find("west", "eth0")
        (eastInner, eastSubnet) = try find("east", "eth0")
    }

    /// Those of the lab's topology.
    public init(_ lab: Lab, family: ScenarioFamily) throws { try self.init(lab.topology, family: family) }
}

/// How one end of a scenario's tunnel picks traffic: by policy (with a mark or none), through a
/// VTI device (its key is the mark) or through an xfrm interface (if_id).
public enum TunnelStyle: String, Sendable, CaseIterable, CustomStringConvertible {
    case policy, vti, xfrmi
    public var description: String { rawValue }
    /// What the kernel must have for the style over `family`.
    public func requirements(_ family: ScenarioFamily) -> [Capability.Name] {
        switch self {
        case .policy: return [.esp, .outputMarkMask]
        case .vti: return [.esp, .outputMarkMask, family == .ipv4 ? .vti : .vti6]
        case .xfrmi: return [.esp, .outputMarkMask, .xfrmInterface]
        }
    }
}

/// Why a scenario cannot run here: the first missing capability and the kernel's answer, or nil.
func unmet(_ names: [Capability.Name]) -> String? {
    for n in names {
        let c = Capabilities.capability(n)
        if !c.available { return c.skipReason }
    }
    return nil
}

/// One end of a tunnel a scenario installs itself over netlink: the marks the question is
/// about (policy marks, `XFRMA_SET_MARK` with or without a mask on each SA), a device or none.
public struct MarkTunnelEnd: Sendable {
    public var host: String
    public var outer: [UInt8]
    public var subnets: [CIDR]
    public var style: TunnelStyle = .policy
    /// Mark of the `out` policy and of the outbound SA (for `vti` the key).
    public var outPolicyMark: XfrmMark?
    /// Mark of the `in` and `fwd` policies.
    public var inPolicyMark: XfrmMark?
    /// `XFRMA_SET_MARK`/`XFRMA_SET_MARK_MASK` of the outbound SA: the ESP packet's mark.
    public var outputMark: XfrmMark?
    /// The same on the inbound SA: applied to the decrypted packet.
    public var inputMark: XfrmMark?
    /// The device name (`vti`, `xfrmi`).
    public var device: String = "ipsec0"
    /// The device an xfrm interface is tied to (`dev eth1`), or none.
    public var lower: String?
    /// Where the remote subnets are routed into the device; nil: no routes (the scenario adds its own).
    public var routeTable: UInt32? = RouteRequest.mainTable

    public init(host: String, outer: [UInt8], subnets: [CIDR], style: TunnelStyle = .policy) {
        self.host = host
        self.outer = outer
        self.subnets = subnets
        self.style = style
    }
}

/// A west–east tunnel installed by a scenario: SPIs per direction (keys are never shown).
public struct MarkTunnel: Sendable, CustomStringConvertible {
    public var left: MarkTunnelEnd
    public var right: MarkTunnelEnd
    public var leftToRightSPI: UInt32
    public var rightToLeftSPI: UInt32
    public static let interfaceID: UInt32 = 7
    public static let vtiKey: UInt32 = 0x10

    public var description: String {
        "\(left.host) → \(right.host) spi 0x\(String(leftToRightSPI, radix: 16)), \(right.host) → \(left.host) spi 0x\(String(rightToLeftSPI, radix: 16))"
    }

    /// Installs both ends: devices and routes (rtnetlink), SAs and policies (XFRM), selectors
    /// limited to `ipProtocol` when not 0. Equivalent to a handful of `ip xfrm state/policy add`.
    public static func install(_ lab: Lab, left: MarkTunnelEnd, right: MarkTunnelEnd, ipProtocol: UInt8 = 0) throws -> MarkTunnel {
        var generator = SystemRandomNumberGenerator()
        let a = UInt32.random(in: 0x1000...0xffff_fffe, using: &generator)
        var b = a
        while b == a { b = UInt32.random(in: 0x1000...0xffff_fffe, using: &generator) }
        let keys = [XfrmAlgorithm.aesGCM(key: .random(bits: 160))], back = [XfrmAlgorithm.aesGCM(key: .random(bits: 160))]
        try installEnd(lab, local: left, remote: right, outSPI: a, inSPI: b, outKeys: keys, inKeys: back, ipProtocol: ipProtocol)
        try installEnd(lab, local: right, remote: left, outSPI: b, inSPI: a, outKeys: back, inKeys: keys, ipProtocol: ipProtocol)
        return MarkTunnel(left: left, right: right, leftToRightSPI: a, rightToLeftSPI: b)
    }

    static func installEnd(_ lab: Lab, local: MarkTunnelEnd, remote: MarkTunnelEnd, outSPI: UInt32, inSPI: UInt32,
                           outKeys: [XfrmAlgorithm], inKeys: [XfrmAlgorithm], ipProtocol: UInt8) throws {
        let ns = try lab.namespace(local.host)
        let key = vtiKey
        switch local.style {
        case .policy:
            break
        case .vti:
            try ns.route.request(LinkRequest.vti(namespace: ns.name, name: local.device, local: local.outer, remote: remote.outer,
                                                 inputKey: key, outputKey: key))
        case .xfrmi:
            let lower = try local.lower.map { try lab.index(of: $0, on: local.host) }
            try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: local.device, interfaceID: interfaceID,
                                                           link: lower, linkName: local.lower))
        }
        if local.style != .policy, let table = local.routeTable {
            guard let device = try ns.route.link(named: local.device, namespace: ns.name) else {
                throw LabError("\(local.host): \(local.device) is missing after it was made")
            }
            try ns.route.batch(remote.subnets.map {
                RouteRequest.add(namespace: ns.name, destination: $0.address.bytes, prefixLength: $0.prefixLength, outputInterface: device.index,
                                 interfaceName: local.device, table: table)
            })
        }
        let vtiMark = local.style == .vti ? XfrmMark(key) : nil
        let outMark = vtiMark ?? local.outPolicyMark, inMark = vtiMark ?? local.inPolicyMark
        let ifID = local.style == .xfrmi ? interfaceID : nil
        var requests: [Request] = [
            XfrmStateRequest.add(namespace: ns.name, XfrmState(
                source: local.outer, destination: remote.outer, spi: outSPI, reqid: 1, algorithms: outKeys, mark: outMark,
                outputMark: local.outputMark, interfaceID: ifID, replayWindow: 32, flags: XfrmState.afUnspec)),
            XfrmStateRequest.add(namespace: ns.name, XfrmState(
                source: remote.outer, destination: local.outer, spi: inSPI, reqid: 1, algorithms: inKeys, mark: vtiMark,
                outputMark: local.inputMark, interfaceID: ifID, replayWindow: 32, flags: XfrmState.afUnspec)),
        ]
        let outTemplate = XfrmTemplate(source: local.outer, destination: remote.outer, reqid: 1)
        let inTemplate = XfrmTemplate(source: remote.outer, destination: local.outer, reqid: 1)
        for l in local.subnets {
            for r in remote.subnets where r.family == l.family {
                let out = XfrmSelector(source: l.address.bytes, sourcePrefixLength: l.prefixLength, destination: r.address.bytes,
                                       destinationPrefixLength: r.prefixLength, ipProtocol: ipProtocol)
                let inbound = XfrmSelector(source: r.address.bytes, sourcePrefixLength: r.prefixLength, destination: l.address.bytes,
                                           destinationPrefixLength: l.prefixLength, ipProtocol: ipProtocol)
                requests.append(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: out, direction: .out, mark: outMark,
                                                                                    interfaceID: ifID, templates: [outTemplate])))
                for d in [XfrmDirection.in, .fwd] {
                    requests.append(XfrmPolicyRequest.add(namespace: ns.name, XfrmPolicy(selector: inbound, direction: d, mark: inMark,
                                                                                        interfaceID: ifID, templates: [inTemplate])))
                }
            }
        }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        try xfrm.batch(requests)
    }

    /// The SA on `host` with `spi`, read back (counters, marks).
    public static func state(_ lab: Lab, _ host: String, spi: UInt32) throws -> XfrmState? {
        let xfrm = try lab.namespace(host).xfrmSocket()
        defer { xfrm.close() }
        return try xfrm.xfrmStates().first { $0.spi == spi }
    }
}

extension Lab {
    /// A tracer whose hops name every device the kernel has, including tunnel devices made
    /// after bring-up (the plan only knows the topology's own).
    func namedTracer(hosts: [String], hooks: [Hook] = Hook.allCases) throws -> Tracer {
        let points = try hosts.map { host -> Tracer.Point in
            let ns = try namespace(host)
            let names = Dictionary(try ns.route.links(namespace: ns.name).map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
            return Tracer.Point(host: host, namespace: ns, interfaceNames: names)
        }
        return try Tracer(points: points, hooks: hooks)
    }

    /// Traces `action` at every hook of `hosts`, naming tunnel devices too.
    public func traceNamed<T>(hosts: [String], _ action: () throws -> T) throws -> (result: T, trace: Trace) {
        let t = try namedTracer(hosts: hosts)
        defer { t.stop() }
        return try t.capture(action)
    }

    /// A link's counters, read back now.
    func linkStatistics(_ host: String, _ device: String) throws -> LinkInfo.Statistics? {
        let ns = try namespace(host)
        return try ns.route.link(named: device, namespace: ns.name)?.statistics
    }
}

/// `0x1f`.
func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
