import Foundation
import Glibc
import Namespaces
import Topology

/// A certificate authority made for one run (openssl, ECDSA P-256, valid two days), issuing each
/// endpoint a certificate whose subject alternative names are its identity and its address.
/// ECDSA rather than RSA: key generation takes milliseconds even under TCG, and both daemons
/// agree on the signature scheme (RFC 7427 ECDSA with SHA-256), where with RSA libreswan 4.10
/// refuses the PKCS#1 v1.5 signatures charon makes unless charon is told to use PSS.
/// Keys are mode 0600 in a 0700 directory; `remove()` deletes everything.
///
/// strongSwan gets PEM files in its swanctl directory (`x509ca/`, `x509/`, `private/`);
/// libreswan gets the CA (trusted, `certutil -A -t CT,,`) and a PKCS#12 of key and
/// certificate (`pk12util -i`) in its NSS database.
public final class CertificateAuthority: @unchecked Sendable, CustomStringConvertible {
    public struct Issued: Sendable {
        public var key: String
        public var certificate: String
        /// Key and certificate, with an empty password, nicknamed after the host.
        public var pkcs12: String
    }

    public let name: String
    public let directory: String
    public var certificatePath: String { directory + "/ca.pem" }
    private var issued: [String: Issued] = [:]
    private var serial = 1
    private let lock = NSLock()

    /// Makes a CA in `/run/xfrmlab/daemons/NAME` (use the lab's run prefix, `xl1a2b3c-ca`, so a
    /// killed run's CA is swept like its daemons' directories).
    public init(name: String) throws {
        self.name = name
        directory = DaemonInstance.baseDirectory + "/" + name
        for dir in ["/run/xfrmlab", DaemonInstance.baseDirectory] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw DaemonError(.configuration, "cannot make \(dir)")
        }
        try? FileManager.default.removeItem(atPath: directory)
        guard mkdir(directory, 0o700) == 0 else { throw DaemonError(.configuration, "cannot make \(directory)") }
        do { try Leftovers.recordOwner(of: directory) } catch { throw DaemonError(.configuration, "\(error)") }
        do {
            try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", directory + "/ca.key",
                         "-out", certificatePath, "-days", "2", "-subj", "/O=XfrmLab/CN=XfrmLab CA \(name)",
                         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            chmod(directory + "/ca.key", 0o600)
        } catch {
            remove()
            throw error
        }
    }

    public var description: String { "CA \(name)" }

    /// The certificate of `endpoint` (made on first use): CN and SAN its identity, SAN its address.
    public func issue(for endpoint: Endpoint) throws -> Issued {
        lock.lock()
        defer { lock.unlock() }
        if let known = issued[endpoint.host] { return known }
        let base = directory + "/" + endpoint.host
        let id = endpoint.id
        var san = ["IP:\(endpoint.address)"]
        if IPAddress(id) == nil { san.insert("DNS:\(id)", at: 0) }
        let extensions = """
        basicConstraints=CA:FALSE
        keyUsage=critical,digitalSignature
        extendedKeyUsage=serverAuth,clientAuth
        subjectAltName=\(san.joined(separator: ","))

        """
        try extensions.write(toFile: base + ".ext", atomically: true, encoding: .utf8)
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", base + ".key", "-out", base + ".csr",
                     "-subj", "/O=XfrmLab/CN=\(id)"])
        chmod(base + ".key", 0o600)
        serial += 1
        try openssl(["x509", "-req", "-in", base + ".csr", "-CA", certificatePath, "-CAkey", directory + "/ca.key",
                     "-set_serial", "\(serial)", "-days", "2", "-extfile", base + ".ext", "-out", base + ".pem"])
        try openssl(["pkcs12", "-export", "-inkey", base + ".key", "-in", base + ".pem", "-name", endpoint.host,
                     "-passout", "pass:", "-out", base + ".p12"])
        chmod(base + ".p12", 0o600)
        let result = Issued(key: base + ".key", certificate: base + ".pem", pkcs12: base + ".p12")
        issued[endpoint.host] = result
        return result
    }

    /// Deletes the CA's directory with every key in it.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func openssl(_ arguments: [String]) throws {
        let r = try Namespaces.Process.execute(["openssl"] + arguments, timeout: 120)
        guard r.succeeded else {
            throw DaemonError(.configuration, "openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(r.standardError)")
        }
    }
}
