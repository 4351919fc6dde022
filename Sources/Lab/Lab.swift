import Foundation
import Glibc
import Logging
import Namespaces
import Netlink
import Topology
import Xfrm

/// How to bring a lab up.
public struct LabOptions: Sendable {
    /// Wait for the kernel to confirm every namespace is freed at teardown.
    public var verifyRelease: Bool = true
    /// How long teardown waits for that confirmation.
    public var releaseTimeout: Double = 30
    public init(verifyRelease: Bool = true, releaseTimeout: Double = 30) {
        self.verifyRelease = verifyRelease
        self.releaseTimeout = releaseTimeout
    }
}

/// A topology brought up in namespaces of its own: the live handle tests and the CLI use.
///
/// Prefer `topology.withLab { lab in … }`, which always tears down. A `Lab` made with `up`
/// must be ended with `down()`; if the process dies first, `xfrmlab gc` removes what is left.
public final class Lab: @unchecked Sendable {
    public let topology: Topology
    public let run: Run
    /// Host (or switch) name → its namespace.
    public private(set) var namespaces: [String: Namespace]
    let plan: Plan
    public let logger: Logger
    private var ended = false
    public let options: LabOptions
    /// The kernel log from bring-up on.
    let kernelLog = KernelLog()
    /// Kernel warnings seen between bring-up and teardown (filled by `down()`).
    public private(set) var kernelWarnings: [String] = []
    /// The topology's IPsec tunnels as installed (SPIs, devices, UDP encapsulation sockets).
    public internal(set) var tunnels: InstalledTunnels?
    /// Seconds the bring-up took, by phase.
    public private(set) var timings: [(phase: String, seconds: Double)] = []

    private init(topology: Topology, run: Run, namespaces: [String: Namespace], plan: Plan, options: LabOptions, logger: Logger) {
        self.topology = topology
        self.run = run
        self.namespaces = namespaces
        self.plan = plan
        self.options = options
        self.logger = logger
    }

    // MARK: - Lookups

    /// The namespace of a host (or a switch, `_sw-NETWORK`).
    public func namespace(_ host: String) throws -> Namespace {
        guard let ns = namespaces[host] else {
            throw LabError("no host \"\(host)\" in topology \(topology.name) (hosts: \(topology.hosts.map(\.name).joined(separator: ", ")))")
        }
        return ns
    }

    /// The kernel interface index of `interface` on `host`.
    public func index(of interface: String, on host: String) throws -> Int32 {
        guard let i = plan.index(of: interface, in: host) else {
            throw LabError("host \(host) has no interface \(interface)")
        }
        return i
    }

    /// The interface name for an index on `host` (as planned), or nil.
    public func interfaceName(index: Int32, on host: String) -> String? {
        if index == 1 { return "lo" }
        return plan.devices.first { $0.namespace == host && $0.index == index }?.name
    }

    /// The first address of `family` that `host` has on `interface` (or on any interface).
    public func address(of host: String, interface: String? = nil, family: IPAddress.Family = .ipv4) throws -> IPAddress {
        let found = topology.networks.flatMap(\.members)
            .filter { $0.host == host && (interface == nil || $0.interface == interface) }
            .flatMap(\.addresses).first { $0.family == family }
        guard let found else { throw LabError("host \(host) has no \(family) address\(interface.map { " on \($0)" } ?? "")") }
        return found.address
    }

    /// Host names in topology order.
    public var hostNames: [String] { topology.hosts.map(\.name) }

    // MARK: - Up

    /// Written in every namespace before its devices exist. Without DAD, IPv6 addresses
    /// (link-local ones too) are usable at once: a router whose link-local address is still
    /// tentative sends no neighbour solicitation, so forwarded IPv6 would stall for seconds.
    public static let baseSysctls: [(key: String, value: String)] = [
        ("net.ipv6.conf.all.accept_dad", "0"), ("net.ipv6.conf.default.accept_dad", "0"),
    ]

    /// Brings a topology up: namespaces, links, addresses, routes, rules, sysctls, NAT.
    /// On any failure everything made so far is removed before the error is thrown.
    public static func up(_ topology: Topology, options: LabOptions = LabOptions(),
                          logger: Logger = Logger(label: "xfrmlab.lab")) throws -> Lab {
        var timings: [(String, Double)] = []
        var clock = Date()
        func lap(_ phase: String) {
            let now = Date()
            timings.append((phase, now.timeIntervalSince(clock)))
            clock = now
        }
        let plan = Plan(topology)
        let run = try Run(topology: topology.name, topologyFile: topology.source,
                          namespaces: Dictionary(uniqueKeysWithValues: plan.namespaces.map { ($0, $0) }))
        lap("run")
        // Sysctls that need no device go in while each namespace is made: one trip, not two.
        let early = plan.namespaces.map { name -> [(key: String, value: String)] in
            baseSysctls + (topology.host(named: name).map { Builder.sysctls(of: $0).early } ?? [])
        }
        let created: [Namespace]
        do {
            let owners = plan.namespaces.map { name in
                topology.host(named: name)?.userNamespace.map { UserNamespaceOwner(uid: $0, gid: $0) }
            }
            created = try Namespace.create(names: plan.namespaces.map { run.namespaceName(for: $0) }, sysctls: early, owners: owners)
        } catch {
            run.finish()
            throw error
        }
        lap("namespaces")
        var map: [String: Namespace] = [:]
        for (host, ns) in zip(plan.namespaces, created) { map[host] = ns }
        let lab = Lab(topology: topology, run: run, namespaces: map, plan: plan, options: options, logger: logger)
        do {
            try Builder(lab: lab).build(lap: lap)
        } catch {
            logger.error("bring-up failed, removing what was made: \(error)")
            _ = try? lab.down()
            throw error
        }
        lab.timings = timings
        return lab
    }

    /// Re-attaches to a run left up by `xfrmlab up` (for `show`, `exec`, `down`).
    public static func attach(run: Run, topology: Topology, logger: Logger = Logger(label: "xfrmlab.lab")) throws -> Lab {
        let plan = Plan(topology)
        var map: [String: Namespace] = [:]
        for ns in plan.namespaces {
            map[ns] = try Namespace.open(name: run.namespaceName(for: ns))
        }
        return Lab(topology: topology, run: run, namespaces: map, plan: plan, options: LabOptions(), logger: logger)
    }

    // MARK: - Down

    /// Deletes every namespace of the run and, unless told otherwise, waits until the kernel
    /// confirms they are freed. Safe to call twice.
    @discardableResult
    public func down() throws -> ReleaseReport? {
        guard !ended else { return nil }
        ended = true
        // UDP encapsulation sockets hold their namespaces alive: close them first.
        tunnels?.close()
        let all = Array(namespaces.values)
        namespaces = [:]
        defer {
            run.finish()
            kernelWarnings += kernelLog?.problems() ?? []
        }
        if options.verifyRelease {
            return try NamespaceReaper.delete(all, timeout: options.releaseTimeout)
        }
        for ns in all { ns.delete() }
        return nil
    }

    /// Leaves the lab up after this process exits (for `xfrmlab up`).
    public func detach() throws {
        try run.detach()
        ended = true
    }
}

extension Topology {
    /// Brings the topology up, runs `body`, and always tears it down.
    ///
    /// ```swift
    /// try await Topology.load(path: "Topologies/north-east-west.yaml").withLab { lab in … }
    /// ```
    public func withLab<T>(_ options: LabOptions = LabOptions(), _ body: (Lab) async throws -> T) async throws -> T {
        let lab = try Lab.up(self, options: options)
        let result: T
        do {
            result = try await body(lab)
        } catch {
            _ = try? lab.down()
            throw error
        }
        try lab.down()
        // A splat or a leaked reference during the lab fails it, as in netdev CI.
        if !lab.kernelWarnings.isEmpty {
            throw LabError("the kernel logged warnings while lab \(lab.run.id) was up:\n" + lab.kernelWarnings.joined(separator: "\n"))
        }
        return result
    }
}
