import Glibc
import Netlink
import Topology

extension Lab {
    /// Reads every namespace back from the kernel and lists each way it differs from the
    /// topology: a missing or down device, a wrong index, kind or master, a missing address,
    /// route or rule. Empty when the kernel holds exactly what the file asked for.
    public func verify() throws -> [String] {
        var problems: [String] = []
        var snapshots: [String: NamespaceSnapshot] = [:]
        for name in plan.namespaces { snapshots[name] = try snapshot(name) }
        for d in plan.devices {
            let snap = snapshots[d.namespace]!
            guard let link = snap.links.first(where: { $0.name == d.name }) else {
                problems.append("\(d.namespace): no device \(d.name)")
                continue
            }
            if link.index != d.index { problems.append("\(d.namespace): \(d.name) has index \(link.index), planned \(d.index)") }
            if !link.isUp { problems.append("\(d.namespace): \(d.name) is down") }
            let kind: String = d.kind == .bridge ? "bridge" : d.kind.isMacvlan ? "macvlan" : "veth"
            if link.kind != kind { problems.append("\(d.namespace): \(d.name) is \(link.kind ?? "?"), expected \(kind)") }
            if link.master != d.master { problems.append("\(d.namespace): \(d.name) master \(link.master.map(String.init) ?? "none"), expected \(d.master.map(String.init) ?? "none")") }
            for a in d.addresses where !snap.addresses.contains(where: {
                $0.index == d.index && $0.address == a.address.bytes && Int($0.prefixLength) == a.prefixLength
            }) {
                problems.append("\(d.namespace): \(d.name) lacks address \(a)")
            }
        }
        for name in plan.namespaces {
            guard let lo = snapshots[name]!.links.first(where: { $0.index == 1 }), lo.isUp else {
                problems.append("\(name): lo is not up")
                continue
            }
        }
        for host in topology.hosts {
            let snap = snapshots[host.name]!
            for r in host.routes {
                let dst = r.to.network.address.bytes
                let found = snap.routes.contains { k in
                    k.table == r.table.id && Int(k.destinationLength) == r.to.prefixLength
                        && (r.to.prefixLength == 0 || k.destination == dst)
                        && k.gateway == r.via?.bytes
                        && k.typeName == (r.type == .unicast ? "unicast" : r.type.rawValue)
                        && (r.dev == nil || k.outputInterface == plan.index(of: r.dev!, in: host.name))
                }
                if !found { problems.append("\(host.name): no route \(r)") }
            }
            for rule in host.rules {
                let family = rule.family == .ipv6 ? UInt8(AF_INET6) : UInt8(AF_INET)
                let found = snap.rules.contains { k in
                    k.family == family && k.table == rule.table.id && k.invert == rule.invert
                        && (rule.priority == nil || k.priority == rule.priority)
                        && k.fwmark == rule.fwmark?.value
                        && (rule.fwmark == nil || (k.fwmask ?? .max) == rule.fwmark!.mask)
                        && k.inputInterface == rule.iif && k.outputInterface == rule.oif
                        && (rule.from == nil || (k.source == rule.from!.network.address.bytes && Int(k.sourceLength) == rule.from!.prefixLength))
                        && (rule.to == nil || (k.destination == rule.to!.network.address.bytes && Int(k.destinationLength) == rule.to!.prefixLength))
                }
                if !found { problems.append("\(host.name): no \(rule)") }
            }
        }
        return problems
    }
}
