import Foundation
import Glibc
import Namespaces

/// The IKE daemons XfrmLab can run in a lab namespace.
public enum IKEDaemonKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// strongSwan's charon (charon-systemd), configured with swanctl over a private vici socket.
    case strongSwan
    /// libreswan's pluto, configured with its own ipsec.conf, secrets and NSS database.
    case libreswan

    public var description: String { self == .strongSwan ? "strongSwan" : "libreswan" }
    /// The process's name (`charon`, `pluto`), for file names and messages.
    public var program: String { self == .strongSwan ? "charon" : "pluto" }
}

/// One IKE daemon running in a namespace of a lab, with everything of its own (configuration,
/// run directory, NSS database, log) under `instance.directory`.
///
/// Both kinds are `IKEDaemonProcess`es. Start one with `StrongSwan.start(…)` or
/// `Libreswan.start(…)` (or both ends of a tunnel with `IKETunnel.up(…)`), and always `stop()`
/// it: that ends the process, waits for it and removes its directory.
public protocol IKEDaemon: AnyObject, Sendable, CustomStringConvertible {
    var kind: IKEDaemonKind { get }
    /// The lab host it serves (for messages).
    var host: String { get }
    var namespace: Namespace { get }
    /// The connection it was given, from its own point of view.
    var configuration: IKEConfiguration { get }
    /// Its directory, process and log.
    var instance: DaemonInstance { get }

    /// Starts negotiating the connection and returns when the daemon says it is up, or throws
    /// the daemon's refusal with its log.
    func initiate(timeout: Double) throws
    /// The IKE SAs of the connection, as the daemon reports them.
    func status() throws -> [IKESAStatus]
    /// The name and version the running daemon gives for itself ("charon-systemd 6.0.1",
    /// "Libreswan 5.2"): which build actually ran.
    func reportedVersion() throws -> String
    /// Asks for a new child SA in place of the current one (returns at once).
    func rekeyChild() throws
    /// Ends the daemon (SIGTERM, then SIGKILL after a grace period), waits for it, removes its
    /// directory and whatever devices it was given. Safe to call twice.
    @discardableResult
    func stop() throws -> StopReport?
}

extension IKEDaemon {
    /// The established IKE SA with an installed child SA, if there is one.
    public func established() throws -> IKESAStatus? {
        try status().first { $0.established && $0.children.contains(where: \.installed) }
    }

    /// Waits until the connection has an established IKE SA with an installed child SA; throws
    /// with the daemon's log when `timeout` passes first or the daemon dies.
    @discardableResult
    public func waitEstablished(timeout: Double = 20) throws -> IKESAStatus {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [IKESAStatus] = []
        while true {
            guard instance.isRunning else {
                throw DaemonError(.negotiation, "\(self) exited while waiting for \(configuration.name): \(instance.exitDescription)",
                                  logs: instance.logExcerpts())
            }
            last = (try? status()) ?? last
            if let up = last.first(where: { $0.established && $0.children.contains(where: \.installed) }) { return up }
            if Date() >= deadline { break }
            usleep(20_000)
        }
        let seen = last.isEmpty ? "no IKE SA" : last.map(\.description).joined(separator: "; ")
        throw DaemonError(.negotiation, "\(self): \(configuration.name) not established within \(format(timeout)) s (\(seen))",
                          logs: instance.logExcerpts())
    }

    /// Rekeys the child SA and waits until a new one (other SPIs) is installed.
    @discardableResult
    public func rekeyAndWait(timeout: Double = 20) throws -> (before: ChildSAStatus, after: ChildSAStatus) {
        guard let before = try established()?.children.first(where: \.installed) else {
            throw DaemonError(.control, "\(self): no installed child SA of \(configuration.name) to rekey", logs: instance.logExcerpts())
        }
        try rekeyChild()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let children = (try? status())?.flatMap(\.children) ?? []
            if let after = children.first(where: { $0.installed && $0.inboundSPI != before.inboundSPI && $0.outboundSPI != before.outboundSPI }) {
                return (before, after)
            }
            usleep(20_000)
        }
        throw DaemonError(.negotiation, "\(self): child SA \(before) not replaced within \(format(timeout)) s of the rekey",
                          logs: instance.logExcerpts())
    }
}

// MARK: - What the daemons report

/// An IKE SA as the daemon reports it (`swanctl --list-sas`, `ipsec whack --showstates`).
public struct IKESAStatus: Sendable, CustomStringConvertible {
    /// The daemon's own identifier (strongSwan's unique id, libreswan's `#N`).
    public var serial: String
    /// The daemon's state name (`ESTABLISHED`, `STATE_V2_ESTABLISHED_IKE_SA` …).
    public var state: String
    public var established: Bool
    public var children: [ChildSAStatus]

    public var description: String {
        "IKE SA \(serial) \(state)" + (children.isEmpty ? ", no child SA" : ", " + children.map(\.description).joined(separator: ", "))
    }
}

/// A child (IPsec) SA pair as the daemon reports it.
public struct ChildSAStatus: Sendable, Hashable, CustomStringConvertible {
    public var serial: String
    public var state: String
    public var installed: Bool
    /// SPIs in host order (the inbound SA's is the one the peer sends to).
    public var inboundSPI: UInt32?
    public var outboundSPI: UInt32?
    /// ESP in UDP (NAT-T, or forced by kernel-libipsec).
    public var udpEncapsulated: Bool?
    public var bytesIn: UInt64?
    public var bytesOut: UInt64?
    public var packetsIn: UInt64?
    public var packetsOut: UInt64?

    public var description: String {
        var s = "child SA \(serial) \(state)"
        if let i = inboundSPI, let o = outboundSPI { s += " spi in 0x\(String(i, radix: 16)) out 0x\(String(o, radix: 16))" }
        if udpEncapsulated == true { s += " in UDP" }
        if let packetsIn, let packetsOut { s += " (\(packetsIn) packets in, \(packetsOut) out)" }
        return s
    }
}

/// How a daemon ended.
public struct StopReport: Sendable, CustomStringConvertible {
    public var daemon: String
    /// The last signal it took (SIGTERM, or SIGKILL when it outlived the grace period), or nil
    /// when it had exited already.
    public var signal: Int32?
    public var exit: String
    public var seconds: Double

    public var description: String {
        let how = signal == SIGKILL ? "killed (SIGKILL) after ignoring SIGTERM" : signal == SIGTERM ? "stopped by SIGTERM" : "had exited"
        return "\(daemon) \(how): \(exit), in \(format(seconds * 1000)) ms"
    }
}

// MARK: - Errors

/// A daemon that could not be set up, started, configured, or did not negotiate; with the
/// daemon's own log lines (never its secrets).
public struct DaemonError: Error, CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable {
        case notInstalled = "not installed"
        case configuration
        case start
        case load
        case negotiation
        case control
        case stop
    }

    public var kind: Kind
    public var message: String
    /// The daemons' own words: tails of their logs (and of what they printed).
    public var logs: [LogExcerpt]

    public init(_ kind: Kind, _ message: String, logs: [LogExcerpt] = []) {
        self.kind = kind
        self.message = message
        self.logs = logs
    }

    public var description: String {
        var s = message
        for log in logs where !log.lines.isEmpty {
            s += "\n--- \(log.title) ---\n" + log.lines.joined(separator: "\n")
        }
        return s
    }
}

/// Some lines of a daemon's log file or console output.
public struct LogExcerpt: Sendable, CustomStringConvertible {
    public var title: String
    public var lines: [String]
    public init(title: String, lines: [String]) {
        self.title = title
        self.lines = lines
    }
    public var description: String { "--- \(title) ---\n" + lines.joined(separator: "\n") }
}

func format(_ v: Double) -> String {
    v == v.rounded() && abs(v) < 1e6 ? String(Int(v)) : String(format: "%.1f", v)
}
