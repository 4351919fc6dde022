import Foundation
import Glibc
import Lab
import Netlink
import Probes

/// strongSwan's connmark plugin: where several peers share traffic selectors, the reply must
/// leave through the SA of the peer the connection came from. The plugin marks ESP by its SPI
/// on the way in, saves the mark in the connection (CONNMARK --save), and restores it on the way
/// out (CONNMARK --restore), so the reply's mark picks the outbound policy and SA. Here with
/// nftables on east: without the rules, east's answer (unmarked) misses the marked outbound
/// policy and west drops it in clear; with them it is answered through ESP. A behaviour of every
/// kernel with conntrack marks (REPRODUCES: the connection mark feeds the policy lookup).
enum ConnmarkInboundSA {
    static let reproduction = Reproduction("connmark-inbound-sa") { lab in
        let west = try lab.namespace("west"), east = try lab.namespace("east")
        guard let end = lab.tunnels?.end("west-east", on: "east") else { throw Inconclusive("no tunnel west-east on east") }
        let to: [UInt8] = [192, 0, 2, 254], from: [UInt8] = [192, 0, 1, 254]
        // west marks its datagram 0x101 (its outbound policy wants 0x1/0xff); east sets no mark.
        let without = try Echo.udp(from: west, to: east, destination: to, port: 7140, source: from, mark: 0x101, timeout: 2)
        let rules = """
            table inet xlconnmark {
              chain pre {
                type filter hook prerouting priority mangle; policy accept;
                esp spi \(end.inboundSPI) meta mark set 0x1
                meta l4proto udp meta mark 0x1 ct mark set meta mark
              }
              chain out {
                type route hook output priority mangle; policy accept;
                ct mark != 0 meta mark set ct mark
              }
            }

            """
        let nft = try east.execute(["nft", "-f", "-"], input: rules, timeout: 20)
        guard nft.succeeded else { throw Inconclusive("nft on east: \(nft.standardError)") }
        let (with, trace) = try lab.trace(hosts: ["east"]) {
            try Echo.udp(from: west, to: east, destination: to, port: 7141, source: from, mark: 0x101, timeout: 5)
        }
        let answerESP = trace.hops(on: "east").first { $0.hook == .postrouting && $0.packet.proto == .esp && $0.outInterface == "eth1" }
        let answer = trace.hops(on: "east").first { $0.hook == .output && $0.packet.sourcePort == 7141 }
        let hex = { (v: UInt32) in "0x" + String(v, radix: 16) }
        guard !without.answered else { throw Inconclusive("east answered without any mark, so the policy does not depend on it: \(without)") }
        return Observation(bugPresent: with.answered && answerESP != nil, evidence: [
            "without the CONNMARK rules: \(without)",
            "with `esp spi \(hex(end.inboundSPI)) meta mark set 0x1`, `ct mark set meta mark`, restore in OUTPUT: \(with)",
            answer.map { "east's answer at OUTPUT: ct mark \($0.connectionMark.map(hex) ?? "?"), mark \(hex($0.mark))" } ?? "east's answer not seen at OUTPUT",
            answerESP.map { "it left eth1 as ESP spi \($0.packet.spi.map(hex) ?? "?")" } ?? "no ESP left east's eth1",
        ])
    }
}
