import Foundation
import Glibc
import Namespaces
import Netlink
import Topology

/// strongSwan's charon (`charon-systemd`) in a lab namespace, with its own strongswan.conf
/// (through `STRONGSWAN_CONF`, so /etc/strongswan.conf is never read), swanctl.conf, vici
/// socket and log under its instance directory, configured with `swanctl --load-all` over that
/// socket and driven over vici.
public final class StrongSwan: IKEDaemonProcess, IKEDaemon, @unchecked Sendable {
    /// How charon is set up besides the connection.
    public struct Options: Sendable {
        public enum Backend: Sendable, Hashable {
            /// The kernel's XFRM (kernel-netlink): needs a kernel with ESP.
            case kernel
            /// ESP in user space (kernel-libipsec) over a TUN device, with ESP forced into UDP;
            /// works on a kernel without ESP. kernel-libipsec's documentation for host-to-host:
            /// `allowPeerTS` (the peer as traffic selector) and `fwmark` (IKE and ESP marked, so
            /// they skip the routes into the TUN device; nil leaves it out, and then they loop).
            case libipsec(allowPeerTS: Bool = true, fwmark: UInt32? = 0x42)
        }
        public var backend: Backend
        /// charon's log level for every subsystem (1: the default, IKE progress and failures).
        public var logLevel: Int
        /// Retransmissions of an unanswered request and the first timeout (seconds).
        public var retransmitTries: Int
        public var retransmitTimeout: Double
        /// How long charon may take to open its vici socket.
        public var startTimeout: Double
        /// Lines added inside `charon { }` of strongswan.conf.
        public var extraSettings: [String]
        /// With the kernel backend: IKE leaves marked so (socket-default `fwmark`), and charon's own
        /// routes in table 220 skip what carries it (kernel-netlink `fwmark = !MARK`) — what a
        /// road warrior whose rules send everything else into the tunnel needs (with the SA's
        /// `IKEConfiguration.outputMark` for its ESP).
        public var ikeFwmark: UInt32?
        /// The routing table the harness puts the routes into a route-based style's device in
        /// (the remote subnets); nil: the main table. With a table, the caller's rule decides
        /// what looks it up (`not fwmark 0x42 lookup 50`).
        public var deviceRouteTable: UInt32?
        /// Where charon comes from: a root filesystem (another release's, such as the cached
        /// /var/lib/xfrmlab/daemons/trixie-strongswan) or a user's install prefix, see
        /// `Installation.strongSwan(at:)`; nil: this machine's.
        public var installation: String?

        /// The retransmission defaults give a peer about 20 s (2 s, then ×1.4 four times): enough
        /// for a libreswan responder under TCG, whose updown script alone can take seconds.
        public init(backend: Backend = .kernel, logLevel: Int = 1, retransmitTries: Int = 4, retransmitTimeout: Double = 2,
                    startTimeout: Double = 30, extraSettings: [String] = [], installation: String? = nil,
                    ikeFwmark: UInt32? = nil, deviceRouteTable: UInt32? = nil) {
            self.backend = backend
            self.logLevel = logLevel
            self.retransmitTries = retransmitTries
            self.retransmitTimeout = retransmitTimeout
            self.startTimeout = startTimeout
            self.extraSettings = extraSettings
            self.installation = installation
            self.ikeFwmark = ikeFwmark
            self.deviceRouteTable = deviceRouteTable
        }
    }

    public let options: Options
    public let installation: Installation.StrongSwan
    /// The vici socket.
    public var viciPath: String { instance.directory + "/charon.vici" }
    /// The strongswan.conf in effect (`STRONGSWAN_CONF`).
    public var settingsPath: String { instance.directory + "/strongswan.conf" }
    public var swanctlConfigPath: String { instance.directory + "/swanctl/swanctl.conf" }
    private var device: String?

    private init(host: String, namespace: Namespace, configuration: IKEConfiguration, options: Options,
                 installation: Installation.StrongSwan) throws {
        self.options = options
        self.installation = installation
        try super.init(kind: .strongSwan, host: host, namespace: namespace, configuration: configuration, root: installation.root)
    }

    /// Starts charon in `namespace` and loads `configuration`; on any failure, whatever was
    /// started is stopped and removed before the error (with charon's log) is thrown.
    public static func start(in namespace: Namespace, host: String, configuration: IKEConfiguration,
                             options: Options = Options()) throws -> StrongSwan {
        let installation = try (options.installation.map(Installation.strongSwan(at:)) ?? Installation.strongSwan).get()
        if case .libipsec = options.backend { try Installation.libipsec(for: installation).get() }
        try configuration.validate()
        let daemon = try StrongSwan(host: host, namespace: namespace, configuration: configuration, options: options,
                                    installation: installation)
        try daemon.startUp(prepare: {
            try daemon.writeConfiguration()
            if case .kernel = options.backend {
                daemon.device = try TunnelDevices.make(for: configuration, in: namespace, table: options.deviceRouteTable)
            }
        }, command: { [installation.charon] }, environment: [
            "STRONGSWAN_CONF": daemon.settingsPath,
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        ], ready: {
            try daemon.waitForVici()
            try daemon.load()
        })
        return daemon
    }

    // MARK: - Configuration

    func writeConfiguration() throws {
        let c = configuration
        var plugins = installation.plugins
        var libipsec = false, allowPeerTS = false
        var fwmark: UInt32? = options.ikeFwmark
        if case .libipsec(let allow, let mark) = options.backend {
            // kernel-libipsec first: its IPsec backend wins over kernel-netlink's.
            plugins.insert("kernel-libipsec", at: plugins.firstIndex(of: "kernel-netlink")!)
            libipsec = true
            allowPeerTS = allow
            fwmark = mark
        }
        let settings = try Template.load("strongswan/strongswan.conf").render([
            "NAMESPACE": namespace.name,
            "DIRECTORY": instance.directory,
            "PLUGINS": plugins.joined(separator: " "),
            // Route-based styles route into their device themselves; charon's routes in table
            // 220 would take the traffic first.
            "INSTALL_ROUTES": c.style.device == nil ? "yes" : "no",
            "RETRANSMIT_TRIES": "\(options.retransmitTries)",
            "RETRANSMIT_TIMEOUT": "\(options.retransmitTimeout)",
            "LOG": instance.logPath,
            "LOG_LEVEL": "\(options.logLevel)",
            "VICI": viciPath,
            "LIBIPSEC": libipsec ? "yes" : "",
            "ALLOW_PEER_TS": allowPeerTS ? "yes" : "no",
            "FWMARK": fwmark.map { "0x" + String($0, radix: 16) } ?? "",
            "EXTRA": options.extraSettings.joined(separator: "\n  "),
        ])
        try instance.write("strongswan.conf", settings)

        let swanctl = try instance.subdirectory("swanctl")
        for sub in ["x509", "x509ca", "private"] { try instance.subdirectory("swanctl/" + sub) }
        var values: [String: String] = [
            "NAMESPACE": namespace.name,
            "NAME": c.name,
            "LOCAL_ADDRESS": c.local.address.description,
            "REMOTE_ADDRESS": c.remote.address.description,
            "IKE_PROPOSALS": c.ike.map(\.strongSwan).joined(separator: ","),
            "ESP_PROPOSALS": c.esp.map(\.strongSwan).joined(separator: ","),
            "LOCAL_ID": c.local.id,
            "REMOTE_ID": c.remote.id,
            "LOCAL_TS": c.local.trafficSelectors.map(\.description).joined(separator: ","),
            "REMOTE_TS": c.remote.trafficSelectors.map(\.description).joined(separator: ","),
            "IF_ID": "", "MARK_IN": "", "MARK_OUT": "", "PSK": "", "LOCAL_CERT": "",
            "SET_MARK_OUT": c.outputMark.map { markText($0.value, mask: $0.mask) } ?? "",
            "SET_MARK_IN": c.inputMark.map { markText($0.value, mask: $0.mask) } ?? "",
        ]
        switch c.style {
        case .policy: break
        case .markedPolicy(let mark): values["MARK_OUT"] = markText(mark)
        case .vti(let key, _):
            values["MARK_IN"] = markText(key)
            values["MARK_OUT"] = markText(key)
        case .xfrmInterface(let id): values["IF_ID"] = "0x" + String(id, radix: 16)
        }
        switch c.authentication {
        case .psk(let secret):
            values["AUTH"] = "psk"
            values["PSK"] = secret.value
        case .certificates(let ca):
            values["AUTH"] = "pubkey"
            let issued = try ca.issue(for: c.local)
            try copy(ca.certificatePath, to: swanctl + "/x509ca/ca.pem", mode: 0o644)
            try copy(issued.certificate, to: swanctl + "/x509/\(c.local.host).pem", mode: 0o644)
            try copy(issued.key, to: swanctl + "/private/\(c.local.host).pem", mode: 0o600)
            values["LOCAL_CERT"] = "\(c.local.host).pem"
        }
        try instance.write("swanctl/swanctl.conf", try Template.load("strongswan/swanctl.conf").render(values), mode: 0o600)
    }

    private func copy(_ from: String, to: String, mode: mode_t) throws {
        guard let text = try? String(contentsOfFile: from, encoding: .utf8) else {
            throw DaemonError(.configuration, "cannot read \(from)")
        }
        try instance.write(to, text, mode: mode)
    }

    // MARK: - Start-up

    private func waitForVici() throws {
        try waitForStartUp(timeout: options.startTimeout, interval: 0.01, waitingFor: { "no vici socket at \(viciPath)" }) {
            guard let connection = try? ViciConnection(path: viciPath) else { return false }
            connection.close()
            return true
        }
    }

    /// `swanctl --load-all --file …/swanctl.conf`, over this instance's socket (swanctl reads the
    /// socket's path from the same strongswan.conf).
    private func load() throws {
        let r = try namespace.execute(inRoot(["env", "STRONGSWAN_CONF=\(settingsPath)", installation.swanctl,
                                              "--load-all", "--noprompt", "--file", swanctlConfigPath]), timeout: 30)
        // swanctl looks for credential directories it does not need (pkcs12, rsa …): not news.
        let said = (r.standardOutput + r.standardError).split(separator: "\n").map(String.init)
            .filter { !$0.hasPrefix("opening directory") }
        guard r.succeeded, said.contains(where: { $0.contains("loaded connection '\(configuration.name)'") }) else {
            throw DaemonError(.load, "\(self): swanctl --load-all failed (exit \(r.status))",
                              logs: [LogExcerpt(title: "swanctl --load-all", lines: said)] + instance.logExcerpts())
        }
    }

    // MARK: - Control

    private func vici(_ command: String, _ arguments: [(String, String)] = [], streaming event: String? = nil,
                      timeout: Double = 10) throws -> (response: ViciMessage, events: [ViciMessage]) {
        let connection = try ViciConnection(path: viciPath)
        defer { connection.close() }
        return try connection.call(command, .strings(arguments), streaming: event, timeout: timeout)
    }

    /// vici `initiate` of the child SA (and so its IKE SA): returns when both are up.
    public func initiate(timeout: Double = 20) throws {
        let r: ViciMessage
        do {
            r = try vici("initiate", [("child", configuration.name), ("ike", configuration.name),
                                      ("timeout", "\(Int(timeout * 1000))"), ("init-limits", "no")],
                         timeout: timeout + 5).response
        } catch let e as DaemonError {
            throw DaemonError(.negotiation, "\(self): initiating \(configuration.name): \(e.message)", logs: instance.logExcerpts())
        }
        guard r["success"]?.string == "yes" else {
            throw DaemonError(.negotiation, "\(self): initiating \(configuration.name) failed: \(r["errmsg"]?.string ?? "no reason given")",
                              logs: instance.logExcerpts())
        }
    }

    /// vici `list-sas` of the connection (`swanctl --list-sas --ike NAME`).
    public func status() throws -> [IKESAStatus] {
        let events = try vici("list-sas", [("ike", configuration.name), ("noblock", "yes")], streaming: "list-sa").events
        var out: [IKESAStatus] = []
        for event in events {
            for (_, value) in event.items {
                guard let ike = value.section else { continue }
                let state = ike["state"]?.string ?? "?"
                var children: [ChildSAStatus] = []
                for (_, child) in ike["child-sas"]?.section?.items ?? [] {
                    guard let c = child.section else { continue }
                    let childState = c["state"]?.string ?? "?"
                    children.append(ChildSAStatus(
                        serial: c["uniqueid"]?.string ?? "?", state: childState, installed: childState == "INSTALLED",
                        inboundSPI: c["spi-in"]?.string.flatMap { UInt32($0, radix: 16) },
                        outboundSPI: c["spi-out"]?.string.flatMap { UInt32($0, radix: 16) },
                        udpEncapsulated: c["encap"]?.string == "yes",
                        bytesIn: c["bytes-in"]?.string.flatMap { UInt64($0) }, bytesOut: c["bytes-out"]?.string.flatMap { UInt64($0) },
                        packetsIn: c["packets-in"]?.string.flatMap { UInt64($0) }, packetsOut: c["packets-out"]?.string.flatMap { UInt64($0) }))
                }
                out.append(IKESAStatus(serial: ike["uniqueid"]?.string ?? "?", state: state, established: state == "ESTABLISHED",
                                       children: children))
            }
        }
        return out
    }

    /// What charon says it is (vici `version`: "charon-systemd 6.0.1").
    public func reportedVersion() throws -> String {
        let r = try vici("version").response
        return [r["daemon"]?.string, r["version"]?.string].compactMap { $0 }.joined(separator: " ")
    }

    /// vici `rekey` of the child SA (`swanctl --rekey --child NAME`).
    public func rekeyChild() throws {
        let r = try vici("rekey", [("child", configuration.name)]).response
        guard r["success"]?.string == "yes" else {
            throw DaemonError(.control, "\(self): rekey of \(configuration.name) refused: \(r["errmsg"]?.string ?? "no reason given")",
                              logs: instance.logExcerpts())
        }
    }

    // MARK: - Stop

    /// SIGTERM: charon removes its SAs, policies, routes, the routing rule and the TUN device;
    /// the device the harness made for it goes after.
    @discardableResult
    public override func stop() throws -> StopReport? {
        try stopOnce(grace: 5) { if let device { TunnelDevices.remove(device, in: namespace) } }
    }
}
