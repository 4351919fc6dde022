import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Xfrm

/// CVE-2014-0181: netlink requests were judged by the sender's credentials only, so a socket an
/// unprivileged user opened, handed to a setuid program as its stdout, administered the machine.
/// Since netlink_ns_capable (90f62cf30a78) the opener's credentials count too, unless the sender
/// names the destination itself (sendto with an address: NETLINK_SKB_DST; the program meant it).
///
/// Here the opener is the root of the user namespace owning host `user`; the sender is the
/// harness, root of the initial namespace. Written with write(2), as to a stdout, a request for
/// lab's namespace (owned by the initial user namespace) must be refused; the same socket with an
/// address (sendto, what libmnl does) and the namespace the owner owns are the controls. The steps
/// are typed requests on those sockets: no `ip`, no `nsenter`.
enum NetlinkOpenerCredentials {
    static let reproduction = Reproduction("netlink-opener-credentials") { lab in
        let user = try lab.namespace("user"), initial = try lab.namespace("lab")
        guard user.ownedByUserNamespace, !initial.ownedByUserNamespace else {
            throw Inconclusive("host user is not owned by a user namespace of its own, or lab is")
        }
        let selector = XfrmSelector(source: "10.1.0.0/24", destination: "10.2.0.0/24")!
        func policy(_ priority: UInt32) -> XfrmPolicy {
            XfrmPolicy(selector: selector, direction: .out, priority: priority,
                       templates: [XfrmTemplate(source: [192, 0, 2, 1], destination: [192, 0, 2, 2], reqid: 1)])
        }
        var parts: [Observation.Part] = []
        var controls: [String] = []
        for (name, proto) in [("xfrm", NetlinkSocket.xfrm), ("route", NetlinkSocket.route)] {
            func request(_ target: Namespace, _ n: Int) -> Request {
                proto == NetlinkSocket.xfrm ? XfrmPolicyRequest.add(namespace: target.name, policy(UInt32(10 + n)))
                    : LinkRequest.bridge(namespace: target.name, name: "br-opener\(n)")
            }
            let inOwn = try user.ownerNetlinkSocket(protocol: proto)
            defer { inOwn.close() }
            let inInitial = try user.ownerNetlinkSocket(protocol: proto, in: initial)
            defer { inInitial.close() }
            // Controls: the owner administers its own namespace; an addressed send is the sender's.
            let own = written(inOwn, request(user, 1))
            let addressed = ask(inInitial, request(initial, 2))
            guard own.accepted else { throw Inconclusive("the owner could not administer its own namespace: \(own)") }
            let stdout = written(inInitial, request(initial, 3))
            // Accepted: the sender's privilege reached through the user's socket (the bug). EPERM:
            // judged by the opener. Anything else says nothing.
            let present: Bool? = stdout.accepted ? true : stdout.errno == EPERM ? false : nil
            parts.append(Observation.Part(name, bugPresent: present, evidence: ["written without an address: \(stdout)"]))
            controls += ["\(name) in user's own namespace, written: \(own)", "\(name) sent with an address (sendto): \(addressed)"]
        }
        return Observation(parts: parts, evidence: ["opener: root of the user namespace owning \(user.name) (nobody outside); sender: the harness"] + controls)
    }

    /// The request written with write(2) on the socket, as a program writes its stdout (no
    /// destination address), and the kernel's ack read back.
    static func written(_ socket: NetlinkSocket, _ request: Request) -> Answer {
        let sequence = UInt32.random(in: 1...UInt32.max)
        let bytes = request.encoded(sequence: sequence)
        let fd = socket.fileDescriptor
        guard write(fd, bytes, bytes.count) == bytes.count else {
            return Answer(request: request.summary, error: NetlinkError(errno: errno, request: request.summary))
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&poller, 1, 3000) > 0 {
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n >= 20 else { break }
            var offset = 0
            while offset + 20 <= n {
                let length = Int(buffer[offset..<offset + 4].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) })
                let type = buffer[offset + 4..<offset + 6].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
                let seq = buffer[offset + 8..<offset + 12].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                if type == 2 /* NLMSG_ERROR */, seq == sequence {
                    let code = buffer[offset + 16..<offset + 20].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
                    let summary = "write(2) " + request.summary
                    return code == 0 ? Answer(request: summary) : Answer(request: summary, error: NetlinkError(errno: -code, request: summary))
                }
                guard length >= 16 else { break }
                offset += (length + 3) & ~3
            }
        }
        return Answer(request: "write(2) " + request.summary, other: Inconclusive("no ack within 3 s"))
    }
}
