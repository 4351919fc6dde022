/// Checks of names and values that do not depend on the rest of the topology. Each returns
/// nil when the value is fine, or the message of a problem.
enum Check {
    private static func isLower(_ c: Unicode.Scalar) -> Bool { ("a"..."z").contains(c) }
    private static func isUpper(_ c: Unicode.Scalar) -> Bool { ("A"..."Z").contains(c) }
    private static func isDigit(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }

    /// `^[a-z][a-z0-9-]{0,max-1}$`, explaining what is wrong.
    private static func lowerCaseName(_ name: String, kind: String, maxLength: Int, why: String) -> String? {
        let scalars = name.unicodeScalars
        if let first = scalars.first, isLower(first), scalars.count <= maxLength,
           scalars.allSatisfy({ isLower($0) || isDigit($0) || $0 == "-" }) {
            return nil
        }
        var reasons: [String] = []
        if scalars.isEmpty { reasons.append("is empty") }
        if scalars.contains("/") { reasons.append("contains a path separator") }
        if scalars.contains(".") { reasons.append("contains a dot") }
        if scalars.contains(where: isUpper) { reasons.append("contains upper-case letters") }
        let others = scalars.filter { !(isLower($0) || isUpper($0) || isDigit($0) || $0 == "-" || $0 == "/" || $0 == ".") }
        if !others.isEmpty {
            var seen: [Unicode.Scalar] = []
            for c in others where !seen.contains(c) { seen.append(c) }
            reasons.append("contains \(quoted(String(String.UnicodeScalarView(seen.prefix(8)))))")
        }
        if let first = scalars.first, !isLower(first), !isUpper(first) { reasons.append("does not start with a letter") }
        if scalars.count > maxLength { reasons.append("is longer than \(maxLength) characters") }
        return "\(quoted(name)) is not a valid \(kind) name: it \(reasons.joined(separator: ", ")); "
            + "\(kind) names are 1-\(maxLength) lower-case letters, digits and '-', starting with a letter (\(why))"
    }

    static func hostName(_ name: String) -> String? {
        lowerCaseName(name, kind: "host", maxLength: 15, why: "they become part of namespace names and file paths")
    }

    static func networkName(_ name: String) -> String? {
        lowerCaseName(name, kind: "network", maxLength: 32, why: "they become part of namespace names and file paths")
    }

    /// What the kernel accepts (at most IFNAMSIZ-1 bytes, no '/', ':' or whitespace), narrowed
    /// to `^[A-Za-z0-9_.-]{1,15}$` and neither `.` nor `..`.
    static func interfaceName(_ name: String) -> String? {
        let scalars = name.unicodeScalars
        let ok = (1...15).contains(scalars.count) && name != "." && name != ".."
            && scalars.allSatisfy { isLower($0) || isUpper($0) || isDigit($0) || $0 == "_" || $0 == "." || $0 == "-" }
        return ok ? nil : "\(quoted(name)) is not a valid interface name: use 1-15 letters, digits, '_', '.' and '-' (not \".\" or \"..\")"
    }

    /// The topology's own name: 1-64 letters, digits, '_', '.' and '-', starting with a letter or digit.
    static func topologyName(_ name: String) -> String? {
        let scalars = name.unicodeScalars
        if let first = scalars.first, isLower(first) || isUpper(first) || isDigit(first), scalars.count <= 64,
           scalars.allSatisfy({ isLower($0) || isUpper($0) || isDigit($0) || $0 == "_" || $0 == "." || $0 == "-" }) {
            return nil
        }
        return "\(quoted(name)) is not a valid topology name: use 1-64 letters, digits, '_', '.' and '-', starting with a letter or digit"
    }

    /// Only `net.*` sysctls belong to a network namespace; everything else is global.
    static func sysctlKey(_ key: String) -> String? {
        let format = "sysctl keys are net.NAME with lower-case letters, digits, '_', '-' and single dots (no \"/\", no \"..\")"
        if key.unicodeScalars.contains("/") || key.contains("..") || key.hasSuffix(".") {
            return "\(quoted(key)) is not a valid sysctl key: \(format)"
        }
        guard key.hasPrefix("net.") else {
            return "\(quoted(key)) is not a per-namespace sysctl: only net.* sysctls are set inside the host's namespace; "
                + "anything else would change the machine running the lab"
        }
        guard key.unicodeScalars.count > 4,
              key.unicodeScalars.allSatisfy({ isLower($0) || isDigit($0) || $0 == "_" || $0 == "." || $0 == "-" }) else {
            return "\(quoted(key)) is not a valid sysctl key: \(format)"
        }
        return nil
    }

    static func sysctlValue(_ value: String) -> String? {
        if value.isEmpty { return "a sysctl value must not be empty" }
        if value.unicodeScalars.contains(where: { $0 == "\n" || $0 == "\r" }) {
            return "\(quoted(value)) spans several lines; a sysctl value is a single line"
        }
        if value.unicodeScalars.contains(where: { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F }) {
            return "\(quoted(value)) contains control characters"
        }
        return nil
    }

    /// Why `text` is not a CIDR: a bad address or a bad prefix length.
    static func cidrProblem(_ text: String) -> String {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        let what = "\(quoted(text)) is not a CIDR (address/length)"
        guard parts.count <= 2 else { return what }
        guard let address = IPAddress(String(parts[0])) else {
            return parts.count == 2 ? "\(what): \(quoted(String(parts[0]))) is not an IP address" : "\(quoted(text)) is not an IP address or CIDR"
        }
        return "\(what): the prefix length must be 0...\(address.bitCount)"
    }

    static func familyName(_ family: IPAddress.Family) -> String { family == .ipv4 ? "IPv4" : "IPv6" }
}

extension CIDR {
    /// The highest address of the prefix (the IPv4 broadcast address).
    var lastAddress: IPAddress {
        var bytes = address.bytes
        for i in 0..<bytes.count {
            let keep = Swift.max(0, Swift.min(8, prefixLength - i * 8))
            bytes[i] |= keep == 8 ? 0 : UInt8(truncatingIfNeeded: 0xFF >> keep)
        }
        return family == .ipv4 ? .v4(bytes) : .v6(bytes)
    }
}
