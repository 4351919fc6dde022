import Foundation
import Glibc
import Namespaces
import Netlink
import Topology

/// libreswan's pluto in a lab namespace, with its own ipsec.conf (`--config`), secrets
/// (`--secretsfile`), NSS database (`--nssdir`, made with certutil), run directory and control
/// socket (`--rundir`), dump directory and log, all under its instance directory; driven with
/// `whack --ctlsocket`.
///
/// An unpacked libreswan (see Installation) runs in a mount namespace of its own in which the
/// prefix's usr/libexec is bind-mounted over /usr/libexec: pluto execs
/// /usr/libexec/ipsec/addconn at start-up, a path compiled in. The bind mount is private to
/// pluto and its children (addconn, the updown script).
public final class Libreswan: IKEDaemonProcess, IKEDaemon, @unchecked Sendable {
    public struct Options: Sendable {
        /// `plutodebug=` (none, base, all …).
        public var debug: String
        /// Seconds before pluto gives up on an unanswered exchange (`retransmit-timeout=`).
        public var retransmitTimeout: Int
        /// How long pluto may take to listen and load the connection.
        public var startTimeout: Double
        /// Lines added to `config setup`.
        public var extraSetup: [String]
        /// Where pluto comes from: a root filesystem (another release's, such as the cached
        /// /var/lib/xfrmlab/daemons/trixie-libreswan, or a user's build installed into one) or
        /// an unpacked prefix, see `Installation.libreswan(at:)`; nil: this machine's.
        public var installation: String?

        public init(debug: String = "none", retransmitTimeout: Int = 10, startTimeout: Double = 30, extraSetup: [String] = [],
                    installation: String? = nil) {
            self.debug = debug
            self.retransmitTimeout = retransmitTimeout
            self.startTimeout = startTimeout
            self.extraSetup = extraSetup
            self.installation = installation
        }
    }

    public let options: Options
    public let installation: Installation.Libreswan
    public var configPath: String { instance.directory + "/ipsec.conf" }
    public var controlSocket: String { instance.directory + "/pluto.ctl" }
    public var nssDirectory: String { instance.directory + "/nss" }

    private init(host: String, namespace: Namespace, configuration: IKEConfiguration, options: Options,
                 installation: Installation.Libreswan) throws {
        self.options = options
        self.installation = installation
        try super.init(kind: .libreswan, host: host, namespace: namespace, configuration: configuration, root: installation.root)
    }

    /// Starts pluto in `namespace` with `configuration` (loaded by pluto itself, auto=add); on
    /// any failure, whatever was started is stopped and removed before the error (with pluto's
    /// log) is thrown.
    public static func start(in namespace: Namespace, host: String, configuration: IKEConfiguration,
                             options: Options = Options()) throws -> Libreswan {
        let installation = try (options.installation.map(Installation.libreswan(at:)) ?? Installation.libreswan).get()
        try configuration.validate()
        if configuration.local.subnets.count > 1 || configuration.remote.subnets.count > 1 {
            throw DaemonError(.configuration, "\(configuration.name): one subnet per end with libreswan here (leftsubnet=)")
        }
        if configuration.outputMark != nil || configuration.inputMark != nil {
            throw DaemonError(.configuration, "libreswan \(installation.version): no option sets an SA's output mark (XFRMA_SET_MARK); strongSwan's set_mark_out/set_mark_in do")
        }
        if case .vti = configuration.style, configuration.family == .ipv6 {
            throw DaemonError(.configuration, "libreswan \(installation.version): its updown script makes VTI devices with `ip tunnel add … mode vti`, IPv4 only")
        }
        let daemon = try Libreswan(host: host, namespace: namespace, configuration: configuration, options: options,
                                   installation: installation)
        try daemon.startUp(prepare: {
            try daemon.writeConfiguration()
            try daemon.makeNSSDatabase()
            try daemon.checkConfiguration()
        }, command: daemon.command, environment: [
            "PATH": installation.prefix == "/" || installation.root != nil ? "/usr/sbin:/usr/bin:/sbin:/bin"
                : "\(installation.prefix)/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        ], ready: daemon.waitForConnection)
        return daemon
    }

    func command() -> [String] {
        let d = instance.directory
        let pluto = [installation.pluto, "--config", configPath, "--nofork", "--rundir", d, "--nssdir", nssDirectory,
                     "--secretsfile", d + "/ipsec.secrets", "--ipsecdir", d, "--dumpdir", d, "--logfile", instance.logPath]
        guard installation.needsMountNamespace else { return pluto }
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", "mount --bind \"$0\" /usr/libexec && exec \"$@\"", installation.prefix + "/usr/libexec"] + pluto
    }

    // MARK: - Configuration

    func writeConfiguration() throws {
        let c = configuration
        var values: [String: String] = [
            "NAMESPACE": namespace.name,
            "DIRECTORY": instance.directory,
            "LOG": instance.logPath,
            "DEBUG": options.debug,
            "EXTRA": options.extraSetup.joined(separator: "\n  "),
            "NAME": c.name,
            "LOCAL_ADDRESS": c.local.address.description,
            "REMOTE_ADDRESS": c.remote.address.description,
            "LOCAL_ID": libreswanID(c.local.id),
            "REMOTE_ID": libreswanID(c.remote.id),
            "LOCAL_SUBNETS": c.local.subnets.map(\.description).joined(separator: ","),
            "REMOTE_SUBNETS": c.remote.subnets.map(\.description).joined(separator: ","),
            "IKE_PROPOSALS": c.ike.map(\.libreswan).joined(separator: ","),
            "ESP_PROPOSALS": c.esp.map(\.libreswan).joined(separator: ","),
            "RETRANSMIT_TIMEOUT": "\(options.retransmitTimeout)",
            "PFS": c.esp.contains { $0.group != nil } ? "yes" : "no",
            "MARK": "", "MARK_OUT": "", "VTI": "", "IPSEC_INTERFACE": "", "PSK": "", "LOCAL_CERT": "",
        ]
        switch c.style {
        case .policy: break
        case .markedPolicy(let mark): values["MARK_OUT"] = markText(mark)
        case .vti(let key, let device):
            values["MARK"] = markText(key)
            values["VTI"] = device
        case .xfrmInterface(let id): values["IPSEC_INTERFACE"] = "\(id)"
        }
        switch c.authentication {
        case .psk(let secret):
            values["AUTHBY"] = "secret"
            values["PSK"] = secret.value
        case .certificates:
            values["AUTHBY"] = "ecdsa"
            values["LOCAL_CERT"] = c.local.host
        }
        try instance.write("ipsec.conf", try Template.load("libreswan/ipsec.conf").render(values))
        try instance.write("ipsec.secrets", try Template.load("libreswan/ipsec.secrets").render(values), mode: 0o600)
    }

    /// An FQDN identity is written `@name` in libreswan; addresses and DNs as they are.
    func libreswanID(_ id: String) -> String {
        if IPAddress(id) != nil || id.hasPrefix("@") || id.contains("=") { return id }
        return "@" + id
    }

    /// `ipsec initnss --nssdir DIR` (certutil -N with an empty password), then, with
    /// certificates, the CA (trusted) and this end's key and certificate (pk12util).
    ///
    /// The empty database is made once per installation and process and copied after that:
    /// under TCG a certutil run (NSS's start-up, and for a root the mounts before it) is a
    /// second of every pluto's start.
    func makeNSSDatabase() throws {
        let nss = try instance.subdirectory("nss")
        let key = installation.root?.path ?? installation.prefix
        if let files = Libreswan.emptyNSS.files(for: key) {
            for (name, data) in files where !FileManager.default.createFile(atPath: nss + "/" + name, contents: data, attributes: [.posixPermissions: 0o600]) {
                throw DaemonError(.start, "\(self): cannot write \(nss)/\(name)")
            }
        } else {
            try runTool([installation.certutil, "-N", "-d", "sql:" + nss, "--empty-password"], "certutil -N", failure: .start, timeout: 60)
            Libreswan.emptyNSS.keep(nss, for: key)
        }
        if case .certificates(let ca) = configuration.authentication {
            let issued = try ca.issue(for: configuration.local)
            // Copies in the instance directory: the only one of the harness's a chrooted tool sees.
            let caCopy = instance.directory + "/ca.pem", keyCopy = instance.directory + "/local.p12"
            for (from, to, mode) in [(ca.certificatePath, caCopy, 0o644), (issued.pkcs12, keyCopy, 0o600)] as [(String, String, mode_t)] {
                guard let data = FileManager.default.contents(atPath: from),
                      FileManager.default.createFile(atPath: to, contents: data, attributes: [.posixPermissions: Int(mode)]) else {
                    throw DaemonError(.start, "\(self): cannot copy \(from) to \(to)")
                }
            }
            try runTool([installation.certutil, "-A", "-d", "sql:" + nss, "-n", "xfrmlab-ca", "-t", "CT,,", "-i", caCopy],
                        "certutil -A (CA)", failure: .start, timeout: 60)
            try runTool([installation.pk12util, "-d", "sql:" + nss, "-i", keyCopy, "-W", ""], "pk12util -i", failure: .start, timeout: 60)
        }
    }

    /// Empty NSS databases by installation (cert9.db, key4.db, pkcs11.txt as certutil -N made them).
    final class EmptyNSS: @unchecked Sendable {
        private var byInstallation: [String: [(String, Data)]] = [:]
        private let lock = NSLock()
        func files(for key: String) -> [(String, Data)]? {
            lock.lock(); defer { lock.unlock() }
            return byInstallation[key]
        }
        func keep(_ directory: String, for key: String) {
            let names = ["cert9.db", "key4.db", "pkcs11.txt"]
            let files = names.compactMap { n in FileManager.default.contents(atPath: directory + "/" + n).map { (n, $0) } }
            guard files.count == names.count else { return }
            lock.lock(); defer { lock.unlock() }
            byInstallation[key] = files
        }
    }
    static let emptyNSS = EmptyNSS()

    /// `addconn --config FILE --checkconfig`: a mistake in the file, with libreswan's words,
    /// before pluto starts.
    func checkConfiguration() throws {
        try runTool([installation.addconn, "--config", configPath, "--checkconfig"], "addconn --checkconfig of \(configPath)",
                    failure: .configuration)
    }

    // MARK: - Start-up

    /// Waits until pluto answers on its control socket with the connection loaded (pluto's
    /// addconn helper adds it and tells pluto to listen).
    private func waitForConnection() throws {
        var said = ""
        try waitForStartUp(timeout: options.startTimeout, interval: 0.02, waitingFor: {
            "connection \(configuration.name) not loaded" + (said.isEmpty ? "" : " (whack --status: \(said.split(separator: "\n").count) lines, without it)")
        }) {
            guard access(controlSocket, F_OK) == 0, let r = try? whack(["--status"], timeout: 10) else { return false }
            said = r.standardOutput
            guard r.succeeded && r.standardOutput.contains("\"\(configuration.name)\":") else { return false }
            // addconn loads the connection and only then tells pluto to listen: an initiate in
            // between is refused ("need --listen before --initiate", seen with two suites at
            // once). Listening again is harmless, and after it pluto has its interfaces.
            let listen = try whack(["--listen"], timeout: 10)
            guard listen.succeeded else {
                throw DaemonError(.start, "\(self): whack --listen failed (exit \(listen.status)): \(listen.standardOutput)\(listen.standardError)",
                                  logs: instance.logExcerpts())
            }
            return true
        }
    }

    // MARK: - Control

    /// `ipsec whack --ctlsocket …/pluto.ctl ARGS`, in the daemon's namespace.
    public func whack(_ arguments: [String], timeout: Double = 20) throws -> ProcessResult {
        try namespace.execute(inRoot([installation.whack, "--ctlsocket", controlSocket] + arguments), timeout: timeout)
    }

    /// `ipsec whack --name NAME --initiate`: waits until pluto reports the outcome.
    public func initiate(timeout: Double = 20) throws {
        let r = try whack(["--name", configuration.name, "--initiate"], timeout: timeout)
        if (try? established()) != nil { return }
        let output = (r.standardOutput + r.standardError).split(separator: "\n").map(String.init)
        throw DaemonError(.negotiation, "\(self): whack --initiate of \(configuration.name) did not establish it (exit \(r.status))",
                          logs: [LogExcerpt(title: "whack --initiate", lines: Array(output.suffix(20)))] + instance.logExcerpts())
    }

    /// What pluto says it is (`pluto --version`'s first words: "Libreswan 5.2").
    public func reportedVersion() throws -> String {
        let r = try namespace.execute(inRoot([installation.pluto, "--version"]), timeout: 20)
        let words = r.standardOutput.split(separator: " ").prefix(2)
        guard r.succeeded, words.count == 2 else { throw DaemonError(.control, "\(self): pluto --version: \(r)") }
        return words.joined(separator: " ")
    }

    /// `ipsec whack --showstates`, parsed.
    public func status() throws -> [IKESAStatus] {
        let r = try whack(["--showstates"], timeout: 10)
        guard r.succeeded else { throw DaemonError(.control, "\(self): whack --showstates: \(r)") }
        return Libreswan.parseStates(r.standardOutput, name: configuration.name,
                                     local: configuration.local.address, remote: configuration.remote.address)
    }

    /// Parses `whack --showstates` lines such as
    /// `#1: "x":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); …`,
    /// `#2: "x":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); …; IKE SA #1; …` and
    /// `#2: "x" esp.1a2b3c4d@192.1.2.23 esp.5e6f7a8b@192.1.2.45 tun.0@… Traffic: ESPin=0B ESPout=0B …`
    /// (`esp:1a2b3c4d@2001:db8::1` for IPv6)
    /// (older versions prefix each line with a number such as `000 `; from 5.0 the states lose
    /// their `STATE_V2_` prefix: `ESTABLISHED_IKE_SA`).
    static func parseStates(_ text: String, name: String, local: IPAddress, remote: IPAddress) -> [IKESAStatus] {
        struct Entry { var state = ""; var parent: String?; var spiIn: UInt32?; var spiOut: UInt32?; var bytesIn: UInt64?; var bytesOut: UInt64? }
        var entries: [String: Entry] = [:]
        var order: [String] = []
        for raw in text.split(separator: "\n") {
            var line = Substring(raw)
            if let first = line.first, first.isNumber, let space = line.firstIndex(of: " "),
               line[..<space].allSatisfy(\.isNumber) { line = line[line.index(after: space)...] }
            guard line.hasPrefix("#"), let colon = line.firstIndex(of: ":") else { continue }
            let serial = String(line[line.index(after: line.startIndex)..<colon])
            guard serial.allSatisfy(\.isNumber), line[colon...].contains("\"\(name)\"") else { continue }
            if entries[serial] == nil { order.append(serial) }
            var e = entries[serial] ?? Entry()
            let words = line.split(separator: " ").map(String.init)
            // The state follows the connection: `STATE_V2_ESTABLISHED_IKE_SA` before 5.0,
            // `ESTABLISHED_IKE_SA` from 5.0 on.
            if let state = words.first(where: { $0.hasPrefix("STATE_") }) {
                e.state = state
            } else if let at = words.firstIndex(where: { $0.hasPrefix("\"\(name)\"") }), at + 1 < words.count,
                      words[at + 1].contains("_"), words[at + 1].allSatisfy({ $0.isUppercase || $0.isNumber || $0 == "_" }) {
                e.state = words[at + 1]
            }
            if let i = words.firstIndex(of: "SA"), i > 0, words[i - 1] == "IKE", i + 1 < words.count {
                e.parent = words[i + 1].trimmingCharacters(in: CharacterSet(charactersIn: "#;"))
            }
            // `esp.SPI@ADDRESS` for IPv4, `esp:SPI@ADDRESS` for IPv6 (libreswan's jam_said()).
            for w in words where w.hasPrefix("esp.") || w.hasPrefix("esp:") {
                let parts = w.dropFirst(4).split(separator: "@", maxSplits: 1)
                guard parts.count == 2, let spi = UInt32(parts[0], radix: 16), let at = IPAddress(String(parts[1])) else { continue }
                if at == remote { e.spiOut = spi } else if at == local { e.spiIn = spi }
            }
            func bytes(_ key: String) -> UInt64? {
                words.first { $0.hasPrefix(key + "=") }.flatMap { UInt64($0.dropFirst(key.count + 1).prefix { $0.isNumber }) }
            }
            e.bytesIn = bytes("ESPin") ?? e.bytesIn
            e.bytesOut = bytes("ESPout") ?? e.bytesOut
            entries[serial] = e
        }
        func isChild(_ e: Entry) -> Bool { e.state.contains("CHILD") || e.state.contains("IPSEC") || e.parent != nil }
        var out: [IKESAStatus] = []
        for serial in order {
            let e = entries[serial]!
            guard !isChild(e) else { continue }
            let children = order.filter { entries[$0]!.parent == serial && isChild(entries[$0]!) }.map { s -> ChildSAStatus in
                let c = entries[s]!
                return ChildSAStatus(serial: "#" + s, state: c.state, installed: c.state.contains("ESTABLISHED"),
                                     inboundSPI: c.spiIn, outboundSPI: c.spiOut, udpEncapsulated: nil,
                                     bytesIn: c.bytesIn, bytesOut: c.bytesOut, packetsIn: nil, packetsOut: nil)
            }
            out.append(IKESAStatus(serial: "#" + serial, state: e.state, established: e.state.contains("ESTABLISHED"),
                                   children: children))
        }
        return out
    }

    /// `ipsec whack --name NAME --rekey-ipsec --asynchronous`.
    public func rekeyChild() throws {
        let r = try whack(["--name", configuration.name, "--rekey-ipsec", "--asynchronous"], timeout: 10)
        guard r.succeeded else {
            throw DaemonError(.control, "\(self): whack --rekey-ipsec refused: \(r)", logs: instance.logExcerpts())
        }
    }

    // MARK: - Stop

    /// SIGTERM: pluto deletes its SAs and policies, runs the down updown (routes, a VTI device
    /// it made) and removes its control socket and pid file.
    @discardableResult
    public override func stop() throws -> StopReport? { try stopOnce(grace: 10) }
}
