import Foundation

/// A configuration template from Fixtures/daemons, filled from the lab.
///
/// The syntax is a small subset of Mustache, enough for daemon configuration files:
/// - `{{KEY}}` is replaced by the value of KEY;
/// - `{{#KEY}}…{{/KEY}}` is kept when KEY has a non-empty value, dropped otherwise;
/// - `{{^KEY}}…{{/KEY}}` is kept when KEY has no value or an empty one.
///
/// A line that holds nothing but a section tag disappears with it, so optional blocks leave no
/// blank lines. A placeholder the caller gave no value for is an error, never an empty string:
/// a typo in a template must not turn into a silently missing `mark_in`.
public struct Template: Sendable {
    public let name: String
    public let text: String

    public init(name: String, text: String) {
        self.name = name
        self.text = text
    }

    /// Loads `relativePath` from the fixtures directory (`Fixtures/daemons`).
    public static func load(_ relativePath: String) throws -> Template {
        let path = Installation.fixturesDirectory + "/" + relativePath
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw DaemonError(.configuration, "cannot read template \(path) (set XFRMLAB_FIXTURES to the Fixtures/daemons directory)")
        }
        return Template(name: relativePath, text: text)
    }

    /// The filled-in text. `values` holds every placeholder; a key may map to "" to mean "absent".
    public func render(_ values: [String: String]) throws -> String {
        var out = ""
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        // A stack of open sections: whether each one is being kept.
        var stack: [(key: String, keep: Bool)] = []
        var keeping: Bool { stack.allSatisfy(\.keep) }
        for (number, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if let tag = Template.standaloneTag(trimmed) {
                switch tag.sigil {
                case "#", "^":
                    let present = !(values[tag.key] ?? "").isEmpty
                    guard values[tag.key] != nil else {
                        throw DaemonError(.configuration, "\(name):\(number + 1): no value for section {{\(tag.sigil)\(tag.key)}}")
                    }
                    stack.append((tag.key, tag.sigil == "#" ? present : !present))
                default:
                    guard let open = stack.popLast(), open.key == tag.key else {
                        throw DaemonError(.configuration, "\(name):\(number + 1): {{/\(tag.key)}} closes no open section")
                    }
                }
                continue
            }
            guard keeping else { continue }
            out += try substitute(line, values: values, line: number + 1) + "\n"
        }
        if let open = stack.last {
            throw DaemonError(.configuration, "\(name): section {{#\(open.key)}} is never closed")
        }
        return out
    }

    /// `{{#KEY}}`, `{{^KEY}}` or `{{/KEY}}` alone on a line.
    static func standaloneTag(_ s: String) -> (sigil: Character, key: String)? {
        guard s.hasPrefix("{{"), s.hasSuffix("}}"), s.count > 5 else { return nil }
        let inner = s.dropFirst(2).dropLast(2)
        guard let sigil = inner.first, "#^/".contains(sigil) else { return nil }
        let key = String(inner.dropFirst())
        guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { return nil }
        return (sigil, key)
    }

    func substitute(_ line: String, values: [String: String], line number: Int) throws -> String {
        var out = ""
        var rest = Substring(line)
        while let open = rest.range(of: "{{") {
            out += rest[..<open.lowerBound]
            guard let close = rest[open.upperBound...].range(of: "}}") else {
                throw DaemonError(.configuration, "\(name):\(number): unclosed {{")
            }
            let key = String(rest[open.upperBound..<close.lowerBound])
            guard let value = values[key] else {
                throw DaemonError(.configuration, "\(name):\(number): no value for {{\(key)}}")
            }
            out += value
            rest = rest[close.upperBound...]
        }
        return out + rest
    }
}
