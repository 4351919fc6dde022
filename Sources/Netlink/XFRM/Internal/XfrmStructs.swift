import CNetlink
import Glibc

// Conversions between the typed XFRM values and the kernel's structs. The byte-level work
// (unions, fixed arrays, network byte order) stays in this file.

enum XfrmStructs {
    // MARK: Addresses

    static func address(_ bytes: [UInt8]) -> xfrm_address_t {
        var a = xfrm_address_t()
        withUnsafeMutableBytes(of: &a) { raw in
            for (i, b) in bytes.prefix(16).enumerated() { raw[i] = b }
        }
        return a
    }

    /// The address's bytes for `family` (4 for `AF_INET`, 16 for `AF_INET6`).
    static func bytes(_ a: xfrm_address_t, family: UInt16) -> [UInt8] {
        withUnsafeBytes(of: a) { Array($0.prefix(family == UInt16(AF_INET6) ? 16 : 4)) }
    }

    static func family(of bytes: [UInt8]) -> UInt16 { bytes.count == 16 ? UInt16(AF_INET6) : UInt16(AF_INET) }

    // MARK: Selectors

    static func selector(_ s: XfrmSelector) -> xfrm_selector {
        var c = xfrm_selector()
        c.saddr = address(s.source)
        c.daddr = address(s.destination)
        c.prefixlen_s = s.sourcePrefixLength
        c.prefixlen_d = s.destinationPrefixLength
        c.family = s.family
        c.proto = s.ipProtocol
        c.sport = s.sourcePort.bigEndian
        c.sport_mask = s.sourcePort == 0 ? 0 : 0xffff
        c.dport = s.destinationPort.bigEndian
        c.dport_mask = s.destinationPort == 0 ? 0 : 0xffff
        c.ifindex = s.interfaceIndex
        return c
    }

    /// A selector from the kernel; `AF_UNSPEC` ones take their address width from `fallbackFamily`.
    static func selector(_ c: xfrm_selector, fallbackFamily: UInt16) -> XfrmSelector {
        let family = c.family == 0 ? fallbackFamily : c.family
        var s = XfrmSelector(source: bytes(c.saddr, family: family), sourcePrefixLength: Int(c.prefixlen_s),
                             destination: bytes(c.daddr, family: family), destinationPrefixLength: Int(c.prefixlen_d),
                             ipProtocol: c.proto, sourcePort: UInt16(bigEndian: c.sport),
                             destinationPort: UInt16(bigEndian: c.dport), interfaceIndex: c.ifindex)
        s.family = c.family
        return s
    }

    // MARK: Lifetimes

    static func limits(_ l: XfrmLifetimeLimits) -> xfrm_lifetime_cfg {
        var c = xfrm_lifetime_cfg()
        c.soft_byte_limit = l.softBytes
        c.hard_byte_limit = l.hardBytes
        c.soft_packet_limit = l.softPackets
        c.hard_packet_limit = l.hardPackets
        c.soft_add_expires_seconds = l.softAddSeconds
        c.hard_add_expires_seconds = l.hardAddSeconds
        c.soft_use_expires_seconds = l.softUseSeconds
        c.hard_use_expires_seconds = l.hardUseSeconds
        return c
    }

    static func limits(_ c: xfrm_lifetime_cfg) -> XfrmLifetimeLimits {
        var l = XfrmLifetimeLimits()
        l.softBytes = c.soft_byte_limit
        l.hardBytes = c.hard_byte_limit
        l.softPackets = c.soft_packet_limit
        l.hardPackets = c.hard_packet_limit
        l.softAddSeconds = c.soft_add_expires_seconds
        l.hardAddSeconds = c.hard_add_expires_seconds
        l.softUseSeconds = c.soft_use_expires_seconds
        l.hardUseSeconds = c.hard_use_expires_seconds
        return l
    }

    static func counters(_ c: xfrm_lifetime_cur) -> XfrmLifetimeCounters {
        XfrmLifetimeCounters(bytes: c.bytes, packets: c.packets, addTime: c.add_time, useTime: c.use_time)
    }

    // MARK: Algorithms

    /// `struct xfrm_algo`, `xfrm_algo_aead` or `xfrm_algo_auth`: a 64-byte name, the key length
    /// in bits, the ICV or truncation length in bits for the latter two, then the key.
    static func attribute(_ a: XfrmAlgorithm) -> Attribute {
        func name(_ n: String) -> [UInt8] {
            let utf8 = Array(n.utf8.prefix(63))
            return utf8 + Array(repeating: 0, count: 64 - utf8.count)
        }
        switch a {
        case .aead(let n, let key, let icv):
            return Attribute(nl16(XFRMA_ALG_AEAD), bytes: name(n) + Bytes.of(UInt32(key.bits)) + Bytes.of(icv) + key.revealedBytes)
        case .encryption(let n, let key):
            return Attribute(nl16(XFRMA_ALG_CRYPT), bytes: name(n) + Bytes.of(UInt32(key.bits)) + key.revealedBytes)
        case .authentication(let n, let key, let trunc):
            return Attribute(nl16(XFRMA_ALG_AUTH_TRUNC), bytes: name(n) + Bytes.of(UInt32(key.bits)) + Bytes.of(trunc) + key.revealedBytes)
        case .compression(let n):
            return Attribute(nl16(XFRMA_ALG_COMP), bytes: name(n) + Bytes.of(UInt32(0)))
        }
    }

    /// The algorithms of a state, from its attributes. `XFRMA_ALG_AUTH` (untruncated) is read
    /// only when there is no `XFRMA_ALG_AUTH_TRUNC`: the kernel sends both for one algorithm.
    static func algorithms(_ attrs: Attributes) -> [XfrmAlgorithm] {
        func name(_ p: [UInt8]) -> String { String(decoding: p.prefix(64).prefix { $0 != 0 }, as: UTF8.self) }
        func key(_ p: [UInt8], bitsAt: Int, from start: Int) -> XfrmKey? {
            guard let bits = Bytes.load(UInt32.self, from: p[bitsAt...]) else { return nil }
            let n = (Int(bits) + 7) / 8
            guard p.count >= start + n else { return nil }
            return XfrmKey(bytes: Array(p[start..<start + n]))
        }
        var out: [XfrmAlgorithm] = []
        if let p = attrs[XFRMA_ALG_AEAD]?.payload, p.count >= 72, let k = key(p, bitsAt: 64, from: 72),
           let icv = Bytes.load(UInt32.self, from: p[68...]) {
            out.append(.aead(name: name(p), key: k, icvBits: icv))
        }
        if let p = attrs[XFRMA_ALG_CRYPT]?.payload, p.count >= 68, let k = key(p, bitsAt: 64, from: 68) {
            out.append(.encryption(name: name(p), key: k))
        }
        if let p = attrs[XFRMA_ALG_AUTH_TRUNC]?.payload, p.count >= 72, let k = key(p, bitsAt: 64, from: 72),
           let t = Bytes.load(UInt32.self, from: p[68...]) {
            out.append(.authentication(name: name(p), key: k, truncationBits: t))
        } else if let p = attrs[XFRMA_ALG_AUTH]?.payload, p.count >= 68, let k = key(p, bitsAt: 64, from: 68) {
            // Plain XFRMA_ALG_AUTH: the kernel truncates to the algorithm's default.
            out.append(.authentication(name: name(p), key: k, truncationBits: 0))
        }
        if let p = attrs[XFRMA_ALG_COMP]?.payload, p.count >= 64 {
            out.append(.compression(name: name(p)))
        }
        return out
    }

    // MARK: Encapsulation

    static func attribute(_ e: XfrmEncapsulation) -> Attribute {
        var c = xfrm_encap_tmpl()
        c.encap_type = e.type
        c.encap_sport = e.sourcePort.bigEndian
        c.encap_dport = e.destinationPort.bigEndian
        c.encap_oa = address(e.originalAddress ?? [])
        return .value(nl16(XFRMA_ENCAP), c)
    }

    static func encapsulation(_ attrs: Attributes, family: UInt16) -> XfrmEncapsulation? {
        guard let c = attrs[XFRMA_ENCAP]?.value(xfrm_encap_tmpl.self) else { return nil }
        let oa = bytes(c.encap_oa, family: family)
        return XfrmEncapsulation(sourcePort: UInt16(bigEndian: c.encap_sport), destinationPort: UInt16(bigEndian: c.encap_dport),
                                 originalAddress: oa.allSatisfy { $0 == 0 } ? nil : oa, type: c.encap_type)
    }

    // MARK: Marks

    static func attribute(_ m: XfrmMark) -> Attribute {
        var c = xfrm_mark()
        c.v = m.value
        c.m = m.mask
        return .value(nl16(XFRMA_MARK), c)
    }

    static func mark(_ attrs: Attributes) -> XfrmMark? {
        guard let c = attrs[XFRMA_MARK]?.value(xfrm_mark.self) else { return nil }
        // The kernel reports "no mark" as 0/0 on some paths; that is the same as none.
        if c.v == 0 && c.m == 0 { return nil }
        return XfrmMark(c.v, mask: c.m)
    }

    // MARK: Templates

    static func template(_ t: XfrmTemplate) -> xfrm_user_tmpl {
        var c = xfrm_user_tmpl()
        c.id.daddr = address(t.destination)
        c.id.spi = t.spi.bigEndian
        c.id.proto = t.proto.rawValue
        c.family = family(of: t.destination.isEmpty ? t.source : t.destination)
        c.saddr = address(t.source)
        c.reqid = t.reqid
        c.mode = t.mode.rawValue
        c.share = 0
        c.optional = t.optional ? 1 : 0
        c.aalgos = .max
        c.ealgos = .max
        c.calgos = .max
        return c
    }

    static func templates(_ attrs: Attributes) -> [XfrmTemplate] {
        guard let payload = attrs[XFRMA_TMPL]?.payload else { return [] }
        let size = MemoryLayout<xfrm_user_tmpl>.stride
        var out: [XfrmTemplate] = []
        var offset = 0
        while offset + size <= payload.count {
            if let c = Bytes.load(xfrm_user_tmpl.self, from: payload[offset...]) {
                var t = XfrmTemplate(source: bytes(c.saddr, family: c.family), destination: bytes(c.id.daddr, family: c.family),
                                     proto: XfrmProtocol(rawValue: c.id.proto) ?? .esp, mode: XfrmMode(rawValue: c.mode) ?? .tunnel,
                                     reqid: c.reqid, spi: UInt32(bigEndian: c.id.spi), optional: c.optional != 0)
                t.rawProtocol = c.id.proto
                out.append(t)
            }
            offset += size
        }
        return out
    }

    /// `xfrm_user_tmpl` entries back to back, for `XFRMA_TMPL`.
    static func attribute(_ templates: [XfrmTemplate]) -> Attribute {
        var bytes: [UInt8] = []
        for t in templates {
            let c = template(t)
            bytes += withUnsafeBytes(of: c) { Array($0) } + Array(repeating: 0, count: MemoryLayout<xfrm_user_tmpl>.stride - MemoryLayout<xfrm_user_tmpl>.size)
        }
        return Attribute(nl16(XFRMA_TMPL), bytes: bytes)
    }

    /// A fixed header padded to its C `sizeof` (Swift's `size` may leave out tail padding).
    static func header<T>(_ v: T) -> [UInt8] {
        Bytes.of(v) + Array(repeating: 0, count: MemoryLayout<T>.stride - MemoryLayout<T>.size)
    }
}

// `XFRMA_*` import as the named enum `xfrm_attr_type_t`.
@inline(__always) func nl16(_ v: xfrm_attr_type_t) -> UInt16 { UInt16(truncatingIfNeeded: v.rawValue) }

extension Attributes {
    subscript(type: xfrm_attr_type_t) -> Entry? { self[UInt16(truncatingIfNeeded: type.rawValue)] }
}
