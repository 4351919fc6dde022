import CNetlink
import Foundation
import Netlink
import Yams

/// A step's raw netlink request, for what iproute2 refuses before sending (an xfrm interface
/// with if_id 0, a policy with XFRMA_IF_ID 0 …):
///
///     netlink:
///       protocol: route                  # or xfrm
///       type: RTM_NEWLINK                # a name below, or a number
///       flags: [create, excl]            # request and ack are always set
///       header: ifinfomsg                # a zeroed header of that size, or "hex 0a00…"
///       attributes:
///         - IFLA_IFNAME: ipsec0          # text: NUL-terminated
///         - IFLA_LINKINFO:               # a list: nested
///             - IFLA_INFO_KIND: xfrm
///             - IFLA_INFO_DATA:
///                 - IFLA_XFRM_IF_ID: u32 0   # u8/u16/u32/u64 N, hex AABB, flag
enum NetlinkStep {
    /// Message types by name (linux/rtnetlink.h, linux/xfrm.h).
    static let types: [String: (UInt16, protocolName: String)] = [
        "RTM_NEWLINK": (16, "route"), "RTM_DELLINK": (17, "route"), "RTM_SETLINK": (19, "route"),
        "RTM_NEWADDR": (20, "route"), "RTM_NEWROUTE": (24, "route"), "RTM_NEWRULE": (32, "route"),
        "XFRM_MSG_NEWSA": (16, "xfrm"), "XFRM_MSG_DELSA": (17, "xfrm"), "XFRM_MSG_NEWPOLICY": (19, "xfrm"),
        "XFRM_MSG_DELPOLICY": (20, "xfrm"), "XFRM_MSG_UPDPOLICY": (25, "xfrm"), "XFRM_MSG_UPDSA": (26, "xfrm"),
        "XFRM_MSG_MIGRATE": (33, "xfrm"), "XFRM_MSG_NEWSPDINFO": (36, "xfrm"),
    ]
    /// Attribute numbers by name (checked against bookworm's linux/if_link.h, if_tunnel.h and
    /// xfrm.h; XFRMA_SA_DIR, newer than those headers, follows XFRMA_MTIMER_THRESH = 32); the
    /// nest decides what a number means, so the names stay unique.
    static let attributes: [String: UInt16] = [
        "IFLA_ADDRESS": 1, "IFLA_MTU": 4, "IFLA_IFNAME": 3, "IFLA_LINK": 5, "IFLA_MASTER": 10, "IFLA_LINKINFO": 18,
        "IFLA_NET_NS_FD": 28, "IFLA_INFO_KIND": 1, "IFLA_INFO_DATA": 2,
        "IFLA_XFRM_LINK": 1, "IFLA_XFRM_IF_ID": 2, "IFLA_XFRM_COLLECT_METADATA": 3,
        "IFLA_VTI_LINK": 1, "IFLA_VTI_IKEY": 2, "IFLA_VTI_OKEY": 3, "IFLA_VTI_LOCAL": 4, "IFLA_VTI_REMOTE": 5, "IFLA_VTI_FWMARK": 6,
        "XFRMA_ALG_AUTH": 1, "XFRMA_ALG_CRYPT": 2, "XFRMA_ALG_COMP": 3, "XFRMA_ENCAP": 4, "XFRMA_TMPL": 5, "XFRMA_SA": 6, "XFRMA_POLICY": 7,
        "XFRMA_ALG_AEAD": 18, "XFRMA_ALG_AUTH_TRUNC": 20, "XFRMA_MARK": 21, "XFRMA_OFFLOAD_DEV": 28,
        "XFRMA_OUTPUT_MARK": 29, "XFRMA_SET_MARK": 29, "XFRMA_SET_MARK_MASK": 30, "XFRMA_IF_ID": 31, "XFRMA_SA_DIR": 33,
    ]
    /// Fixed headers by name, sent zeroed.
    static let headers: [String: Int] = ["ifinfomsg": 16, "ifaddrmsg": 8, "rtmsg": 12, "fib_rule_hdr": 12]

    static func parse(_ node: Node, field f: String, reader r: Reader) throws -> ScriptStep.Action {
        let m = try r.mapping(node, f)
        let known = ["protocol", "type", "flags", "header", "attributes"]
        for (k, v) in m where !known.contains(k) { throw r.error(v.key, "\(f).\(k)", "unknown key (known: \(known.joined(separator: ", ")))") }
        guard let t = m["type"]?.value else { throw r.error(node, "\(f).type", "missing: RTM_NEWLINK, XFRM_MSG_NEWPOLICY … or a number") }
        let typeText = try r.string(t, "\(f).type")
        var protocolName = try m["protocol"].map { try r.string($0.value, "\(f).protocol") }
        let type: UInt16
        if let known = types[typeText] {
            type = known.0
            if protocolName == nil { protocolName = known.protocolName }
            if protocolName != known.protocolName { throw r.error(t, "\(f).type", "\(typeText) is a \(known.protocolName) message, not \(protocolName!)") }
        } else if let n = UInt16(typeText) {
            type = n
        } else {
            throw r.error(t, "\(f).type", "\"\(typeText)\" is not a message type (known: \(types.keys.sorted().joined(separator: ", ")), or a number)")
        }
        guard let proto = protocolName, ["route", "xfrm"].contains(proto) else {
            throw r.error(m["protocol"]?.value ?? node, "\(f).protocol", "expected route or xfrm")
        }
        var flags: MessageFlags = [.request, .ack]
        if let fl = m["flags"]?.value {
            for (i, name) in try r.strings(fl, "\(f).flags").enumerated() {
                switch name {
                case "create": flags.insert(.create)
                case "excl": flags.insert(.exclusive)
                case "replace": flags.insert(.replace)
                default: throw r.error(fl.sequence?[i] ?? fl, "\(f).flags[\(i)]", "\"\(name)\" is not create, excl or replace")
                }
            }
        }
        var header: [UInt8] = []
        if let h = m["header"]?.value {
            let text = try r.string(h, "\(f).header")
            if let size = headers[text] {
                header = [UInt8](repeating: 0, count: size)
            } else if text.hasPrefix("hex "), let bytes = hex(String(text.dropFirst(4))) {
                header = bytes
            } else {
                throw r.error(h, "\(f).header", "\"\(text)\" is not \(headers.keys.sorted().joined(separator: ", ")) or hex BYTES")
            }
        }
        let attrs = try m["attributes"].map { try attributeList($0.value, "\(f).attributes", r) } ?? []
        let summary = "netlink \(typeText) " + attrs.map(\.words).joined(separator: " ")
        return .netlink(Request(type: type, flags: flags, headerBytes: header, attributes: attrs.map(\.attribute), summary: summary),
                        protocolName: proto)
    }

    /// The attributes, each with the words it was written in (for the evidence).
    static func attributeList(_ node: Node, _ f: String, _ r: Reader) throws -> [(attribute: Attribute, words: String)] {
        guard let items = node.sequence else { throw r.error(node, f, "expected a list of attributes (- NAME: value)") }
        return try items.enumerated().map { i, item in
            let m = try r.mapping(item, "\(f)[\(i)]")
            guard m.count == 1, let (name, pair) = m.first else { throw r.error(item, "\(f)[\(i)]", "expected one NAME: value") }
            let field = "\(f)[\(i)].\(name)"
            guard let number = attributes[name] ?? UInt16(name) else {
                throw r.error(pair.key, field, "\"\(name)\" is not an attribute name (known: \(attributes.keys.sorted().joined(separator: ", ")), or a number)")
            }
            if pair.value.sequence != nil {
                let children = try attributeList(pair.value, field, r)
                return (.nest(number, children.map(\.attribute)), "\(name)[" + children.map(\.words).joined(separator: " ") + "]")
            }
            let text = try r.string(pair.value, field)
            let words = text.split(separator: " ", maxSplits: 1).map(String.init)
            func int<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard words.count == 2, let v = words[1].hasPrefix("0x") ? T(words[1].dropFirst(2), radix: 16) : T(words[1]) else {
                    throw r.error(pair.value, field, "\"\(text)\": expected \(words[0]) and a number that fits")
                }
                return v
            }
            let attribute: Attribute
            switch words[0] {
            case "u8": attribute = .u8(number, try int(UInt8.self))
            case "u16": attribute = .u16(number, try int(UInt16.self))
            case "u32": attribute = .u32(number, try int(UInt32.self))
            case "u64": attribute = .u64(number, try int(UInt64.self))
            case "flag" where words.count == 1: attribute = .flag(number)
            case "hex":
                guard words.count == 2, let bytes = hex(words[1]) else { throw r.error(pair.value, field, "\"\(text)\": expected hex BYTES") }
                attribute = Attribute(number, bytes: bytes)
            default: attribute = .string(number, text)
            }
            return (attribute, words[0] == "flag" ? name : "\(name)=\(words.count == 2 && words[0] != "hex" && words[0].hasPrefix("u") ? words[1] : text)")
        }
    }

    static func hex(_ s: String) -> [UInt8]? {
        let digits = s.filter { !$0.isWhitespace }
        guard digits.count % 2 == 0, digits.allSatisfy(\.isHexDigit) else { return nil }
        var out: [UInt8] = []
        var i = digits.startIndex
        while i < digits.endIndex {
            let j = digits.index(i, offsetBy: 2)
            out.append(UInt8(digits[i..<j], radix: 16)!)
            i = j
        }
        return out
    }
}
