import Foundation
import Glibc
import Namespaces
import Netlink
import Topology

/// The tunnel device and routes of a route-based connection, for a daemon that expects them to
/// exist (strongSwan: "the VTI device must be created beforehand"; xfrm interfaces likewise).
/// libreswan makes its own (its updown script for VTI, pluto itself for `ipsec-interface=`).
enum TunnelDevices {
    /// Makes the device of `configuration.style` in `ns`, routes the remote subnets into it (in
    /// `table`, default main) and returns the device's name (nil for policy-based styles). Equivalent to
    /// `ip link add vti1 type vti local L remote R ikey K okey K; sysctl net.ipv4.conf.vti1.disable_policy=1;
    /// ip route add SUBNET dev vti1` (or `ip link add ipsec7 type xfrm dev eth1 if_id 7; …`).
    static func make(for configuration: IKEConfiguration, in ns: Namespace, table: UInt32? = nil) throws -> String? {
        guard let device = configuration.style.device else { return nil }
        let local = configuration.local.address.bytes, remote = configuration.remote.address.bytes
        do {
            switch configuration.style {
            case .vti(let key, _):
                try ns.route.request(LinkRequest.vti(namespace: ns.name, name: device, local: local, remote: remote,
                                                     inputKey: key, outputKey: key, up: true))
                // Policies are the SAs' business on a VTI device, not the device's traffic's.
                let family = configuration.family == .ipv4 ? "ipv4" : "ipv6"
                try? ns.setSysctls([("net.\(family).conf.\(device).disable_policy", "1")])
            case .xfrmInterface(let id):
                guard let outer = try ns.route.addresses().first(where: { $0.address == local }) else {
                    throw DaemonError(.configuration, "\(ns.name) has no address \(configuration.local.address) to put \(device) on")
                }
                let name = try ns.route.links().first { $0.index == outer.index }?.name
                try ns.route.request(LinkRequest.xfrmInterface(namespace: ns.name, name: device, interfaceID: id,
                                                               link: outer.index, linkName: name, up: true))
            default:
                return nil
            }
            guard let index = try ns.route.link(named: device)?.index else {
                throw DaemonError(.configuration, "\(device) made in \(ns.name) but not found in its link dump")
            }
            for subnet in configuration.remote.subnets {
                try ns.route.request(RouteRequest.add(namespace: ns.name, destination: subnet.address.bytes,
                                                      prefixLength: subnet.prefixLength, outputInterface: index,
                                                      interfaceName: device, table: table ?? RouteRequest.mainTable))
            }
        } catch let e as DaemonError {
            remove(device, in: ns)
            throw e
        } catch {
            remove(device, in: ns)
            throw DaemonError(.configuration, "making \(device) for \(configuration.style) in \(ns.name): \(error)")
        }
        return device
    }

    /// Deletes the device (its routes go with it). Equivalent to `ip link del NAME`.
    static func remove(_ device: String, in ns: Namespace) {
        _ = try? ns.route.request(LinkRequest.delete(namespace: ns.name, name: device))
    }
}
