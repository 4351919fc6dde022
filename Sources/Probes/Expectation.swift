import Foundation
import Netlink

/// A description of one hop a packet should (or should not) take, built to read like the
/// question: `.on("west", .postrouting).esp().out("eth1")`.
public struct HopPattern: Sendable, CustomStringConvertible {
    public var host: String
    public var hook: Hook?
    public var proto: PacketSummary.Proto?
    public var encapsulated: Bool?
    public var source: [UInt8]?
    public var destination: [UInt8]?
    public var destinationPort: UInt16?
    public var spi: UInt32?
    public var mark: (value: UInt32, mask: UInt32)?
    public var connectionMark: (value: UInt32, mask: UInt32)?
    public var inInterface: String?
    public var outInterface: String?

    public static func on(_ host: String, _ hook: Hook? = nil) -> HopPattern { HopPattern(host: host, hook: hook) }

    public func udp(from source: [UInt8]? = nil, to destination: [UInt8]? = nil, port: UInt16? = nil) -> HopPattern {
        var p = self
        p.proto = .udp
        p.encapsulated = false
        p.source = source ?? p.source
        p.destination = destination ?? p.destination
        p.destinationPort = port
        return p
    }
    public func tcp(from source: [UInt8]? = nil, to destination: [UInt8]? = nil, port: UInt16? = nil) -> HopPattern {
        var p = self
        p.proto = .tcp
        p.source = source ?? p.source
        p.destination = destination ?? p.destination
        p.destinationPort = port
        return p
    }
    public func icmp(from source: [UInt8]? = nil, to destination: [UInt8]? = nil) -> HopPattern {
        var p = self
        p.proto = (destination ?? source)?.count == 16 ? .icmpv6 : .icmp
        p.source = source ?? p.source
        p.destination = destination ?? p.destination
        return p
    }
    /// ESP, plain or in UDP (NAT-T); with a given SPI when asked.
    public func esp(spi: UInt32? = nil, from source: [UInt8]? = nil, to destination: [UInt8]? = nil) -> HopPattern {
        var p = self
        p.proto = .esp
        p.spi = spi
        p.source = source ?? p.source
        p.destination = destination ?? p.destination
        return p
    }
    public func from(_ a: [UInt8]) -> HopPattern { var p = self; p.source = a; return p }
    public func to(_ a: [UInt8]) -> HopPattern { var p = self; p.destination = a; return p }
    /// The packet's mark, compared under `mask` (`mark & mask == value & mask`).
    public func mark(_ value: UInt32, mask: UInt32 = .max) -> HopPattern { var p = self; p.mark = (value, mask); return p }
    /// The connection's mark (`ct mark`), compared under `mask`.
    public func connectionMark(_ value: UInt32, mask: UInt32 = .max) -> HopPattern { var p = self; p.connectionMark = (value, mask); return p }
    public func `in`(_ name: String) -> HopPattern { var p = self; p.inInterface = name; return p }
    public func out(_ name: String) -> HopPattern { var p = self; p.outInterface = name; return p }

    public func matches(_ hop: Hop) -> Bool {
        guard hop.host == host else { return false }
        if let hook, hop.hook != hook { return false }
        if let proto {
            if proto == .esp {
                guard hop.packet.proto == .esp || hop.packet.encapsulated else { return false }
            } else if hop.packet.proto != proto || (encapsulated != nil && hop.packet.encapsulated != encapsulated) {
                return false
            }
        }
        if let spi, hop.packet.spi != spi { return false }
        if let source, hop.packet.source != source { return false }
        if let destination, hop.packet.destination != destination { return false }
        if let destinationPort, hop.packet.destinationPort != destinationPort { return false }
        if let mark, hop.mark & mark.mask != mark.value & mark.mask { return false }
        if let connectionMark, (hop.connectionMark ?? 0) & connectionMark.mask != connectionMark.value & connectionMark.mask { return false }
        if let inInterface, hop.inInterface != inInterface { return false }
        if let outInterface, hop.outInterface != outInterface { return false }
        return true
    }

    public var description: String {
        var s = "\(host) \(hook?.rawValue ?? "any hook"):"
        switch proto {
        case .esp?: s += " esp" + (spi.map { " spi 0x\(String($0, radix: 16))" } ?? "")
        case let p?: s += " \(p.rawValue)"
        case nil: s += " any packet"
        }
        if let source { s += " from \(formatAddress(source))" }
        if let destination { s += " to \(formatAddress(destination))" }
        if let destinationPort { s += " port \(destinationPort)" }
        if let mark {
            s += " mark 0x\(String(mark.value, radix: 16))"
            if mark.mask != .max { s += "/0x\(String(mark.mask, radix: 16))" }
        }
        if let connectionMark {
            s += " ct mark 0x\(String(connectionMark.value, radix: 16))"
            if connectionMark.mask != .max { s += "/0x\(String(connectionMark.mask, radix: 16))" }
        }
        if let inInterface { s += " in \(inInterface)" }
        if let outInterface { s += " out \(outInterface)" }
        return s
    }
}

/// What a packet's journey should look like: hops that must appear (in this order within each
/// host) and hops that must not.
public struct PathExpectation: Sendable, CustomStringConvertible {
    public var name: String
    public var steps: [HopPattern] = []
    public var forbidden: [HopPattern] = []

    public init(_ name: String) { self.name = name }

    /// A hop that must be seen, after the previous expected hop on the same host.
    public func then(_ pattern: HopPattern) -> PathExpectation { var e = self; e.steps.append(pattern); return e }
    /// A hop that must not be seen at all.
    public func never(_ pattern: HopPattern) -> PathExpectation { var e = self; e.forbidden.append(pattern); return e }

    public var description: String {
        var s = "expected (\(name)):\n"
        for p in steps { s += "  \(p)\n" }
        for p in forbidden { s += "  never: \(p)\n" }
        return s
    }

    /// Which hops of a trace the expectation found: for each step, the index in `trace.hops` of
    /// the hop it matched (nil: missing; `outOfOrder` when a matching hop exists but came too
    /// early); for each forbidden pattern, the hops that break it.
    public struct Match: Sendable {
        public var steps: [(hop: Int?, outOfOrder: Bool)]
        public var violations: [[Int]]
        public var passed: Bool { steps.allSatisfy { $0.hop != nil } && violations.allSatisfy(\.isEmpty) }
    }

    /// Matches each step against the first matching hop after the last one used on that host.
    public func match(_ trace: Trace) -> Match {
        var steps: [(hop: Int?, outOfOrder: Bool)] = []
        var position: [String: Int] = [:]
        for step in self.steps {
            let indices = trace.hops.indices.filter { trace.hops[$0].host == step.host }
            let start = position[step.host] ?? 0
            if let i = indices[start...].firstIndex(where: { step.matches(trace.hops[$0]) }) {
                position[step.host] = i + 1
                steps.append((indices[i], false))
            } else {
                steps.append((nil, indices.contains { step.matches(trace.hops[$0]) }))
            }
        }
        let violations = forbidden.map { rule in trace.hops.indices.filter { rule.matches(trace.hops[$0]) } }
        return Match(steps: steps, violations: violations)
    }

    /// Where failed expectations draw their trace (SVG, with the expected path beside it): the
    /// environment's `XFRMLAB_TRACE_PICTURES`, which the kernel matrix sets to each kernel's
    /// results/pictures, so that report.html links them. Unset: no pictures.
    public static var picturesDirectory: String? { ProcessInfo.processInfo.environment["XFRMLAB_TRACE_PICTURES"] }

    /// Matches the trace (see `match`). Returns whether it passed and, on failure, a report with
    /// the problems and the expected path beside the actual trace (and, when `pictures` names
    /// a directory, the path of a picture of both drawn there).
    public func evaluate(_ trace: Trace, pictures: String? = PathExpectation.picturesDirectory) -> (passed: Bool, report: String) {
        let m = match(trace)
        var problems: [String] = []
        for (step, found) in zip(steps, m.steps) where found.hop == nil {
            problems.append("missing: \(step)" + (found.outOfOrder ? " (seen, but out of order)" : ""))
        }
        for (rule, hops) in zip(forbidden, m.violations) {
            for i in hops { problems.append("unexpected: \(trace.hops[i]) (matches never: \(rule))") }
        }
        if problems.isEmpty { return (true, "\(name): as expected") }
        var report = "\(name): \(problems.count) problem(s)\n"
        for p in problems { report += "  \(p)\n" }
        report += description
        report += "actual trace:\n\(trace)"
        if let pictures {
            do { report += "picture: \(try drawFailure(trace, in: pictures))\n" }
            catch { report += "no picture: \(error)\n" }
        }
        return (false, report)
    }

    /// Writes `<directory>/<name>.svg` (`-2`, `-3` … when taken), making the directory.
    private func drawFailure(_ trace: Trace, in directory: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let stem = String(name.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }.prefix(80))
        var path = "\(directory)/\(stem).svg"
        var n = 1
        while FileManager.default.fileExists(atPath: path) {
            n += 1
            path = "\(directory)/\(stem)-\(n).svg"
        }
        try trace.writePicture(to: path, expected: self)
        return path
    }
}
