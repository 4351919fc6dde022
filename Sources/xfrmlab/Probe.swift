import ArgumentParser
import Foundation
import Xfrm

struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probe",
        abstract: "Try each IPsec feature (ESP algorithms, UDP encapsulation, VTI, xfrm interfaces, marks, nftables, iptables) in a throwaway namespace and print what the kernel answered.")

    @OptionGroup var global: GlobalOptions

    func run() throws {
        global.bootstrap()
        try requireRoot()
        let started = Date()
        let capabilities = Capabilities.current
        let seconds = Date().timeIntervalSince(started)
        if global.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(capabilities), as: UTF8.self))
            return
        }
        print("kernel \(capabilities.kernel) (probed in \(String(format: "%.0f", seconds * 1000)) ms)")
        let width = Capability.Name.allCases.map(\.rawValue.count).max() ?? 0
        for c in capabilities.entries {
            let name = c.name.rawValue.padding(toLength: width, withPad: " ", startingAt: 0)
            print("\(name)  \(c.available ? "yes" : "no ")  \(c.answer)")
        }
    }
}
