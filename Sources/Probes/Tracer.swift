import Foundation
import Namespaces
import Netlink

/// A netfilter hook, where a log rule sees a packet.
public enum Hook: String, Sendable, Hashable, CaseIterable, Codable {
    case prerouting, input, forward, output, postrouting

    /// `NF_INET_*` numbering, as nfnetlink_log reports it.
    public init?(number: UInt8) {
        switch number {
        case 0: self = .prerouting
        case 1: self = .input
        case 2: self = .forward
        case 3: self = .output
        case 4: self = .postrouting
        default: return nil
        }
    }
}

/// One sighting of a packet: which host, which hook, which mark, which interfaces.
public struct Hop: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var hook: Hook
    public var mark: UInt32
    /// The connection's mark (`ct mark`), when conntrack data was available.
    public var connectionMark: UInt32?
    public var inInterface: String?
    public var outInterface: String?
    public var packet: PacketSummary
    /// Order within the host (nfnetlink_log's sequence number).
    public var sequence: UInt32

    public init(host: String, hook: Hook, mark: UInt32 = 0, connectionMark: UInt32? = nil, inInterface: String? = nil,
                outInterface: String? = nil, packet: PacketSummary, sequence: UInt32 = 0) {
        self.host = host
        self.hook = hook
        self.mark = mark
        self.connectionMark = connectionMark
        self.inInterface = inInterface
        self.outInterface = outInterface
        self.packet = packet
        self.sequence = sequence
    }

    public var description: String {
        var s = "\(host) \(hook.rawValue): \(packet) mark 0x\(String(mark, radix: 16))"
        if let connectionMark, connectionMark != 0 { s += " ct mark 0x\(String(connectionMark, radix: 16))" }
        if let inInterface { s += " in \(inInterface)" }
        if let outInterface { s += " out \(outInterface)" }
        return s
    }
}

/// Every sighting of an action's packets, per host in the order each host saw them.
///
/// The kernel numbers log messages per namespace, so the order across hosts is not known;
/// within a host it is exact. Expectations therefore speak of order within a host.
public struct Trace: Sendable, CustomStringConvertible {
    public var hops: [Hop]
    /// Hosts in the order they were traced.
    public var hosts: [String]

    /// Which interfaces share a link or network: "host interface" → the other ends ("east eth1").
    /// Optional (the lab fills it in); pictures use it to join a packet leaving one host to
    /// where it arrives.
    public var links: [String: [String]] = [:]

    public init(hops: [Hop], hosts: [String], links: [String: [String]] = [:]) {
        self.hops = hops
        self.hosts = hosts
        self.links = links
    }

    public func hops(on host: String) -> [Hop] { hops.filter { $0.host == host } }

    public var description: String {
        if hops.isEmpty { return "  (no packet was seen at any traced hook)\n" }
        var s = ""
        for host in hosts {
            let list = hops(on: host)
            guard !list.isEmpty else { continue }
            for h in list { s += "  \(h)\n" }
        }
        return s
    }
}

/// Installs nftables log rules at chosen hooks in chosen namespaces, listens to them over
/// nfnetlink_log, and hands back the trace of what an action sent.
///
/// The rules live in a table of their own (`inet xfrmlab_trace`) at a chosen priority, so a
/// trace can be taken before or after the mangle rules that set marks.
public final class Tracer: @unchecked Sendable {
    public struct Point: Sendable {
        public var host: String
        public var namespace: Namespace
        public var interfaceNames: [Int32: String]
        public init(host: String, namespace: Namespace, interfaceNames: [Int32: String]) {
            self.host = host
            self.namespace = namespace
            self.interfaceNames = interfaceNames
        }
    }

    public static let table = "xfrmlab_trace"
    public let group: UInt16
    let points: [Point]
    let listeners: [NFLogListener]
    /// Whether every listener gets conntrack data (connection marks).
    public var connectionTracking: Bool { listeners.allSatisfy(\.connectionTracking) }

    /// - Parameters:
    ///   - priority: the nftables hook priority of the log rules (`mangle` + 1 sees marks set
    ///     by mangle rules; `raw` sees packets first).
    ///   - match: an nftables expression selecting the packets to log (default: everything
    ///     but neighbour discovery and router chatter).
    public init(points: [Point], hooks: [Hook] = Hook.allCases, priority: String = "mangle + 1",
                match: String = "meta l4proto != ipv6-icmp", group: UInt16 = 7300) throws {
        self.points = points
        self.group = group
        var made: [NFLogListener] = []
        do {
            for p in points {
                var text = "table inet \(Tracer.table) {\n"
                for hook in hooks {
                    text += "  chain \(hook.rawValue) {\n    type filter hook \(hook.rawValue) priority \(priority); policy accept;\n"
                    text += "    \(match) log prefix \"\(p.host)\" group \(group)\n  }\n"
                }
                text += "}\n"
                try p.namespace.check(["nft", "-f", "-"], input: text)
                made.append(try NFLogListener(namespace: p.namespace, group: group))
            }
        } catch {
            made.forEach { $0.close() }
            for p in points { _ = try? p.namespace.execute(["nft", "delete", "table", "inet", Tracer.table]) }
            throw error
        }
        listeners = made
    }

    /// Runs `action` and returns its result with every packet the log rules saw meanwhile.
    public func capture<T>(_ action: () throws -> T) throws -> (result: T, trace: Trace) {
        for l in listeners { _ = try l.drain(quiet: 0) }  // forget what came before
        let result = try action()
        var hops: [Hop] = []
        for (p, l) in zip(points, listeners) {
            for logged in try l.drain(timeout: 0.05, quiet: 0.02) {
                guard let packet = logged.packet, let hook = Hook(number: logged.hook) else { continue }
                hops.append(Hop(host: p.host, hook: hook, mark: logged.mark, connectionMark: logged.connectionMark,
                                inInterface: logged.inputInterface.map { p.interfaceNames[$0] ?? "if\($0)" },
                                outInterface: logged.outputInterface.map { p.interfaceNames[$0] ?? "if\($0)" },
                                packet: packet, sequence: logged.sequence ?? 0))
            }
        }
        let order = Dictionary(uniqueKeysWithValues: points.enumerated().map { ($1.host, $0) })
        hops.sort { (order[$0.host]!, $0.sequence) < (order[$1.host]!, $1.sequence) }
        return (result, Trace(hops: hops, hosts: points.map(\.host)))
    }

    /// Removes the log rules and closes the listeners.
    public func stop() {
        listeners.forEach { $0.close() }
        for p in points { _ = try? p.namespace.execute(["nft", "delete", "table", "inet", Tracer.table]) }
    }
}
