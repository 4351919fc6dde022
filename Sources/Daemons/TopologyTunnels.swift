import Foundation
import Lab
import Topology

/// The `tunnels:` of a topology file whose ends say `ike: strongswan|libreswan`: the lab leaves
/// them out of its static installation, and these start the daemons that negotiate them.
extension IKEDaemonKind {
    public init(_ daemon: Tunnel.IKEDaemon) {
        self = daemon == .strongswan ? .strongSwan : .libreswan
    }
}

extension ConnectionStyle {
    /// The connection style a tunnel's style, mark and if_id ask for.
    public init(_ tunnel: Tunnel) {
        switch tunnel.style {
        case .policy: self = tunnel.mark.map { .markedPolicy(mark: $0.value) } ?? .policy
        case .vti: self = .vti(key: tunnel.mark?.value ?? 1, device: tunnel.deviceName(of: tunnel.left) ?? "vti1")
        case .xfrmi: self = .xfrmInterface(id: tunnel.interfaceID ?? 1)
        }
    }
}

extension IKEConfiguration {
    /// The tunnel from its left end's point of view (the left end initiates): the outer
    /// addresses, the subnets, the style; identities `<host>.xfrmlab.test` with certificates.
    public init(_ tunnel: Tunnel, authentication: Authentication) {
        func endpoint(_ e: Tunnel.Endpoint) -> Endpoint {
            var identity: String?
            if case .certificates = authentication { identity = e.host + ".xfrmlab.test" }
            return Endpoint(host: e.host, address: e.address, identity: identity, subnets: e.subnets)
        }
        self.init(name: tunnel.name.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" },
                  local: endpoint(tunnel.left), remote: endpoint(tunnel.right), style: ConnectionStyle(tunnel),
                  authentication: authentication)
    }
}

/// The IKE tunnels of a lab, up: each tunnel's daemons, and the CAs made for them.
public final class IKETunnels: @unchecked Sendable {
    public let tunnels: [(tunnel: Tunnel, ike: IKETunnel)]
    private var authorities: [CertificateAuthority]

    init(tunnels: [(tunnel: Tunnel, ike: IKETunnel)], authorities: [CertificateAuthority]) {
        self.tunnels = tunnels
        self.authorities = authorities
    }

    /// The daemons of the tunnel named `name`.
    public func tunnel(_ name: String) -> IKETunnel? { tunnels.first { $0.tunnel.name == name }?.ike }

    /// Stops every daemon (removing its files) and the CAs; the first error after trying all.
    public func down() throws {
        var failure: Error?
        for (_, ike) in tunnels.reversed() {
            do { _ = try ike.down() } catch { failure = failure ?? error }
        }
        for ca in authorities { ca.remove() }
        authorities = []
        if let failure { throw failure }
    }
}

extension Lab {
    /// Starts the daemons of every IKE tunnel of the topology, one tunnel after another (the
    /// left end initiates), and returns once each is established. On a failure the tunnels
    /// already up are stopped first, and the error carries the daemons' logs.
    ///
    /// Each end's daemon comes from its `ike-from:`, else from `installations[kind]` (a root or
    /// prefix, as `xfrmlab up --strongswan PATH` gives it), else from this machine.
    public func startIKETunnels(timeout: Double = 60, installations: [IKEDaemonKind: String] = [:]) throws -> IKETunnels {
        var up: [(tunnel: Tunnel, ike: IKETunnel)] = []
        var authorities: [CertificateAuthority] = []
        do {
            for t in topology.tunnels where t.usesIKE {
                let authentication: Authentication
                switch t.authentication {
                case .psk:
                    authentication = .psk(.random())
                case .certificates:
                    let ca = try CertificateAuthority(name: run.prefix + "ca-" + t.name)
                    authorities.append(ca)
                    authentication = .certificates(ca)
                }
                let configuration = IKEConfiguration(t, authentication: authentication)
                let (leftKind, rightKind) = (IKEDaemonKind(t.left.ike!), IKEDaemonKind(t.right.ike!))
                let initiator = DaemonSpec(leftKind, host: t.left.host, configuration: configuration,
                                           installation: t.left.ikeFrom ?? installations[leftKind])
                let responder = DaemonSpec(rightKind, host: t.right.host, configuration: configuration.mirrored,
                                           installation: t.right.ikeFrom ?? installations[rightKind])
                up.append((t, try IKETunnel.up(initiator: (initiator, try namespace(t.left.host)),
                                               responder: (responder, try namespace(t.right.host)), timeout: timeout)))
            }
        } catch {
            try? IKETunnels(tunnels: up, authorities: authorities).down()
            throw error
        }
        return IKETunnels(tunnels: up, authorities: authorities)
    }

    /// `startIKETunnels`, `body`, and the daemons always stopped afterwards.
    public func withIKETunnels<T>(timeout: Double = 60, installations: [IKEDaemonKind: String] = [:],
                                  _ body: (IKETunnels) async throws -> T) async throws -> T {
        let tunnels = try startIKETunnels(timeout: timeout, installations: installations)
        let result: T
        do {
            result = try await body(tunnels)
        } catch {
            try? tunnels.down()
            throw error
        }
        try tunnels.down()
        return result
    }
}
