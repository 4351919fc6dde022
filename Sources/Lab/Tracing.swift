import Probes

extension Lab {
    /// Starts tracing packets at `hooks` in `hosts` (all hosts when empty): nftables log rules
    /// in each namespace and an nfnetlink_log listener for them. End it with `stop()`.
    public func tracer(hosts: [String] = [], hooks: [Hook] = Hook.allCases, priority: String = "mangle + 1",
                       match: String = "meta l4proto != ipv6-icmp") throws -> Tracer {
        let chosen = hosts.isEmpty ? hostNames : hosts
        let points = try chosen.map { host in
            let ns = try namespace(host)
            var names = Dictionary(uniqueKeysWithValues: plan.devices.filter { $0.namespace == host }.map { ($0.index, $0.name) } + [(1, "lo")])
            // Devices made after bring-up (tunnel devices, a scenario's own) are named by the kernel.
            for link in try ns.route.links(namespace: ns.name) where names[link.index] == nil { names[link.index] = link.name }
            return Tracer.Point(host: host, namespace: ns, interfaceNames: names)
        }
        return try Tracer(points: points, hooks: hooks, priority: priority, match: match)
    }

    /// Traces what `action` sends, then removes the log rules.
    public func trace<T>(hosts: [String] = [], hooks: [Hook] = Hook.allCases, _ action: () throws -> T) throws -> (result: T, trace: Trace) {
        let t = try tracer(hosts: hosts, hooks: hooks)
        defer { t.stop() }
        var (result, trace) = try t.capture(action)
        trace.links = links
        return (result, trace)
    }

    /// Which interfaces share a network, for `Trace.links`: "west eth1" → ["east eth1", "nic eth1"].
    public var links: [String: [String]] {
        var out: [String: [String]] = [:]
        for n in topology.networks {
            let ends = n.members.map { "\($0.host) \($0.interface)" }
            for e in ends { out[e, default: []] += ends.filter { $0 != e } }
        }
        return out
    }
}
