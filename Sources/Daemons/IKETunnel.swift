import Foundation
import Glibc
import Lab
import Namespaces

/// Which daemon to run on a host, with what connection (from that host's point of view) and
/// which daemon-specific options.
public struct DaemonSpec: Sendable, CustomStringConvertible {
    public var kind: IKEDaemonKind
    public var host: String
    public var configuration: IKEConfiguration
    public var strongSwan: StrongSwan.Options
    public var libreswan: Libreswan.Options

    /// `installation`, when given, is where this daemon comes from (a root filesystem or a
    /// prefix, see `Installation.strongSwan(at:)` and `Installation.libreswan(at:)`); it
    /// replaces the options' own.
    public init(_ kind: IKEDaemonKind, host: String, configuration: IKEConfiguration,
                strongSwan: StrongSwan.Options = StrongSwan.Options(), libreswan: Libreswan.Options = Libreswan.Options(),
                installation: String? = nil) {
        self.kind = kind
        self.host = host
        self.configuration = configuration
        self.strongSwan = strongSwan
        self.libreswan = libreswan
        if let installation {
            self.strongSwan.installation = installation
            self.libreswan.installation = installation
        }
    }

    /// Where the daemon comes from: its options' installation, nil for this machine's.
    public var installation: String? { kind == .strongSwan ? strongSwan.installation : libreswan.installation }

    /// Starts the daemon in `namespace`.
    public func start(in namespace: Namespace) throws -> any IKEDaemon {
        switch kind {
        case .strongSwan: return try StrongSwan.start(in: namespace, host: host, configuration: configuration, options: strongSwan)
        case .libreswan: return try Libreswan.start(in: namespace, host: host, configuration: configuration, options: libreswan)
        }
    }

    public var description: String { "\(kind) on \(host)" + (installation.map { " from \($0)" } ?? "") }
}

/// Two daemons and the tunnel they negotiated: the initiator's and the responder's view of one
/// IKE SA with its child SA.
public final class IKETunnel: @unchecked Sendable, CustomStringConvertible {
    /// Where the time went between `up` and a tunnel both ends call established.
    public struct Timings: Sendable, CustomStringConvertible {
        /// Both daemons started (in parallel), configuration loaded.
        public var started: Double
        /// From the initiator's first request to both ends reporting the child SA installed.
        public var negotiated: Double
        public var total: Double { started + negotiated }
        public var description: String {
            String(format: "up in %.0f ms (daemons started %.0f ms, negotiated %.0f ms)", total * 1000, started * 1000, negotiated * 1000)
        }
    }

    public let initiator: any IKEDaemon
    public let responder: any IKEDaemon
    public let timings: Timings
    /// The SAs each end reported when the tunnel was declared up.
    public let initiatorSA: IKESAStatus
    public let responderSA: IKESAStatus
    private var ended = false

    private init(initiator: any IKEDaemon, responder: any IKEDaemon, timings: Timings, initiatorSA: IKESAStatus, responderSA: IKESAStatus) {
        self.initiator = initiator
        self.responder = responder
        self.timings = timings
        self.initiatorSA = initiatorSA
        self.responderSA = responderSA
    }

    public var description: String {
        "\(initiator.kind) \(initiator.host) → \(responder.kind) \(responder.host) (\(initiator.configuration.style), \(initiator.configuration.family))"
    }

    /// Starts both daemons, has `initiator` initiate, and returns once both ends report the IKE
    /// SA established and the child SA installed. On failure (a daemon that does not start, a
    /// refused proposal or key, a timeout) both daemons are stopped and removed first, and the
    /// error carries both daemons' logs.
    public static func up(initiator: (spec: DaemonSpec, namespace: Namespace), responder: (spec: DaemonSpec, namespace: Namespace),
                          timeout: Double = 30) throws -> IKETunnel {
        let begin = Date()
        let specs = [initiator, responder]
        // Both start at once: pluto's start-up (NSS, self-tests, its addconn helper) is the
        // slow part, and charon's need not wait for it.
        let lock = NSLock()
        nonisolated(unsafe) var started: [(any IKEDaemon)?] = [nil, nil]
        nonisolated(unsafe) var failures: [Error?] = [nil, nil]
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let outcome = Result { try specs[i].spec.start(in: specs[i].namespace) }
            lock.lock()
            switch outcome {
            case .success(let d): started[i] = d
            case .failure(let e): failures[i] = e
            }
            lock.unlock()
        }
        func stopAll() { for d in started { _ = try? d?.stop() } }
        if let failure = failures.compactMap({ $0 }).first {
            stopAll()
            throw failure
        }
        let (left, right) = (started[0]!, started[1]!)
        let startedAt = Date()
        let deadline = begin.addingTimeInterval(timeout)
        do {
            try left.initiate(timeout: max(1, deadline.timeIntervalSinceNow))
            let leftSA = try left.waitEstablished(timeout: max(0.5, deadline.timeIntervalSinceNow))
            let rightSA = try right.waitEstablished(timeout: max(0.5, deadline.timeIntervalSinceNow))
            let timings = Timings(started: startedAt.timeIntervalSince(begin), negotiated: Date().timeIntervalSince(startedAt))
            return IKETunnel(initiator: left, responder: right, timings: timings, initiatorSA: leftSA, responderSA: rightSA)
        } catch let e as DaemonError {
            // The responder's log often holds the reason (a key that did not match, a proposal it
            // refused); the initiator's holds the notify it got back.
            var logs = e.logs
            for d in [left, right] where !logs.contains(where: { $0.title.hasPrefix(d.namespace.name + " ") }) {
                logs += d.instance.logExcerpts()
            }
            stopAll()
            throw DaemonError(e.kind, "IKE tunnel \(left.kind) \(left.host) → \(right.kind) \(right.host): \(e.message)", logs: logs)
        } catch {
            stopAll()
            throw error
        }
    }

    /// Rekeys the child SA from the initiator and waits until both ends have the new one
    /// installed and no other: the old one deleted on both sides. (A responder may keep sending
    /// on the old outbound SA until the old child is deleted; strongSwan does.)
    @discardableResult
    public func rekey(timeout: Double = 30) throws -> (before: ChildSAStatus, after: ChildSAStatus) {
        let deadline = Date().addingTimeInterval(timeout)
        let (before, after) = try initiator.rekeyAndWait(timeout: timeout)
        var seen: [String] = []
        while true {
            let mine = (try? initiator.status())?.flatMap(\.children).filter(\.installed) ?? []
            let theirs = (try? responder.status())?.flatMap(\.children).filter(\.installed) ?? []
            let settled = mine.count == 1 && mine[0].inboundSPI == after.inboundSPI && mine[0].outboundSPI == after.outboundSPI
                && theirs.count == 1 && theirs[0].inboundSPI == after.outboundSPI && theirs[0].outboundSPI == after.inboundSPI
            if settled { return (before, after) }
            seen = ["\(initiator.host): \(mine)", "\(responder.host): \(theirs)"]
            guard Date() < deadline else {
                throw DaemonError(.negotiation, "rekey of \(self): the old child SA \(before) still installed, or the new one \(after) not on both ends, after \(format(timeout)) s (\(seen.joined(separator: "; ")))",
                                  logs: initiator.instance.logExcerpts() + responder.instance.logExcerpts())
            }
            usleep(50_000)
        }
    }

    /// Stops both daemons (and removes their files); returns how each ended. Safe to call twice.
    @discardableResult
    public func down() throws -> [StopReport] {
        guard !ended else { return [] }
        ended = true
        var reports: [StopReport] = []
        var failure: Error?
        for d in [initiator, responder] {
            do { if let r = try d.stop() { reports.append(r) } } catch { failure = failure ?? error }
        }
        if let failure { throw failure }
        return reports
    }
}

extension Lab {
    /// Runs `initiator` and `responder` on their hosts, brings the tunnel up, runs `body` and
    /// always stops both daemons (removing their files) before returning or rethrowing.
    ///
    /// ```swift
    /// let c = try IKEConfiguration.between(lab, "west", "east", subnets: true, style: .xfrmInterface(id: 7))
    /// try await lab.withIKETunnel(DaemonSpec(.strongSwan, host: "west", configuration: c),
    ///                             DaemonSpec(.libreswan, host: "east", configuration: c.mirrored)) { tunnel in … }
    /// ```
    public func withIKETunnel<T>(_ initiator: DaemonSpec, _ responder: DaemonSpec, timeout: Double = 30,
                                 _ body: (IKETunnel) async throws -> T) async throws -> T {
        let tunnel = try IKETunnel.up(initiator: (initiator, try namespace(initiator.host)),
                                      responder: (responder, try namespace(responder.host)), timeout: timeout)
        let result: T
        do {
            result = try await body(tunnel)
        } catch {
            _ = try? tunnel.down()
            throw error
        }
        try tunnel.down()
        return result
    }

    /// Starts one daemon on `spec.host`, runs `body`, always stops it.
    public func withDaemon<T>(_ spec: DaemonSpec, _ body: (any IKEDaemon) async throws -> T) async throws -> T {
        let daemon = try spec.start(in: try namespace(spec.host))
        let result: T
        do {
            result = try await body(daemon)
        } catch {
            _ = try? daemon.stop()
            throw error
        }
        try daemon.stop()
        return result
    }
}
