import ArgumentParser
import Foundation
import Lab
import Namespaces
import Netlink
import Xfrm

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a run's hosts, links, addresses, routes, rules, tunnel devices, XFRM states and policies, read back from the kernel.")

    @OptionGroup var global: GlobalOptions
    @OptionGroup var selection: RunSelection

    @Flag(help: "List the runs on this machine instead.")
    var runs = false

    func run() throws {
        global.bootstrap()
        try requireRoot()
        if runs {
            for r in Run.all() {
                let what = r.live ? "live (pid \(r.state?.pid ?? 0))" : (r.state?.detached == true ? "up (detached)" : "dead: `xfrmlab gc` removes it")
                print("\(r.id)\t\(r.state?.topology ?? "?")\t\(r.namespaces.count) namespace(s)\t\(what)")
            }
            return
        }
        let found = try RunLookup.select(selection.id)
        let hosts = (found.state?.namespaces ?? [:]).sorted { $0.key < $1.key }
        print("run \(found.id): \(found.state?.topology ?? "?")\(found.state?.topologyFile.map { " (\($0))" } ?? "")")
        for (host, name) in hosts {
            let ns = try Namespace.open(name: name)
            defer { ns.delete(keepingEntry: true) }
            let xfrm = try? ns.netlinkSocket(protocol: NetlinkSocket.xfrm)
            let snap = try NamespaceSnapshot.capture(route: ns.route, xfrm: xfrm, namespace: name)
            print("\(host) [\(name)]")
            print(snap.render(indent: "  "), terminator: "")
            if let xfrm { print(try XfrmReport.render(route: ns.route, xfrm: xfrm, namespace: name), terminator: "") }
            xfrm?.close()
        }
    }
}
