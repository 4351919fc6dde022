import CNetlink
import Glibc

/// An address on a link (`RTM_NEWADDR` in a dump).
public struct AddressInfo: Sendable, Hashable, CustomStringConvertible {
    public var index: Int32
    public var family: UInt8
    public var prefixLength: UInt8
    /// Network-order bytes (`IFA_LOCAL`, else `IFA_ADDRESS`).
    public var address: [UInt8]
    public var flags: UInt32
    public var label: String?

    public init(_ message: Message) throws {
        let h = try message.header(ifaddrmsg.self)
        let attrs = try message.attributes(after: MemoryLayout<ifaddrmsg>.size)
        index = Int32(bitPattern: h.ifa_index)
        family = h.ifa_family
        prefixLength = h.ifa_prefixlen
        address = (attrs[IFA_LOCAL] ?? attrs[IFA_ADDRESS])?.payload ?? []
        flags = attrs[IFA_FLAGS]?.u32 ?? UInt32(h.ifa_flags)
        label = attrs[IFA_LABEL]?.string
    }

    public var description: String { "\(formatAddress(address))/\(prefixLength)" }
}

/// Address requests (`RTM_*ADDR`).
public enum AddressRequest {
    /// Adds `address/prefixLength` to link `index`. IPv6 addresses skip duplicate address
    /// detection (`nodad`), so they are usable at once.
    ///
    /// Equivalent to `ip address add ADDRESS/LEN dev NAME [nodad]`.
    public static func add(namespace: String?, index: Int32, interface: String, address: [UInt8],
                           prefixLength: Int, origin: String? = nil) -> Request {
        var h = ifaddrmsg()
        h.ifa_family = addressFamily(of: address)
        h.ifa_prefixlen = UInt8(prefixLength)
        h.ifa_index = UInt32(bitPattern: index)
        h.ifa_scope = nl8(RT_SCOPE_UNIVERSE.rawValue)
        let v6 = address.count == 16
        var attrs: [Attribute] = [Attribute(nl16(IFA_LOCAL), bytes: address), Attribute(nl16(IFA_ADDRESS), bytes: address)]
        if v6 { attrs.append(.u32(nl16(IFA_FLAGS), UInt32(IFA_F_NODAD))) }
        return Request(type: nl16(RTM_NEWADDR), flags: .add, header: h, attributes: attrs,
                       summary: ipPrefix(namespace) + "address add \(formatAddress(address))/\(prefixLength) dev \(interface)\(v6 ? " nodad" : "")",
                       origin: origin)
    }

    /// Equivalent to `ip address show` (one family, or both with `AF_UNSPEC`).
    public static func dump(namespace: String?, family: UInt8 = UInt8(AF_UNSPEC)) -> Request {
        var h = ifaddrmsg()
        h.ifa_family = family
        return Request(type: nl16(RTM_GETADDR), flags: .dump, header: h, summary: ipPrefix(namespace) + "address show")
    }
}

extension NetlinkSocket {
    /// Every address in the namespace. Equivalent to `ip address show`.
    public func addresses(namespace: String? = nil) throws -> [AddressInfo] {
        try dump(AddressRequest.dump(namespace: namespace)).filter { $0.type == nl16(RTM_NEWADDR) }.map(AddressInfo.init)
    }
}
