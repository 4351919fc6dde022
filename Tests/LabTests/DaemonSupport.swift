import Daemons
import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Probes
import Testing
import XfrmLabTesting
import Topology

/// The two-host network of the daemon tests (Fixtures/daemons/west-east.yaml).
func daemonTopology() throws -> Topology {
    try Topology.load(path: repositoryRoot + "/Fixtures/daemons/west-east.yaml")
}

/// An initiator and a responder implementation, each from this machine or from a root.
struct DaemonPair: Sendable, CustomTestStringConvertible, CustomStringConvertible {
    var initiator: IKEDaemonKind
    var responder: IKEDaemonKind
    /// Where each end's daemon comes from (see `DaemonSpec.installation`); nil: this machine's.
    var initiatorFrom: String? = nil
    var responderFrom: String? = nil
    var description: String {
        initiatorFrom == nil && responderFrom == nil ? "\(initiator)→\(responder)"
            : "\(DaemonRelease.name(initiator, initiatorFrom))→\(DaemonRelease.name(responder, responderFrom))"
    }
    var testDescription: String { description }

    static let all: [DaemonPair] = [
        DaemonPair(initiator: .strongSwan, responder: .strongSwan),
        DaemonPair(initiator: .libreswan, responder: .libreswan),
        DaemonPair(initiator: .strongSwan, responder: .libreswan),
        DaemonPair(initiator: .libreswan, responder: .strongSwan),
    ]
}

/// The daemon releases the version cases use, and what each is called in test names.
enum DaemonRelease {
    /// "strongSwan 6.0.1", "libreswan 4.10": the upstream part of the package's version.
    static func name(_ kind: IKEDaemonKind, _ from: String?) -> String {
        "\(kind) " + (version(kind, from).map(upstream) ?? "(not installed)")
    }

    static func version(_ kind: IKEDaemonKind, _ from: String?) -> String? {
        switch kind {
        case .strongSwan: return (try? (from.map(Installation.strongSwan(at:)) ?? Installation.strongSwan).get())?.version
        case .libreswan: return (try? (from.map(Installation.libreswan(at:)) ?? Installation.libreswan).get())?.version
        }
    }

    /// "6.0.1-6+deb13u7" → "6.0.1", "1:4.10-2+deb12u1" → "4.10".
    static func upstream(_ version: String) -> String {
        var v = Substring(version)
        if let colon = v.firstIndex(of: ":") { v = v[v.index(after: colon)...] }
        return String(v.prefix { $0 != "-" && $0 != "+" && $0 != "~" })
    }

    /// The major version (5 of "5.2"), 0 when unknown.
    static func major(_ kind: IKEDaemonKind, _ from: String?) -> Int {
        version(kind, from).map(upstream).flatMap { Int($0.prefix { $0.isNumber }) } ?? 0
    }
}

/// What the daemons of `namespaces` left: files, processes.
func daemonLeftovers(_ namespaces: [String]) -> [String] {
    namespaces.flatMap { DaemonInstance.leftovers(namespace: $0) }
}

/// The kernel's SAs and policies in a namespace, read back over the harness's own netlink
/// (`ip -n NS xfrm state` / `ip -n NS xfrm policy`).
func kernelXfrm(_ ns: Namespace) throws -> (states: [XfrmState], policies: [XfrmPolicy]) {
    let socket = try ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
    defer { socket.close() }
    return (try socket.xfrmStates(), try socket.xfrmPolicies())
}

/// Up-to-established times, appended as one line per tunnel to $XFRMLAB_DAEMON_TIMINGS (when
/// set, e.g. a VM's shared directory) and printed.
func recordTiming(_ what: String, _ tunnel: IKETunnel) {
    let line = "timing \(what): \(tunnel.timings)"
    print(line)
    if let path = ProcessInfo.processInfo.environment["XFRMLAB_DAEMON_TIMINGS"],
       let handle = FileHandle(forWritingAtPath: path) ?? (FileManager.default.createFile(atPath: path, contents: nil) ? FileHandle(forWritingAtPath: path) : nil) {
        handle.seekToEndOfFile()
        handle.write(Data((line + "\n").utf8))
        handle.closeFile()
    }
}

/// What each host sent on the wire while `action` ran: AF_PACKET captures on `interface` of
/// `hosts`, outgoing packets only. (Incoming ones would include what the kernel's XFRM input
/// re-injects after decryption; outgoing ones are exactly what left the host.)
func wire<T>(_ lab: Lab, hosts: [String], interface: String = "eth1", _ action: () throws -> T) throws -> (result: T, sent: [String: [CapturedPacket]]) {
    let captures = try hosts.map { try PacketCapture(namespace: lab.namespace($0), interface: interface) }
    let result = try action()
    var sent: [String: [CapturedPacket]] = [:]
    for (host, capture) in zip(hosts, captures) {
        _ = try capture.collect(for: 0.1)
        sent[host] = capture.packets.filter { $0.direction == .outgoing }
    }
    return (result, sent)
}

/// libreswan installs bypass policies for IPv6 neighbour discovery (ICMPv6 135/136, no
/// template) at start-up and leaves them when it stops (4.10): the one leftover its stop is
/// allowed, named in the test's output.
func isNeighbourDiscoveryBypass(_ p: XfrmPolicy) -> Bool {
    p.templates.isEmpty && p.selector.ipProtocol == 58 && [135, 136].contains(p.selector.sourcePort)
}
