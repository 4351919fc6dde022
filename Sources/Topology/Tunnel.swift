/// A static-keyed IPsec tunnel between two hosts (the `tunnels:` section): ESP in tunnel mode
/// between the endpoints' outer `address`es, protecting traffic between their `subnets`.
/// Keys and SPIs are not in the file: they are generated for every run and never logged.
///
/// Three ways to tie traffic to the tunnel:
/// - `policy`: XFRM policies select the subnets' traffic (only packets with `mark`, when given);
/// - `vti`: a VTI device per endpoint; traffic routed into it takes the tunnel (`mark` is the VTI key);
/// - `xfrmi`: an xfrm interface per endpoint with `if_id`; traffic routed into it takes the tunnel.
public struct Tunnel: Hashable, Sendable, Codable {
    public enum Style: String, Hashable, Sendable, Codable, CaseIterable {
        case policy, vti, xfrmi
    }

    public enum Algorithm: String, Hashable, Sendable, Codable, CaseIterable {
        /// ESP with `rfc4106(gcm(aes))`, 128-bit key and 128-bit ICV.
        case aead
        /// ESP with `cbc(aes)` (128-bit key) and `hmac(sha256)` truncated to 128 bits.
        case cbcHMAC = "cbc-hmac"
    }

    public enum Encapsulation: String, Hashable, Sendable, Codable, CaseIterable {
        /// ESP in UDP on port 4500 (NAT traversal).
        case udp
    }

    /// An IKE daemon that negotiates the tunnel instead of static keys (`ike:` on each end).
    public enum IKEDaemon: String, Hashable, Sendable, Codable, CaseIterable {
        case strongswan, libreswan
    }

    /// How the daemons of an IKE tunnel authenticate each other (`auth:`): a random PSK per
    /// run, or certificates from a CA made for the run.
    public enum Authentication: String, Hashable, Sendable, Codable, CaseIterable {
        case psk, certificates
    }

    /// One end of the tunnel.
    public struct Endpoint: Hashable, Sendable, Codable {
        public var host: String
        /// The outer address (one of the host's addresses).
        public var address: IPAddress
        /// The inner traffic this end protects.
        public var subnets: [CIDR]
        /// The VTI or xfrm device for `vti` and `xfrmi` styles.
        public var device: String?
        /// The IKE daemon on this end; nil for a static-keyed tunnel.
        public var ike: IKEDaemon?
        /// Where that daemon comes from (`ike-from:`, an absolute path): a root filesystem of
        /// another release or a user's build, or its install prefix; nil: this machine's.
        public var ikeFrom: String?
        public var location: SourceLocation?

        public init(host: String, address: IPAddress, subnets: [CIDR], device: String? = nil,
                    ike: IKEDaemon? = nil, ikeFrom: String? = nil, location: SourceLocation? = nil) {
            self.host = host
            self.address = address
            self.subnets = subnets
            self.device = device
            self.ike = ike
            self.ikeFrom = ikeFrom
            self.location = location
        }
    }

    public var name: String
    public var style: Style
    public var left: Endpoint
    public var right: Endpoint
    /// `policy`: the XFRM mark of the outbound policies and SAs (packets must carry it);
    /// `vti`: the VTI key (ikey = okey), and so the mark of its policies and SAs.
    public var mark: Mark?
    /// `xfrmi`: the if_id of the devices, policies and SAs.
    public var interfaceID: UInt32?
    public var algorithm: Algorithm
    public var encapsulation: Encapsulation?
    /// The reqid tying policies to SAs; unique per tunnel in the file.
    public var reqid: UInt32
    /// For an IKE tunnel (both ends have `ike:`).
    public var authentication: Authentication
    public var location: SourceLocation?

    /// Negotiated by IKE daemons (the Daemons module starts them), not installed with static keys.
    public var usesIKE: Bool { left.ike != nil && right.ike != nil }

    public init(name: String, style: Style, left: Endpoint, right: Endpoint, mark: Mark? = nil,
                interfaceID: UInt32? = nil, algorithm: Algorithm = .aead, encapsulation: Encapsulation? = nil,
                reqid: UInt32 = 1, authentication: Authentication = .psk, location: SourceLocation? = nil) {
        self.name = name
        self.style = style
        self.left = left
        self.right = right
        self.mark = mark
        self.interfaceID = interfaceID
        self.algorithm = algorithm
        self.encapsulation = encapsulation
        self.reqid = reqid
        self.authentication = authentication
        self.location = location
    }

    /// The inner families: those both ends have subnets of.
    public var families: [IPAddress.Family] {
        [.ipv4, .ipv6].filter { f in left.subnets.contains { $0.family == f } && right.subnets.contains { $0.family == f } }
    }

    /// The endpoint on `host`, and the one across from it.
    public func ends(from host: String) -> (local: Endpoint, remote: Endpoint)? {
        if left.host == host { return (left, right) }
        if right.host == host { return (right, left) }
        return nil
    }

    /// The device name an endpoint gets in the `vti` and `xfrmi` styles: its `device`, or
    /// `vti-NAME` / `xfrm-NAME`.
    public func deviceName(of end: Endpoint) -> String? {
        end.device ?? Tunnel.defaultDevice(style: style, name: name, ike: usesIKE, interfaceID: interfaceID)
    }

    /// The device an end gets when the file names none: `vti-NAME`/`xfrm-NAME`, or for an IKE
    /// tunnel the daemons' own names (`vti1`, libreswan's `ipsec<if_id>`; see Daemons' ConnectionStyle).
    static func defaultDevice(style: Style, name: String, ike: Bool, interfaceID: UInt32?) -> String? {
        switch style {
        case .policy: return nil
        case .vti: return ike ? "vti1" : "vti-" + name
        case .xfrmi: return ike ? "ipsec\(interfaceID ?? 1)" : "xfrm-" + name
        }
    }
}
