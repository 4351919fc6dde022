import Foundation
import Glibc
import Lab
import Topology

/// One end of an IKE connection.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// The lab host (for messages).
    public var host: String
    /// The outer address IKE and ESP use.
    public var address: IPAddress
    /// The IKE identity; the address when nil.
    public var identity: String?
    /// The networks behind this end. Empty: host-to-host (the address itself).
    public var subnets: [CIDR]

    public init(host: String, address: IPAddress, identity: String? = nil, subnets: [CIDR] = []) {
        self.host = host
        self.address = address
        self.identity = identity
        self.subnets = subnets
    }

    public var id: String { identity ?? address.description }
    /// The traffic selectors: the subnets, or the address alone.
    public var trafficSelectors: [CIDR] {
        subnets.isEmpty ? [CIDR(address: address, prefixLength: address.bitCount)] : subnets
    }
    public var description: String {
        "\(host) \(address)" + (subnets.isEmpty ? "" : " (\(subnets.map(\.description).joined(separator: ", ")))")
    }
}

/// How traffic is chosen for the tunnel.
public enum ConnectionStyle: Sendable, Hashable, CustomStringConvertible {
    /// Policy-based: the XFRM policies of the traffic selectors decide.
    case policy
    /// Policy-based, but the outbound policy and SA carry `mark`: only traffic marked so (with
    /// `SO_MARK`, nftables …) enters the tunnel, in each direction.
    /// strongSwan `mark_out`, libreswan `mark-out=`.
    case markedPolicy(mark: UInt32)
    /// Route-based through a VTI device whose ikey/okey is `key` (policies and SAs marked `key`).
    /// strongSwan: `mark_in`/`mark_out` with a VTI device XfrmLab makes beforehand; libreswan:
    /// `mark=` and `vti-interface=`, whose updown script makes the device and its routes.
    case vti(key: UInt32, device: String = "vti1")
    /// Route-based through the xfrm interface `ipsec<id>` with if_id `id`. strongSwan:
    /// `if_id_in`/`if_id_out` with a device XfrmLab makes beforehand; libreswan:
    /// `ipsec-interface=<id>`, which makes the device itself.
    case xfrmInterface(id: UInt32)

    public var name: String {
        switch self {
        case .policy: return "policy"
        case .markedPolicy: return "marked-policy"
        case .vti: return "vti"
        case .xfrmInterface: return "xfrmi"
        }
    }

    /// The tunnel device of a route-based style.
    public var device: String? {
        switch self {
        case .vti(_, let device): return device
        case .xfrmInterface(let id): return "ipsec\(id)"
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .policy: return "policy-based"
        case .markedPolicy(let mark): return "policy-based, mark 0x\(String(mark, radix: 16))"
        case .vti(let key, let device): return "VTI \(device) key 0x\(String(key, radix: 16))"
        case .xfrmInterface(let id): return "xfrm interface ipsec\(id) if_id 0x\(String(id, radix: 16))"
        }
    }
}

/// A pre-shared key. Its description never shows it: it must not reach logs or reports.
public struct Secret: Sendable, Hashable, CustomStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }

    /// 40 random letters and digits (about 238 bits): safe inside double quotes in both
    /// daemons' secrets files.
    public static func random() -> Secret {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return Secret(String((0..<40).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &generator)] }))
    }

    public var description: String { "<secret, \(value.count) characters>" }
}

/// How the two ends prove who they are.
public enum Authentication: Sendable, CustomStringConvertible {
    case psk(Secret)
    /// X.509 certificates from a per-run CA (`CertificateAuthority`), by the endpoints' identities.
    case certificates(CertificateAuthority)

    public var description: String {
        switch self {
        case .psk(let s): return "PSK \(s)"
        case .certificates(let ca): return "certificates of \(ca)"
        }
    }
}

/// An IKE or ESP proposal in neutral terms, written in each daemon's own syntax.
public struct Proposal: Sendable, Hashable, CustomStringConvertible {
    public enum Cipher: String, Sendable, Hashable { case aes128, aes256, aes128gcm16, aes256gcm16 }
    public enum Integrity: String, Sendable, Hashable { case sha256, sha384, sha512 }
    public enum Group: String, Sendable, Hashable { case modp2048, modp3072, ecp256, ecp384, curve25519 }

    public var cipher: Cipher
    /// The integrity algorithm (for IKE with an AEAD cipher: the PRF). None for ESP with AEAD.
    public var integrity: Integrity?
    /// IKE: the key exchange. ESP: the PFS group of the CREATE_CHILD_SA exchanges that rekey
    /// the child SA (nil: no PFS). The two daemons must agree on it: libreswan wants PFS by
    /// default and answers a rekey without a KE payload with NO_PROPOSAL_CHOSEN.
    public var group: Group?

    public init(_ cipher: Cipher, _ integrity: Integrity? = nil, _ group: Group? = nil) {
        self.cipher = cipher
        self.integrity = integrity
        self.group = group
    }

    public static let defaultIKE = Proposal(.aes128, .sha256, .modp2048)
    public static let defaultESP = Proposal(.aes128gcm16, nil, .modp2048)

    var isAEAD: Bool { cipher == .aes128gcm16 || cipher == .aes256gcm16 }

    /// `aes128-sha256-modp2048`, `aes128gcm16-prfsha256-ecp256`, `aes128gcm16-modp2048` (ESP with PFS).
    public var strongSwan: String {
        var parts = [cipher.rawValue]
        if let integrity { parts.append(isAEAD ? "prf" + integrity.rawValue : integrity.rawValue) }
        if let group { parts.append(group.rawValue) }
        return parts.joined(separator: "-")
    }

    /// `aes128-sha2_256;modp2048`, `aes_gcm128-sha2_256;dh19`, `aes_gcm128;modp2048` (ESP with PFS).
    public var libreswan: String {
        let c: String
        switch cipher {
        case .aes128: c = "aes128"
        case .aes256: c = "aes256"
        case .aes128gcm16: c = "aes_gcm128"
        case .aes256gcm16: c = "aes_gcm256"
        }
        var s = c
        if let integrity { s += "-sha2_" + integrity.rawValue.dropFirst(3) }
        if let group {
            let g: String
            switch group {
            case .modp2048: g = "modp2048"
            case .modp3072: g = "modp3072"
            case .ecp256: g = "dh19"
            case .ecp384: g = "dh20"
            case .curve25519: g = "dh31"
            }
            s += ";" + g
        }
        return s
    }

    public var description: String { strongSwan }
}

/// What one daemon is told: one IKEv2 connection from its own point of view.
public struct IKEConfiguration: Sendable, CustomStringConvertible {
    /// The connection's name (swanctl connection and child, libreswan conn).
    public var name: String
    public var local: Endpoint
    public var remote: Endpoint
    public var style: ConnectionStyle
    public var authentication: Authentication
    public var ike: [Proposal]
    public var esp: [Proposal]
    /// The mark the kernel gives the packets the outbound SA made (XFRMA_SET_MARK with its mask:
    /// the ESP leaving this end), so that a rule routes them (`fwmark … lookup`), not the
    /// cleartext's route. strongSwan `set_mark_out`; libreswan has no such option (refused).
    public var outputMark: Mark?
    /// The mark the kernel gives what the inbound SA decrypted (strongSwan `set_mark_in`).
    public var inputMark: Mark?

    public init(name: String = "xfrmlab", local: Endpoint, remote: Endpoint, style: ConnectionStyle = .policy,
                authentication: Authentication = .psk(.random()), ike: [Proposal] = [.defaultIKE], esp: [Proposal] = [.defaultESP]) {
        self.name = name
        self.local = local
        self.remote = remote
        self.style = style
        self.authentication = authentication
        self.ike = ike
        self.esp = esp
    }

    /// The same connection as the peer sees it.
    public var mirrored: IKEConfiguration {
        var m = self
        m.local = remote
        m.remote = local
        return m
    }

    public var family: IPAddress.Family { local.address.family }

    /// Refuses what no daemon could make sense of, before anything is written.
    func validate() throws {
        guard local.address.family == remote.address.family else {
            throw DaemonError(.configuration, "\(name): \(local.address) and \(remote.address) are not of one family")
        }
        guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw DaemonError(.configuration, "connection name \"\(name)\": letters, digits, - and _ only")
        }
        if style.device != nil && (local.subnets.isEmpty || remote.subnets.isEmpty) {
            throw DaemonError(.configuration, "\(name): a \(style.name) tunnel needs subnets on both ends (routes to the peer's own address through the tunnel would carry IKE into it)")
        }
        for m in [outputMark, inputMark].compactMap({ $0 }) where m.value & ~m.mask != 0 {
            throw DaemonError(.configuration, "\(name): SA mark \(m): the value has bits outside its mask")
        }
        guard !ike.isEmpty, !esp.isEmpty else { throw DaemonError(.configuration, "\(name): no proposals") }
    }

    public var description: String {
        "\(name): \(local) ⇄ \(remote), \(style), \(authentication), IKE \(ike.map(\.description).joined(separator: ",")), ESP \(esp.map(\.description).joined(separator: ","))"
    }
}

extension IKEConfiguration {
    /// A connection between two hosts of a lab, over their addresses of `family` on
    /// `interface`, from `local`'s point of view. With `subnets`, the traffic selectors are the
    /// hosts' other networks of that family (their private LANs); without, host-to-host.
    public static func between(_ lab: Lab, _ local: String, _ remote: String, family: IPAddress.Family = .ipv4,
                               interface: String = "eth1", subnets: Bool = false, style: ConnectionStyle = .policy,
                               authentication: Authentication = .psk(.random()), name: String = "xfrmlab") throws -> IKEConfiguration {
        func endpoint(_ host: String) throws -> Endpoint {
            let address = try lab.address(of: host, interface: interface, family: family)
            var nets: [CIDR] = []
            if subnets {
                for network in lab.topology.networks {
                    guard network.members.contains(where: { $0.host == host && $0.interface != interface }),
                          let subnet = network.subnets.first(where: { $0.family == family }) else { continue }
                    nets.append(subnet.network)
                }
                guard !nets.isEmpty else { throw DaemonError(.configuration, "host \(host) has no \(family) network besides \(interface)") }
            }
            return Endpoint(host: host, address: address, subnets: nets)
        }
        return IKEConfiguration(name: name, local: try endpoint(local), remote: try endpoint(remote), style: style,
                                authentication: authentication)
    }
}

/// `0x10/0xffffffff`, as both daemons write marks.
func markText(_ v: UInt32, mask: UInt32 = .max) -> String { "0x\(String(v, radix: 16))/0x\(String(mask, radix: 16))" }
