import Foundation
import Glibc
import Namespaces

/// What charon and pluto have in common once started: the lab host and namespace they serve,
/// the connection, their instance (directory, process, log), the wait for start-up and a stop
/// that happens once. `StrongSwan` and `Libreswan` add how each is configured and driven.
public class IKEDaemonProcess: @unchecked Sendable, CustomStringConvertible {
    public let kind: IKEDaemonKind
    public let host: String
    public let namespace: Namespace
    public let configuration: IKEConfiguration
    public let instance: DaemonInstance
    /// The root filesystem the daemon and its tools run chrooted into; nil: this machine's.
    public let root: DaemonRoot?
    private var stopped = false
    private let lock = NSLock()

    /// Makes the daemon's instance directory (`charon.log`, `pluto.log` … in it); nothing runs yet.
    init(kind: IKEDaemonKind, host: String, namespace: Namespace, configuration: IKEConfiguration, root: DaemonRoot?) throws {
        self.root = root
        self.kind = kind
        self.host = host
        self.namespace = namespace
        self.configuration = configuration
        instance = try DaemonInstance(namespace: namespace, program: kind.program, logName: kind.program + ".log")
    }

    /// `prepare` (files, devices), then the process launched in the namespace (`LANG=C` added to
    /// `environment`), then `ready` (waits until it serves); when any of them throws, whatever was
    /// started is stopped and removed before the error, with the daemon's log, is rethrown.
    func startUp(prepare: () throws -> Void, command: () -> [String], environment: [String: String], ready: () throws -> Void) throws {
        do {
            try prepare()
            try instance.launch(inRoot(command()), environment: environment.merging(["LANG": "C"]) { own, _ in own })
            try ready()
        } catch {
            stopQuietly()
            throw error
        }
    }

    public var description: String { "\(kind) on \(host) (\(namespace.name))" }

    /// `command` (paths as the daemon sees them) as it is run in the lab namespace: as it is
    /// without a root; with one, chrooted in a mount namespace of its own before the daemon runs,
    /// and inside the daemon's mount namespace and root once it does (its control tools).
    func inRoot(_ command: [String]) -> [String] {
        guard let root else { return command }
        if let pid = instance.pid, instance.isRunning { return DaemonRoot.entering(pid, command) }
        return root.command(command, binding: instance.directory)
    }

    /// Polls `ready` every `interval` seconds until it says yes; throws, with the daemon's log,
    /// when the process exits first or `timeout` passes (`waitingFor` says what never came).
    func waitForStartUp(timeout: Double, interval: Double, waitingFor: () -> String, ready: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if try ready() { return }
            guard instance.isRunning else {
                throw DaemonError(.start, "\(self): \(kind.program) exited during start-up (\(instance.exitDescription))",
                                  logs: instance.logExcerpts())
            }
            guard Date() < deadline else {
                throw DaemonError(.start, "\(self): \(waitingFor()) after \(format(timeout)) s", logs: instance.logExcerpts())
            }
            usleep(useconds_t(interval * 1_000_000))
        }
    }

    /// Runs one of the daemon's tools in its namespace; a failure throws `kind` with what the tool printed.
    @discardableResult
    func runTool(_ command: [String], _ what: String, failure kind: DaemonError.Kind, timeout: Double = 30) throws -> ProcessResult {
        let r = try namespace.execute(inRoot(command), timeout: timeout)
        guard r.succeeded else {
            throw DaemonError(kind, "\(self): \(what) failed (exit \(r.status))",
                              logs: [LogExcerpt(title: what, lines: (r.standardOutput + r.standardError).split(separator: "\n").map(String.init))])
        }
        return r
    }

    /// SIGTERM (SIGKILL after `grace` seconds), waits, runs `afterExit` (for what the harness made
    /// for the daemon), removes the directory and checks nothing is left. Once: later calls return nil.
    func stopOnce(grace: Double, afterExit: () -> Void = {}) throws -> StopReport? {
        lock.lock()
        defer { lock.unlock() }
        guard !stopped else { return nil }
        stopped = true
        let report = instance.terminate(grace: grace)
        afterExit()
        instance.remove()
        let left = instance.leftovers()
        guard left.isEmpty else { throw DaemonError(.stop, "\(self): not cleanly stopped: \(left.joined(separator: "; "))") }
        return report
    }

    /// Ends the daemon (see `IKEDaemon.stop()`); each daemon says how long its grace is and
    /// what else goes.
    @discardableResult
    public func stop() throws -> StopReport? { try stopOnce(grace: 5) }

    /// For start-up failures: stop whatever was started before the error is thrown.
    func stopQuietly() { _ = try? stop() }
}
