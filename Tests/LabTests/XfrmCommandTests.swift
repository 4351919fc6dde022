import Foundation
import Glibc
import Namespaces
import Testing
import XfrmLabTesting
import Xfrm

/// `xfrmlab probe`, and `up`/`show`/`down` of a tunnel file, as a user runs them.
@Suite("xfrmlab probe, and up/show of tunnels", .tags(.privileged), .needsNamespaces, .serialized)
struct XfrmCommandTests {
    @Test("probe --json names every capability with the kernel's answer, as the library's probe does")
    func probeJSON() throws {
        let r = try xfrmlab(["probe", "--json"])
        try #require(r.succeeded, "\(r)")
        let decoded = try JSONDecoder().decode(Capabilities.self, from: Data(r.standardOutput.utf8))
        #expect(decoded.kernel == Capabilities.kernelRelease())
        #expect(decoded.entries.map(\.name) == Capability.Name.allCases)
        // Another process, another throwaway namespace: the same verdicts.
        for c in decoded.entries {
            #expect(c.available == Capabilities.capability(c.name).available, "\(c) vs \(Capabilities.capability(c.name))")
        }
        let text = try xfrmlab(["probe"])
        #expect(text.standardOutput.contains("xfrmi "), "\(text)")
    }

    @Test("up installs the file's tunnel; show lists the xfrm device, SAs (keys hidden) and policies; down removes it",
          .tags(.vm), .requires(.esp), .requires(.xfrmInterface))
    func upShowDown() throws {
        let up = try xfrmlab(["up", "--json", topologyFile("west-east-xfrmi")])
        try #require(up.succeeded, "\(up)")
        let info = try JSONSerialization.jsonObject(with: Data(up.standardOutput.utf8)) as! [String: Any]
        let run = try #require(info["run"] as? String)
        defer { _ = try? xfrmlab(["down", "--run", run]) }
        let show = try xfrmlab(["show", "--run", run])
        #expect(show.succeeded, "\(show)")
        let out = show.standardOutput
        #expect(out.contains("xfrm-west-east: xfrm if_id 0x7 dev eth1 UP"), "\(out)")
        #expect(out.contains("xfrm states:") && out.contains("xfrm policies:"), "\(out)")
        #expect(out.contains("aead 'rfc4106(gcm(aes))' <key 160 bits> 128"), "\(out)")
        #expect(out.contains("if_id 0x7"))
        #expect(out.contains("src 192.0.1.0/24 dst 192.0.2.0/24"), "\(out)")
        #expect(!out.contains("aead 'rfc4106(gcm(aes))' 0x"), "a key was printed")
        let down = try xfrmlab(["down", "--run", run])
        #expect(down.succeeded, "\(down)")
        #expect(namespacesLeft(prefix: "xl\(run)-").isEmpty)
    }
}
