import Foundation
import TestSupport
import Testing
import Topology


/// Breaks YAML text the way editing accidents and hostile input do.
struct Mutator {
    var rng: SplitMix64

    static let fragments: [[UInt8]] = [
        ":", "-", "{", "}", "[", "]", ",", "\t", "\0", "#", "&a", "*a", "!!int", "|", ">", "'", "\"", "\n", " ",
        "? ", "%YAML 1.1\n", "---\n", "...", "\\", "\r", "\u{FEFF}", "é", "\u{2028}",
        "99999999999999999999999999999999", "-1", "0x", "/", "/33", "::", "null", "~", "true",
    ].map { Array($0.utf8) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }

    mutating func mutate(_ text: [UInt8]) -> [UInt8] {
        var bytes = text
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        func joined() -> [UInt8] { Array(lines.joined(separator: [UInt8(ascii: "\n")])) }
        switch int(0...7) {
        case 0 where !bytes.isEmpty:  // delete a character
            bytes.remove(at: int(0...bytes.count - 1))
        case 1 where !lines.isEmpty:  // duplicate a line
            let i = int(0...lines.count - 1)
            lines.insert(lines[i], at: i)
            bytes = joined()
        case 2 where lines.count > 1:  // swap two lines
            lines.swapAt(int(0...lines.count - 1), int(0...lines.count - 1))
            bytes = joined()
        case 3 where !lines.isEmpty:  // delete a line
            lines.remove(at: int(0...lines.count - 1))
            bytes = joined()
        case 4:  // insert random bytes
            let count = int(1...6)
            bytes.insert(contentsOf: (0..<count).map { _ in UInt8(truncatingIfNeeded: int(0...255)) }, at: int(0...bytes.count))
        case 5 where !bytes.isEmpty:  // overwrite a character with a YAML-significant fragment
            let i = int(0...bytes.count - 1)
            bytes.replaceSubrange(i...i, with: Self.fragments[int(0...Self.fragments.count - 1)])
        default:  // insert a fragment
            bytes.insert(contentsOf: Self.fragments[int(0...Self.fragments.count - 1)], at: int(0...bytes.count))
        }
        return bytes
    }
}

@Suite("Mutated topologies")
struct MutationTests {
    /// Whatever the text, parse returns a topology or throws a TopologyError with usable
    /// problems; it never crashes (the test getting to its end is the proof).
    @Test(arguments: [("north-east-west.yaml", UInt64(0x5EED_0001), 300), ("client1-client2-server.yaml", 0x5EED_0002, 100)])
    func mutationsNeverCrash(file: String, seed: UInt64, rounds: Int) throws {
        let original = Array(try Fixtures.text(Fixtures.example(file)).utf8)
        var mutator = Mutator(rng: SplitMix64(state: seed))
        var loaded = 0, refused = 0
        for round in 0..<rounds {
            var bytes = original
            for _ in 0..<mutator.int(1...4) { bytes = mutator.mutate(bytes) }
            let text = String(decoding: bytes, as: UTF8.self)
            let name = "mutant-\(round).yaml"
            do {
                let topology = try Topology.parse(yaml: text, file: name)
                loaded += 1
                check(topology, round: round)
            } catch let error as TopologyError {
                refused += 1
                #expect(!error.problems.isEmpty, "round \(round)")
                for problem in error.problems {
                    #expect(problem.line >= 0 && problem.column >= 0, "round \(round): \(problem)")
                    #expect(!problem.message.isEmpty, "round \(round): \(problem)")
                    #expect(problem.file == name)
                }
                #expect(error.description.split(separator: "\n", omittingEmptySubsequences: false).count == error.problems.count,
                        "round \(round): one line per problem:\n\(error)")
            } catch {
                Issue.record("round \(round): not a TopologyError: \(error)")
            }
        }
        #expect(loaded + refused == rounds)
        #expect(refused > 0)
    }

    /// What validation promises about a topology it accepts.
    func check(_ t: Topology, round: Int) {
        let hosts = Set(t.hosts.map(\.name))
        #expect(hosts.count == t.hosts.count, "round \(round): unique host names")
        #expect(Set(t.networks.map(\.name)).count == t.networks.count, "round \(round): unique network names")
        for network in t.networks {
            #expect(!network.subnets.isEmpty && !network.members.isEmpty, "round \(round)")
            for member in network.members {
                #expect(hosts.contains(member.host), "round \(round): member \(member.host)")
                for address in member.addresses {
                    #expect(network.subnets.contains { $0.prefixLength == address.prefixLength && $0.contains(address.address) },
                            "round \(round): \(address) in \(network.subnets)")
                }
            }
            if let bridge = network.bridge {
                #expect(network.members.contains { $0.host == bridge }, "round \(round): bridge \(bridge)")
            }
        }
        for host in t.hosts {
            let interfaces = Set(t.attachments(of: host.name).map(\.attachment.interface))
            #expect(interfaces.count == t.attachments(of: host.name).count, "round \(round): unique interfaces")
            for route in host.routes {
                if let via = route.via { #expect(via.family == route.to.family, "round \(round): \(route)") }
                if let dev = route.dev { #expect(dev == "lo" || interfaces.contains(dev), "round \(round): \(route)") }
            }
            for masquerade in host.masquerade {
                #expect(interfaces.contains(masquerade.out), "round \(round)")
            }
        }
    }
}
