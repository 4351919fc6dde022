import Foundation
import Glibc
import Namespaces
import Netlink

// The socket-address work of the UDP encapsulation socket, kept apart from the tunnel logic.

extension TunnelInstaller {
    /// A UDP socket on `address:port` with `UDP_ENCAP_ESPINUDP`: what an IKE daemon opens so the
    /// kernel decapsulates ESP arriving in UDP. Only while it is open is ESP in UDP received.
    public static func openEncapsulationSocket(in ns: Namespace, address: [UInt8], port: UInt16) throws -> Int32 {
        let v6 = address.count == 16
        let fd = try ns.openSocket(domain: v6 ? AF_INET6 : AF_INET, type: Int32(SOCK_DGRAM.rawValue), protocol: 0)
        var encap: Int32 = 2  // UDP_ENCAP_ESPINUDP
        guard setsockopt(fd, 17 /* SOL_UDP */, 100 /* UDP_ENCAP */, &encap, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            let e = SystemCallError("setsockopt(UDP_ENCAP, UDP_ENCAP_ESPINUDP)", context: "in \(ns.name)")
            Glibc.close(fd)
            throw e
        }
        let r: Int32
        if v6 {
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: address) }
            r = withUnsafePointer(to: &sin6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: address) }
            r = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard r == 0 else {
            let e = SystemCallError("bind", context: "UDP encapsulation socket \(formatAddress(address)):\(port) in \(ns.name)")
            Glibc.close(fd)
            throw e
        }
        return fd
    }
}
