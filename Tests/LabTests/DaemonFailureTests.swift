import Daemons
import Foundation
import Glibc
import Lab
import Namespaces
import Testing
import XfrmLabTesting
import Topology

/// Daemons that do not start, or do not agree, fail the test within its timeout with their own
/// log lines, and leave no process, file or namespace behind. These fail during IKE_SA_INIT or
/// IKE_AUTH, before any SA reaches the kernel, so they run on a kernel without ESP too.
@Suite("IKE daemons that fail", .serialized, .tags(.privileged, .daemons), .needsNamespaces)
struct DaemonFailureTests {
    /// pluto ignores an unauthenticated NO_PROPOSAL_CHOSEN in IKE_SA_INIT (RFC 7296 2.21.1 lets
    /// it) and gives up only when its retransmissions time out: make that 4 s, not 10.
    static let quickPluto = Libreswan.Options(retransmitTimeout: 4)

    /// Runs `body` (which must fail) in a fresh lab, then checks that nothing is left.
    func expectFailure(_ pair: DaemonPair, timeout: Double, _ configure: (inout IKEConfiguration, inout IKEConfiguration) -> Void,
                       sourceLocation: Testing.SourceLocation = #_sourceLocation) async throws -> String {
        var prefix = ""
        var text = ""
        try await daemonTopology().withLab { lab in
            prefix = lab.run.prefix
            var west = try IKEConfiguration.between(lab, "west", "east")
            var east = west.mirrored
            configure(&west, &east)
            let started = Date()
            let error = await #expect(throws: DaemonError.self, sourceLocation: sourceLocation) {
                try await lab.withIKETunnel(DaemonSpec(pair.initiator, host: "west", configuration: west, libreswan: Self.quickPluto),
                                            DaemonSpec(pair.responder, host: "east", configuration: east, libreswan: Self.quickPluto),
                                            timeout: timeout) { _ in }
            }
            let elapsed = Date().timeIntervalSince(started)
            #expect(elapsed < timeout + 12, "failed after \(elapsed) s, timeout \(timeout) s", sourceLocation: sourceLocation)
            text = error.map { "\($0)" } ?? ""
            // Never the secrets, whatever went wrong.
            for c in [west, east] {
                if case .psk(let s) = c.authentication { #expect(!text.contains(s.value), "a PSK reached the error text", sourceLocation: sourceLocation) }
            }
            #expect(daemonLeftovers([prefix + "west", prefix + "east"]) == [], sourceLocation: sourceLocation)
        }
        #expect(namespacesLeft(prefix: prefix).isEmpty, sourceLocation: sourceLocation)
        #expect(daemonLeftovers([prefix + "west", prefix + "east"]) == [], sourceLocation: sourceLocation)
        return text
    }

    @Test("a wrong PSK fails within the timeout with AUTHENTICATION_FAILED from the daemons' own logs",
          .needsDaemon(.strongSwan), .needsDaemon(.libreswan), arguments: DaemonPair.all)
    func wrongPSK(pair: DaemonPair) async throws {
        let text = try await expectFailure(pair, timeout: 20) { _, east in east.authentication = Authentication.psk(Secret.random()) }
        #expect(text.contains("AUTHENTICATION_FAILED"), "\(text)")
        print("wrong PSK, \(pair):\n\(text)\n")
    }

    @Test("mismatched IKE proposals fail within the timeout with NO_PROPOSAL_CHOSEN",
          .needsDaemon(.strongSwan), .needsDaemon(.libreswan), arguments: DaemonPair.all)
    func mismatchedProposal(pair: DaemonPair) async throws {
        let text = try await expectFailure(pair, timeout: 20) { west, east in
            west.ike = [Proposal(.aes128, .sha256, .modp2048)]
            east.ike = [Proposal(.aes256, .sha512, .ecp384)]
        }
        #expect(text.contains("NO_PROPOSAL_CHOSEN"), "\(text)")
        print("mismatched proposals, \(pair):\n\(text)\n")
    }

    @Test("charon that cannot load a critical plugin fails to start with its own words", .needsDaemon(.strongSwan))
    func charonFailsToStart() async throws {
        var prefix = ""
        try await daemonTopology().withLab { lab in
            prefix = lab.run.prefix
            let c = try IKEConfiguration.between(lab, "west", "east")
            let options = StrongSwan.Options(extraSettings: ["load = random nonce openssl xfrmlab-no-such-plugin!"])
            let error = await #expect(throws: DaemonError.self) {
                try await lab.withDaemon(DaemonSpec(.strongSwan, host: "west", configuration: c, strongSwan: options)) { _ in }
            }
            let text = error.map { "\($0)" } ?? ""
            #expect(error?.kind == .start, "\(text)")
            #expect(text.contains("xfrmlab-no-such-plugin"), "charon's own words: \(text)")
            #expect(daemonLeftovers([prefix + "west"]) == [])
        }
        #expect(namespacesLeft(prefix: prefix).isEmpty)
    }

    @Test("pluto refuses a configuration it does not understand, with libreswan's words", .needsDaemon(.libreswan))
    func plutoRefusesConfiguration() async throws {
        var prefix = ""
        try await daemonTopology().withLab { lab in
            prefix = lab.run.prefix
            let c = try IKEConfiguration.between(lab, "west", "east")
            let options = Libreswan.Options(extraSetup: ["xfrmlab-no-such-keyword=yes"])
            let error = await #expect(throws: DaemonError.self) {
                try await lab.withDaemon(DaemonSpec(.libreswan, host: "west", configuration: c, libreswan: options)) { _ in }
            }
            let text = error.map { "\($0)" } ?? ""
            #expect(text.contains("xfrmlab-no-such-keyword"), "libreswan's own words: \(text)")
            #expect(daemonLeftovers([prefix + "west"]) == [])
        }
        #expect(namespacesLeft(prefix: prefix).isEmpty)
    }
}
