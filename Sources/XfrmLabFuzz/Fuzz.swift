import Netlink
import Probes
import Topology

/// One input through every parser that takes bytes from outside: the first byte picks the
/// parser (topology files, or netlink replies of each kind), the rest is the input. None may
/// crash, hang or read out of bounds; errors are fine.
func exercise(_ input: [UInt8]) {
    guard let selector = input.first else { return }
    let rest = Array(input.dropFirst())
    switch selector % 3 {
    case 0:
        _ = try? Topology.parse(yaml: String(decoding: rest, as: UTF8.self), file: "fuzz.yaml")
    case 1:
        guard let messages = try? Message.split(rest) else { return }
        for m in messages {
            _ = try? LinkInfo(m)
            _ = try? AddressInfo(m)
            _ = try? RouteInfo(m)
            _ = try? RuleInfo(m)
            _ = try? LoggedPacket(m)
            _ = try? NetlinkSocket.parseError(m, request: "fuzz")
            if let attrs = try? m.attributes(after: 0) {
                for a in attrs where a.nested { _ = try? a.children() }
            }
        }
    default:
        _ = PacketSummary(rest)
    }
}

#if FUZZING
// Built with `swift build --sanitize fuzzer -Xswiftc -DFUZZING`: libFuzzer provides main.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    exercise(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
#else
import Foundation

/// Without the fuzzer: replays the files given (a crash found earlier, or the seeds).
@main
struct Replay {
    static func main() {
        for path in CommandLine.arguments.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else {
                print("cannot read \(path)")
                continue
            }
            exercise(Array(data))
            print("ok \(path)")
        }
    }
}
#endif
