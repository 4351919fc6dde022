import Foundation
import Glibc
import Namespaces
import Netlink
import Topology
import Xfrm

/// Turns a topology into netlink batches: one per namespace for the links, then one per
/// namespace for loopback, addresses, routes and rules; sysctls and nftables in between.
struct Builder {
    let lab: Lab

    func build(lap: (String) -> Void) throws {
        let plan = lab.plan
        // Phase 1: devices. A veth is created from one end's namespace with its peer placed in
        // the other's, so no device ever exists in the host's namespace.
        var linkBatches: [String: [Request]] = [:]
        for d in plan.devices {
            let ns = try lab.namespace(d.namespace)
            let mtu = d.mtu.map { UInt32($0) }
            switch d.kind {
            case .bridge:
                linkBatches[d.namespace, default: []].append(
                    LinkRequest.bridge(namespace: ns.name, name: d.name, index: d.index, mtu: mtu, origin: d.origin))
            case .veth(let peerNamespace, let peerName, let peerIndex):
                let peer = try lab.namespace(peerNamespace)
                linkBatches[d.namespace, default: []].append(
                    LinkRequest.veth(namespace: ns.name, name: d.name, index: d.index, master: d.master, mtu: mtu,
                                     up: !d.isBarePort,
                                     peerName: peerName, peerIndex: peerIndex, peerNamespaceFD: peer.fd,
                                     peerNamespaceName: peer.name, origin: d.origin))
            case .macvlan(let lowerNamespace, let lower):
                // Made next to its lower device and placed straight into its host.
                linkBatches[lowerNamespace, default: []].append(
                    LinkRequest.macvlan(namespace: try lab.namespace(lowerNamespace).name, name: d.name, index: d.index,
                                        lowerIndex: lower, mtu: mtu, targetNamespaceFD: ns.fd,
                                        targetNamespaceName: ns.name, origin: d.origin))
            case .vethPeer:
                break
            }
        }
        try send(linkBatches)
        lap("links")

        // Sysctls of particular devices (net.ipv4.conf.eth1.rp_filter) once the devices exist.
        for host in lab.topology.hosts {
            let late = Builder.sysctls(of: host).late
            if !late.isEmpty { try lab.namespace(host.name).setSysctls(late) }
        }
        lap("sysctls")

        // Phase 2: loopback, addresses, routes, rules, in that order within each namespace.
        var batches: [String: [Request]] = [:]
        for name in plan.namespaces {
            let ns = try lab.namespace(name)
            batches[name, default: []].append(LinkRequest.set(namespace: ns.name, index: 1, name: "lo", up: true))
        }
        for d in plan.devices {
            let ns = try lab.namespace(d.namespace)
            if d.isBarePort {
                batches[d.namespace, default: []].append(LinkRequest.noLinkLocal(namespace: ns.name, index: d.index, name: d.name))
            }
            if d.kind == .vethPeer || d.kind.isMacvlan || d.isBarePort {
                batches[d.namespace, default: []].append(LinkRequest.set(namespace: ns.name, index: d.index, name: d.name, up: true))
            }
            for a in d.addresses {
                batches[d.namespace, default: []].append(
                    AddressRequest.add(namespace: ns.name, index: d.index, interface: d.name, address: a.address.bytes,
                                       prefixLength: a.prefixLength, origin: d.origin))
            }
        }
        for host in lab.topology.hosts {
            let ns = try lab.namespace(host.name)
            for r in host.routes {
                batches[host.name, default: []].append(try routeRequest(r, host: host.name, namespace: ns.name))
            }
            for rule in host.rules {
                batches[host.name, default: []].append(ruleRequest(rule, namespace: ns.name))
            }
        }
        try send(batches)
        lap("addresses+routes+rules")

        for host in lab.topology.hosts {
            let ruleset = Firewall.ruleset(for: host)
            guard !ruleset.isEmpty else { continue }
            try Firewall.load(ruleset, into: lab.namespace(host.name), origin: host.location?.description)
        }
        lap("nftables")

        // IPsec tunnels once the network they run over is up.
        if lab.topology.tunnels.contains(where: { !$0.usesIKE }) {
            lab.tunnels = try TunnelInstaller.install(lab.topology, namespaces: lab.namespaces)
            lap("tunnels")
        }
    }

    /// Sends each namespace's batch in turn. The kernel handles a netlink message inside the
    /// `sendmsg` that carries it, under one global lock for links, so threads would add
    /// hand-offs and win nothing.
    private func send(_ batches: [String: [Request]]) throws {
        for name in lab.plan.namespaces {
            guard let batch = batches[name] else { continue }
            try lab.namespace(name).route.batch(batch)
        }
    }

    func routeRequest(_ r: Route, host: String, namespace: String) throws -> Request {
        var oif: Int32?
        if let dev = r.dev {
            guard let i = lab.plan.index(of: dev, in: host) else {
                throw LabError("\(r.location?.description ?? host): route \(r) names no interface \(dev) of \(host)")
            }
            oif = i
        }
        let type = RouteRequest.type(named: r.type.rawValue) ?? 1
        return RouteRequest.add(namespace: namespace, destination: r.to.network.address.bytes, prefixLength: r.to.prefixLength,
                                gateway: r.via?.bytes, outputInterface: oif, interfaceName: r.dev,
                                preferredSource: r.src?.bytes, table: r.table.id, type: type, metric: r.metric,
                                summary: (r.to.family == .ipv6 ? "-6 " : "") + "route add \(r)",
                                origin: r.location?.description)
    }

    func ruleRequest(_ rule: Rule, namespace: String) -> Request {
        RuleRequest.add(namespace: namespace, family: rule.family == .ipv6 ? UInt8(AF_INET6) : UInt8(AF_INET),
                        priority: rule.priority, invert: rule.invert,
                        source: rule.from.map { ($0.network.address.bytes, $0.prefixLength) },
                        destination: rule.to.map { ($0.network.address.bytes, $0.prefixLength) },
                        fwmark: rule.fwmark?.value, fwmask: rule.fwmark.map { $0.mask },
                        inputInterface: rule.iif, outputInterface: rule.oif, table: rule.table.id,
                        summary: rule.description.replacingOccurrences(of: "rule ", with: "rule add ", options: .anchored),
                        origin: rule.location?.description)
    }
}
