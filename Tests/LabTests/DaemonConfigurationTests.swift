@testable import Daemons
import Foundation
import Testing
import XfrmLabTesting
import Topology

/// The daemons' configuration as written, without running anything.
@Suite("IKE daemon configuration", .tags(.daemons))
struct DaemonConfigurationTests {
    @Test("templates: values, sections kept or dropped whole, and a missing value is an error")
    func template() throws {
        let t = Template(name: "t", text: "a = {{A}}\n  {{#B}}\nb = {{B}}\n  {{/B}}\n{{^B}}\nno b\n{{/B}}\nend\n")
        #expect(try t.render(["A": "1", "B": "2"]) == "a = 1\nb = 2\nend\n")
        #expect(try t.render(["A": "1", "B": ""]) == "a = 1\nno b\nend\n")
        #expect(throws: DaemonError.self) { try t.render(["B": "2"]) }
        #expect(throws: DaemonError.self) { try Template(name: "u", text: "{{#A}}\nx\n").render(["A": "1"]) }
    }

    @Test("proposals in each daemon's syntax")
    func proposals() {
        #expect(Proposal.defaultIKE.strongSwan == "aes128-sha256-modp2048")
        #expect(Proposal.defaultIKE.libreswan == "aes128-sha2_256;modp2048")
        #expect(Proposal.defaultESP.strongSwan == "aes128gcm16-modp2048")
        #expect(Proposal.defaultESP.libreswan == "aes_gcm128;modp2048")
        #expect(Proposal(.aes128gcm16).strongSwan == "aes128gcm16")
        #expect(Proposal(.aes256gcm16, .sha384, .ecp384).strongSwan == "aes256gcm16-prfsha384-ecp384")
        #expect(Proposal(.aes256gcm16, .sha384, .ecp384).libreswan == "aes_gcm256-sha2_384;dh20")
    }

    @Test("a PSK never shows in a description")
    func secretStaysSecret() throws {
        let s = Secret.random()
        let c = IKEConfiguration(local: Endpoint(host: "west", address: IPAddress("192.1.2.45")!),
                                 remote: Endpoint(host: "east", address: IPAddress("192.1.2.23")!), authentication: .psk(s))
        #expect(!"\(c)".contains(s.value))
        #expect(!"\(c.authentication)".contains(s.value))
        #expect(s.value.count == 40)
    }

    @Test("route-based styles need subnets; both ends of one family")
    func validation() {
        let west = Endpoint(host: "west", address: IPAddress("192.1.2.45")!)
        let east = Endpoint(host: "east", address: IPAddress("192.1.2.23")!)
        #expect(throws: DaemonError.self) { try IKEConfiguration(local: west, remote: east, style: .xfrmInterface(id: 1)).validate() }
        let east6 = Endpoint(host: "east", address: IPAddress("2001:db8:1:2::23")!)
        #expect(throws: DaemonError.self) { try IKEConfiguration(local: west, remote: east6).validate() }
        #expect(throws: Never.self) { try IKEConfiguration(local: west, remote: east).validate() }
    }

    @Test("libreswan's whack --showstates, with and without the old numeric prefixes, and 5.x's state names")
    func showstates() {
        let text = """
        000 #1: "xfrmlab":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); REKEY in 27933s; REPLACE in 28203s; newest; idle;
        000 #2: "xfrmlab":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); REKEY in 28040s; newest; eroute owner; IKE SA #1; idle;
        000 #2: "xfrmlab" esp.c4ce3b33@192.1.2.23 esp.d8b4ed72@192.1.2.45 tun.0@192.1.2.23 tun.0@192.1.2.45 Traffic: ESPin=84B ESPout=168B ESPmax=2^63B
        #3: "other":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); newest;
        """
        let states = Libreswan.parseStates(text, name: "xfrmlab", local: IPAddress("192.1.2.45")!, remote: IPAddress("192.1.2.23")!)
        #expect(states.count == 1)
        let ike = states[0]
        #expect(ike.established && ike.serial == "#1")
        #expect(ike.children.count == 1)
        let child = ike.children[0]
        #expect(child.installed && child.outboundSPI == 0xc4ce3b33 && child.inboundSPI == 0xd8b4ed72)
        #expect(child.bytesIn == 84 && child.bytesOut == 168)

        let v6 = """
        #1: "xfrmlab":500 STATE_V2_ESTABLISHED_IKE_SA (established IKE SA); newest;
        #2: "xfrmlab":500 STATE_V2_ESTABLISHED_CHILD_SA (established Child SA); newest; IKE SA #1; idle;
        #2: "xfrmlab" esp:c981e455@2001:db8:1:2::23 esp:520cf06a@2001:db8:1:2::45 tun:0@2001:db8:1:2::23 Traffic: ESPin=0B ESPout=0B
        """
        let states6 = Libreswan.parseStates(v6, name: "xfrmlab", local: IPAddress("2001:db8:1:2::45")!, remote: IPAddress("2001:db8:1:2::23")!)
        #expect(states6.first?.children.first?.outboundSPI == 0xc981e455 && states6.first?.children.first?.inboundSPI == 0x520cf06a)

        // libreswan 5.2 (trixie), as DaemonVersionTests printed it: the states lost `STATE_V2_`.
        let five = """
        #1: "xfrmlab":500 ESTABLISHED_IKE_SA (established IKE SA); REKEY in 28062s; REPLACE in 28796s; newest; idle;
        #2: "xfrmlab":500 ESTABLISHED_CHILD_SA (established Child SA); REKEY in 27954s; REPLACE in 28796s; newest; eroute owner; IKE SA #1; idle;
        #2: "xfrmlab" esp.c7ed2f0c@192.1.2.23 esp.34173025@192.1.2.45 tun.0@192.1.2.23 tun.0@192.1.2.45 Traffic: ESPin=41B ESPout=51B ESPmax=2^63B
        """
        let states5 = Libreswan.parseStates(five, name: "xfrmlab", local: IPAddress("192.1.2.45")!, remote: IPAddress("192.1.2.23")!)
        #expect(states5.count == 1 && states5[0].established && states5[0].state == "ESTABLISHED_IKE_SA")
        #expect(states5.first?.children.first.map { $0.installed && $0.outboundSPI == 0xc7ed2f0c && $0.inboundSPI == 0x34173025 } == true)
    }

    @Test("vici messages survive encoding and decoding")
    func vici() throws {
        let m = ViciMessage([("a", .value(Array("1".utf8))),
                             ("s", .section(ViciMessage([("b", .value(Array("2".utf8))), ("l", .list([Array("x".utf8), Array("y".utf8)]))])))])
        let back = try ViciMessage.decode(ArraySlice(m.encoded()))
        #expect(back["a"]?.string == "1")
        #expect(back["s"]?.section?["b"]?.string == "2")
        #expect(back["s"]?.section?["l"]?.strings == ["x", "y"])
        #expect(throws: DaemonError.self) { try ViciMessage.decode(ArraySlice([1, 5, 0x61])) }
        #expect(throws: DaemonError.self) { try ViciMessage.decode(ArraySlice([2])) }
    }

    @Test("the fixtures render for every style, for both daemons", arguments: [
        ConnectionStyle.policy, .markedPolicy(mark: 0x10), .vti(key: 0x20), .xfrmInterface(id: 7),
    ])
    func fixturesRender(style: ConnectionStyle) throws {
        let values: [String: String] = [
            "NAMESPACE": "xl000000-west", "DIRECTORY": "/d", "NAME": "xfrmlab", "LOCAL_ADDRESS": "192.1.2.45",
            "REMOTE_ADDRESS": "192.1.2.23", "IKE_PROPOSALS": "p", "ESP_PROPOSALS": "e", "LOCAL_ID": "192.1.2.45",
            "REMOTE_ID": "192.1.2.23", "LOCAL_TS": "192.0.1.0/24", "REMOTE_TS": "192.0.2.0/24", "AUTH": "psk",
            "IF_ID": style.name == "xfrmi" ? "0x7" : "", "MARK_IN": style.name == "vti" ? "0x20/0xffffffff" : "",
            "MARK_OUT": style.name == "vti" || style.name == "marked-policy" ? "0x10/0xffffffff" : "", "PSK": "k",
            "LOCAL_CERT": "", "SET_MARK_OUT": style.name == "policy" ? "0x100/0xff00" : "", "SET_MARK_IN": "",
        ]
        let swanctl = try Template.load("strongswan/swanctl.conf").render(values)
        #expect(swanctl.contains("if_id_in = 0x7") == (style.name == "xfrmi"))
        #expect(swanctl.contains(" mark_out = 0x10/0xffffffff") == (style.name != "policy" && style.name != "xfrmi"))
        #expect(swanctl.contains("set_mark_out = 0x100/0xff00") == (style.name == "policy"))
        #expect(!swanctl.contains("set_mark_in"))
        #expect(!swanctl.contains("{{"))
    }
}
