import CNetlink
import Foundation
import Glibc
import Lab
import Namespaces
import Netlink
import Testing
import XfrmLabTesting
import Topology
import Xfrm

/// What the kernel says when it refuses an IPsec request reaches the user verbatim, next to the
/// request as the `ip` command it equals; keys never do.
@Suite("The kernel's own words about IPsec reach the user, keys never do", .tags(.privileged), .needsNamespaces)
struct XfrmErrorTests {
    @Test("an ESP state with an algorithm no kernel has is refused with the kernel's errno and words, the key hidden",
          .requires(.xfrmPolicy))
    func unknownAlgorithm() throws {
        let ns = try Namespace.create(name: "xlxe\(getpid())a")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let key = XfrmKey.random(bits: 160)
        let state = XfrmState(source: [192, 1, 2, 45], destination: [192, 1, 2, 23], spi: 0x1234,
                              algorithms: [.aead(name: "xfrmlab-no-such-aead", key: key, icvBits: 128)])
        let error = try #require(throws: NetlinkError.self) { try xfrm.request(XfrmStateRequest.add(namespace: ns.name, state)) }
        #expect(error.errno == ENOSYS)
        #expect(error.request == "ip -n \(ns.name) xfrm state add src 192.1.2.45 dst 192.1.2.23 proto esp spi 0x1234 mode tunnel aead 'xfrmlab-no-such-aead' <key 160 bits> 128")
        if let words = error.kernelMessage {
            #expect(error.description.contains("Error: \(words)"))
        }
        let hex = String(key.revealedHex.dropFirst(2))
        for text in [error.description, error.request, "\(state)", String(reflecting: state), "\(state.algorithms)", "\(key)"] {
            #expect(!text.contains(hex), "the key leaked into: \(text)")
        }
        #expect(try xfrm.xfrmStates().isEmpty)
    }

    @Test("an ESP state on a kernel without ESP fails with the words the probe recorded", .lacks(.espCBCHMAC))
    func espRefused() throws {
        let ns = try Namespace.create(name: "xlxe\(getpid())b")
        defer { ns.delete() }
        let xfrm = try ns.xfrmSocket()
        defer { xfrm.close() }
        let state = XfrmState(source: [192, 1, 2, 45], destination: [192, 1, 2, 23], spi: 0x2345, reqid: 1,
                              algorithms: [.aesCBC(key: .random(bits: 128)), .hmacSHA256(key: .random(bits: 256))],
                              mark: XfrmMark(0x1, mask: 0xff), interfaceID: 7)
        let error = try #require(throws: NetlinkError.self) { try xfrm.request(XfrmStateRequest.add(namespace: ns.name, state)) }
        let words = "\(errnoName(error.errno)) (\(error.kernelMessage ?? errnoText(error.errno)))"
        #expect(Capabilities.capability(.espCBCHMAC).answer.hasSuffix(words))
        #expect(error.request.hasSuffix("enc 'cbc(aes)' <key 128 bits> auth-trunc 'hmac(sha256)' <key 256 bits> 128 mark 0x1 mask 0xff if_id 0x7"))
        if let message = error.kernelMessage { #expect(error.description.hasSuffix("kernel: \"Error: \(message)\"")) }
    }

    @Test("an xfrm interface on a kernel without them is EOPNOTSUPP, \"Unknown device type\"", .lacks(.xfrmInterface))
    func xfrmInterfaceRefused() throws {
        let ns = try Namespace.create(name: "xlxe\(getpid())c")
        defer { ns.delete() }
        let error = try #require(throws: NetlinkError.self) {
            try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: "ipsec1", interfaceID: 7, link: 1, linkName: "lo"))
        }
        #expect(error.errno == EOPNOTSUPP)
        #expect(error.kernelMessage == "Unknown device type")
        #expect(error.request == "ip -n \(ns.name) link add ipsec1 type xfrm dev lo if_id 0x7 && ip link set ipsec1 up")
        #expect(Capabilities.capability(.xfrmInterface).skipReason
            == "kernel lacks xfrm interfaces: RTM_NEWLINK kind xfrm → EOPNOTSUPP (Unknown device type)")
    }

    @Test("a VTI on a kernel without VTI is EOPNOTSUPP, \"Unknown device type\"", .lacks(.vti))
    func vtiRefused() throws {
        let ns = try Namespace.create(name: "xlxe\(getpid())d")
        defer { ns.delete() }
        let error = try #require(throws: NetlinkError.self) {
            try ns.route.request(LinkRequest.vti(namespace: ns.name, name: "vti0", local: [192, 1, 2, 45], remote: [192, 1, 2, 23],
                                                 inputKey: 16, outputKey: 16))
        }
        #expect(error.errno == EOPNOTSUPP)
        #expect(error.kernelMessage == "Unknown device type")
        #expect(error.request == "ip -n \(ns.name) link add vti0 type vti local 192.1.2.45 remote 192.1.2.23 ikey 16 okey 16 && ip link set vti0 up")
    }

    @Test("a tunnel the kernel refuses names its file line, gives the kernel's words, and leaves nothing behind", .lacks(.esp))
    func tunnelRefusedRollsBack() throws {
        let path = topologyFile("west-east-policy")
        let topology = try Topology.load(path: path)
        let error = try #require(throws: NetlinkError.self) { try Lab.up(topology) }
        let line = try #require(topology.tunnels.first?.location?.line)
        #expect(error.origin?.hasPrefix("\(path):\(line):") == true, "\(error)")
        #expect(error.request.contains("xfrm state add src 192.1.2.45 dst 192.1.2.23 proto esp"), "\(error)")
        #expect(error.request.contains("aead 'rfc4106(gcm(aes))' <key 160 bits> 128 mark 0x1 mask 0xff"), "\(error)")
        #expect(Capabilities.capability(.esp).answer.hasSuffix("\(errnoName(error.errno)) (\(error.kernelMessage ?? errnoText(error.errno)))"))
        // This process's runs only: a second suite running beside this one has live runs of its own.
        let left = Run.all().filter { $0.state?.topology == topology.name && $0.state?.pid == getpid() }
        #expect(left.isEmpty, "a run was left: \(left.map(\.id))")
    }

    @Test("the probe answers for every capability and leaves no namespace behind")
    func probeIsComplete() throws {
        let all = Capabilities.current
        #expect(all.entries.map(\.name) == Capability.Name.allCases)
        for c in all.entries {
            #expect(c.answer.contains(" → "), "\(c)")
            #expect(!c.available || !c.answer.contains("not found on PATH"), "\(c)")
        }
        #expect(all.kernel == Capabilities.kernelRelease())
        #expect(namespacesLeft(prefix: "xlprobe\(getpid())-caps").isEmpty)
    }
}
