import Topology

/// Every device the builder will make, with the interface index it asks the kernel for.
///
/// Choosing indexes up front lets each namespace's addresses, routes and rules go out in one
/// batch right after the links, without reading indexes back.
struct Plan {
    enum Kind: Equatable {
        /// A bridge (for a network of one member, or the shared segment of a larger one).
        case bridge
        /// One end of a veth pair; the pair is created from the end where `createsPair` is set.
        case veth(peerNamespace: String, peerName: String, peerIndex: Int32)
        /// The peer end of a pair created elsewhere.
        case vethPeer
        /// A macvlan (bridge mode) on `lower` in `lowerNamespace`, created there and placed here.
        case macvlan(lowerNamespace: String, lower: Int32)
    }

    struct Device {
        var namespace: String   // host name, or a switch name
        var name: String
        var index: Int32
        var kind: Kind
        var master: Int32?
        var mtu: Int?
        var addresses: [CIDR]
        var origin: String?
    }

    /// Namespaces in creation order: hosts first, then switches.
    var namespaces: [String] = []
    var devices: [Device] = []
    private var nextIndex: [String: Int32] = [:]

    static func switchName(for network: String) -> String { "_sw-" + network }

    /// The first interface index planned in each namespace. The kernel numbers the devices it
    /// makes itself (loopback, and the fallback devices ip_vti0, ip6tnl0 … that a tunnel module
    /// adds to every namespace, also to existing ones when it is loaded mid-run) upwards from 1;
    /// planning from 1000 keeps the two ranges apart without reading anything back.
    let firstIndex: Int32
    static let defaultFirstIndex: Int32 = 1000

    init(_ topology: Topology, firstIndex: Int32 = Plan.defaultFirstIndex) {
        self.firstIndex = firstIndex
        namespaces = topology.hosts.map(\.name)
        for network in topology.networks {
            let origin = network.location?.description
            let members = network.members
            if network.kind == .macvlan {
                // The lower device is a port-less bridge in a switch namespace: a macvlan cannot
                // reach its lower device's own stack, so no member may own it.
                let switchNamespace = Plan.switchName(for: network.name)
                namespaces.append(switchNamespace)
                let lowerIndex = allocate(switchNamespace)
                add(Device(namespace: switchNamespace, name: "br0", index: lowerIndex, kind: .bridge,
                           mtu: network.mtu, addresses: [], origin: origin))
                for m in members {
                    // Made in the switch namespace and moved: some kernels (6.1) check the index
                    // there too, so take one free in both.
                    add(Device(namespace: m.host, name: m.interface, index: allocate(m.host, alsoFreeIn: switchNamespace),
                               kind: .macvlan(lowerNamespace: switchNamespace, lower: lowerIndex),
                               mtu: network.mtu, addresses: m.addresses, origin: m.location?.description ?? origin))
                }
            } else if members.count == 1 {
                let m = members[0]
                add(Device(namespace: m.host, name: m.interface, index: allocate(m.host), kind: .bridge,
                           mtu: network.mtu, addresses: m.addresses, origin: m.location?.description ?? origin))
            } else if members.count == 2 {
                let (a, b) = (members[0], members[1])
                let ia = allocate(a.host), ib = allocate(b.host)
                add(Device(namespace: a.host, name: a.interface, index: ia,
                           kind: .veth(peerNamespace: b.host, peerName: b.interface, peerIndex: ib),
                           mtu: network.mtu, addresses: a.addresses, origin: a.location?.description ?? origin))
                add(Device(namespace: b.host, name: b.interface, index: ib, kind: .vethPeer,
                           mtu: network.mtu, addresses: b.addresses, origin: b.location?.description ?? origin))
            } else if members.count > 2 {
                // The bridge lives in the `bridge:` member (its interface is the bridge), or in
                // a switch namespace of its own.
                let owner = network.bridge.flatMap { name in members.first { $0.host == name } }
                let switchNamespace = owner?.host ?? Plan.switchName(for: network.name)
                if owner == nil { namespaces.append(switchNamespace) }
                let bridgeName = owner?.interface ?? "br0"
                let bridgeIndex = allocate(switchNamespace)
                add(Device(namespace: switchNamespace, name: bridgeName, index: bridgeIndex, kind: .bridge,
                           mtu: network.mtu, addresses: owner?.addresses ?? [], origin: owner?.location?.description ?? origin))
                var port = 0
                for m in members where m.host != owner?.host {
                    port += 1
                    let suffix = "-p\(port)"
                    let portName = String(bridgeName.prefix(15 - suffix.count)) + suffix
                    let portIndex = allocate(switchNamespace), memberIndex = allocate(m.host)
                    add(Device(namespace: switchNamespace, name: portName, index: portIndex,
                               kind: .veth(peerNamespace: m.host, peerName: m.interface, peerIndex: memberIndex),
                               master: bridgeIndex, mtu: network.mtu, addresses: [], origin: m.location?.description ?? origin))
                    add(Device(namespace: m.host, name: m.interface, index: memberIndex, kind: .vethPeer,
                               mtu: network.mtu, addresses: m.addresses, origin: m.location?.description ?? origin))
                }
            }
        }
    }

    private mutating func allocate(_ namespace: String, alsoFreeIn other: String) -> Int32 {
        let i = max(nextIndex[namespace, default: firstIndex], nextIndex[other, default: firstIndex])
        nextIndex[namespace] = i + 1
        nextIndex[other] = i + 1
        return i
    }

    private mutating func allocate(_ namespace: String) -> Int32 {
        // Index 1 is the namespace's loopback.
        let i = nextIndex[namespace, default: firstIndex]
        nextIndex[namespace] = i + 1
        return i
    }

    private mutating func add(_ d: Device) { devices.append(d) }

    func index(of interface: String, in namespace: String) -> Int32? {
        if interface == "lo" { return 1 }
        return devices.first { $0.namespace == namespace && $0.name == interface }?.index
    }
}

extension Plan.Device {
    /// A bridge port with no address of its own: it needs no IPv6 link-local address.
    var isBarePort: Bool { master != nil && addresses.isEmpty }
}

extension Plan.Kind {
    var isMacvlan: Bool {
        if case .macvlan = self { return true }
        return false
    }
}
