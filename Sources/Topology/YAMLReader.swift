import Foundation
import Yams

/// The shared state of one load: the file name, the problems found so far, and how to map
/// Yams' marks back to the original text.
final class Diagnostics {
    let file: String
    private var problems: [TopologyError.Problem] = []
    private var dropped = 0
    static let maxProblems = 500

    /// Keys renamed in the text so that Yams composes a mapping with a duplicate key (see
    /// `compose(_:)`): where each marker went in, so columns on that line can be mapped back.
    private var insertions: [(line: Int, column: Int, length: Int)] = []
    static let markerStart: Unicode.Scalar = "\u{E000}"
    static let markerEnd: Unicode.Scalar = "\u{E001}"

    /// Values left to read before giving up: aliases can make a small file expand enormously.
    private var budget = 200_000
    private(set) var exhausted = false

    init(file: String) {
        self.file = file
    }

    func location(_ mark: Yams.Mark?) -> SourceLocation {
        guard let mark else { return SourceLocation(file: file, line: 0, column: 0) }
        var column = mark.column
        for insertion in insertions.reversed() where insertion.line == mark.line && column > insertion.column {
            column -= insertion.length
        }
        return SourceLocation(file: file, line: mark.line, column: column)
    }

    func report(_ location: SourceLocation, field: String, _ message: String) {
        guard problems.count < Self.maxProblems else {
            dropped += 1
            return
        }
        // One problem per line of `TopologyError.description`.
        let message = message.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        problems.append(.init(file: file, line: location.line, column: location.column, field: field, message: message))
    }

    func report(line: Int, column: Int, _ message: String) {
        report(SourceLocation(file: file, line: line, column: column), field: "", message)
    }

    /// Every problem, in file order.
    func sortedProblems() -> [TopologyError.Problem] {
        var sorted = problems.enumerated().sorted {
            ($0.element.line, $0.element.column, $0.offset) < ($1.element.line, $1.element.column, $1.offset)
        }.map(\.element)
        if dropped > 0 {
            sorted.append(.init(file: file, line: 0, column: 0, field: "",
                                message: "… and \(dropped) more problems"))
        }
        return sorted
    }

    /// Takes one value from the budget; false (after saying so once) when it is spent.
    func consume(at location: SourceLocation, field: String) -> Bool {
        if budget > 0 {
            budget -= 1
            return true
        }
        if !exhausted {
            exhausted = true
            report(location, field: field, "too many values (more than 200000, counting every use of an alias); stopped reading")
        }
        return false
    }

    /// The key as written, undoing the renaming of duplicate keys.
    func originalKey(_ key: String) -> String {
        guard !insertions.isEmpty, key.unicodeScalars.first == Self.markerStart,
              let end = key.unicodeScalars.firstIndex(of: Self.markerEnd) else { return key }
        return String(key.unicodeScalars[key.unicodeScalars.index(after: end)...])
    }

    // MARK: Composing

    /// The document's root node, or nil after reporting why there is none.
    ///
    /// Yams refuses a mapping with a duplicate key as a whole, naming only the first
    /// occurrence. To still report every other problem, and the duplicate at the line where
    /// it repeats, the first occurrence is renamed (a private-use marker is inserted before
    /// it) and the text composed again; `Reader.entries` reads the name back with
    /// `originalKey` and reports the later key as a duplicate.
    func compose(_ original: String) -> Node? {
        if let nul = original.unicodeScalars.firstIndex(of: "\0") {
            let (line, column) = Self.lineAndColumn(of: nul, in: original)
            report(line: line, column: column, "the file contains a NUL byte")
            return nil
        }
        var text = original
        for attempt in 1...100 {
            do {
                // The basic resolver: no tag guessing, which costs Yams' regular expressions
                // (milliseconds of `xfrmlab up`); the reader interprets every scalar itself.
                guard let root = try Yams.compose(yaml: text, .basic) else {
                    report(line: 1, column: 1, "the file is empty; expected a mapping with name, hosts and networks")
                    return nil
                }
                return root
            } catch let YamlError.duplicatedKeysInMapping(duplicates, context) {
                let key = duplicates.first ?? "?"
                guard attempt < 100, let renamed = rename(key: key, at: context.mark, in: text, number: attempt) else {
                    report(location(context.mark), field: "", "duplicate key \(quoted(key))")
                    return nil
                }
                text = renamed
            } catch let error as YamlError {
                reportSyntax(error, text: text)
                return nil
            } catch {
                report(line: 0, column: 0, "cannot read the YAML: \(error)")
                return nil
            }
        }
        return nil
    }

    private func rename(key: String, at mark: Yams.Mark, in text: String, number: Int) -> String? {
        let scalars = text.unicodeScalars
        guard let start = Self.index(line: mark.line, column: mark.column, in: text) else { return nil }
        var at = start
        var column = mark.column
        if scalars[start] == "\"" || scalars[start] == "'" {
            at = scalars.index(after: start)
            column += 1
        } else if key.isEmpty || !scalars[start...].starts(with: key.unicodeScalars) {
            return nil  // a tagged, anchored or complex key: do not guess
        }
        let marker = "\(Self.markerStart)\(number)\(Self.markerEnd)"
        var result = text
        result.unicodeScalars.insert(contentsOf: marker.unicodeScalars, at: at)
        insertions.append((line: mark.line, column: column, length: marker.unicodeScalars.count))
        return result
    }

    private func reportSyntax(_ error: YamlError, text: String) {
        func context(_ c: YamlError.Context?) -> String {
            guard let c else { return "" }
            return " (\(c.text) at line \(c.mark.line), column \(c.mark.column))"
        }
        switch error {
        case let .scanner(c, problem, mark, _), let .parser(c, problem, mark, _), let .composer(c, problem, mark, _):
            var problem = problem
            if problem.hasPrefix("but ") { problem.removeFirst(4) }
            report(location(mark), field: "", "YAML syntax error: \(problem)\(context(c))")
        case let .reader(problem, offset, value, _):
            var line = 0, column = 0
            if let offset, let i = text.index(text.startIndex, offsetBy: offset, limitedBy: text.endIndex) {
                (line, column) = Self.lineAndColumn(of: i.samePosition(in: text.unicodeScalars) ?? text.unicodeScalars.endIndex, in: text)
            }
            let what = value >= 0 ? " (character 0x\(String(value, radix: 16)))" : ""
            report(line: line, column: column, "YAML syntax error: \(problem)\(what)")
        default:
            report(line: 0, column: 0, "YAML error: \(error)")
        }
    }

    // MARK: Positions, counted as libyaml does (lines and columns from 1, columns in Unicode scalars)

    private static func isBreak(_ c: Unicode.Scalar) -> Bool {
        c == "\n" || c == "\r" || c == "\u{85}" || c == "\u{2028}" || c == "\u{2029}"
    }

    /// Walks the text, calling `body` with each scalar's index, line and column until it returns true.
    private static func walk(_ text: String, _ body: (String.UnicodeScalarView.Index, Int, Int) -> Bool) {
        let scalars = text.unicodeScalars
        var i = scalars.startIndex
        var line = 1, column = 1
        if i < scalars.endIndex, scalars[i] == "\u{FEFF}" { i = scalars.index(after: i) }
        while true {
            if body(i, line, column) || i == scalars.endIndex { return }
            let c = scalars[i]
            i = scalars.index(after: i)
            if c == "\r", i < scalars.endIndex, scalars[i] == "\n" { i = scalars.index(after: i) }
            if isBreak(c) {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
    }

    static func index(line: Int, column: Int, in text: String) -> String.UnicodeScalarView.Index? {
        var found: String.UnicodeScalarView.Index?
        walk(text) { i, l, c in
            if l == line && c == column { found = i }
            return found != nil || l > line
        }
        return found.flatMap { $0 < text.unicodeScalars.endIndex ? $0 : nil }
    }

    static func lineAndColumn(of index: String.UnicodeScalarView.Index, in text: String) -> (Int, Int) {
        var result = (1, 1)
        walk(text) { i, l, c in
            result = (l, c)
            return i >= index
        }
        return result
    }
}

/// A value in the document together with its field path (`hosts.west.routes[1].via`) and
/// location, with typed accessors that report a problem and return nil when the value does
/// not fit.
struct Reader {
    let diagnostics: Diagnostics
    let node: Node
    let field: String
    /// Where problems with this value are reported: the value, or its key when it is empty.
    let location: SourceLocation

    init(diagnostics: Diagnostics, node: Node, field: String, location: SourceLocation) {
        self.diagnostics = diagnostics
        self.node = node
        self.field = field
        self.location = location
    }

    init(root: Node, diagnostics: Diagnostics) {
        self.init(diagnostics: diagnostics, node: root, field: "", location: diagnostics.location(root.mark))
    }

    func problem(_ message: String) {
        diagnostics.report(location, field: field, message)
    }

    var isNull: Bool {
        guard case .scalar(let s) = node, s.style == .plain || s.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    /// What the value is, for "expected …, found …".
    var kind: String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .alias: return "an alias"
        case .scalar(let s): return isNull ? "nothing" : "the value \(quoted(s.string))"
        }
    }

    static func path(_ base: String, key: String) -> String {
        let simple = !key.isEmpty && key.unicodeScalars.allSatisfy {
            ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-"
        }
        if simple { return base.isEmpty ? key : base + "." + key }
        return base + "[" + quoted(key) + "]"
    }

    // MARK: Containers

    /// The entries of a mapping with free-form keys (host names, sysctls), each key once.
    /// An empty value counts as an empty mapping. Nil (after reporting) for any other node.
    func entries(noun: String = "key") -> [(key: String, keyLocation: SourceLocation, value: Reader)]? {
        guard case .mapping(let mapping) = node else {
            if isNull { return [] }
            problem("expected a mapping, found \(kind)")
            return nil
        }
        var seen: [String: SourceLocation] = [:]
        var result: [(key: String, keyLocation: SourceLocation, value: Reader)] = []
        for (key, value) in mapping {
            let keyLocation = diagnostics.location(key.mark)
            guard diagnostics.consume(at: keyLocation, field: field) else { break }
            guard case .scalar(let scalar) = key else {
                diagnostics.report(keyLocation, field: field, "a \(noun) must be a plain string, found \(Reader(diagnostics: diagnostics, node: key, field: field, location: keyLocation).kind)")
                continue
            }
            let name = diagnostics.originalKey(scalar.string)
            let path = Reader.path(field, key: name)
            if let first = seen[name] {
                let at = first.line == keyLocation.line ? "column \(first.column)" : "line \(first.line)"
                diagnostics.report(keyLocation, field: path, "duplicate \(noun) \(quoted(name)) (first at \(at))")
                continue
            }
            seen[name] = keyLocation
            var reader = Reader(diagnostics: diagnostics, node: value, field: path, location: diagnostics.location(value.mark))
            if reader.isNull { reader = Reader(diagnostics: diagnostics, node: value, field: path, location: keyLocation) }
            result.append((name, keyLocation, reader))
        }
        return result
    }

    /// A mapping with a fixed set of keys; others are reported as unknown.
    func mapping(_ allowed: [String]) -> Fields? {
        guard let entries = entries() else { return nil }
        var values: [String: Reader] = [:]
        for entry in entries {
            if allowed.contains(entry.key) {
                values[entry.key] = entry.value
            } else {
                diagnostics.report(entry.keyLocation, field: entry.value.field,
                                   "unknown key \(quoted(entry.key)); expected one of: \(allowed.joined(separator: ", "))")
            }
        }
        return Fields(owner: self, values: values)
    }

    /// The items of a sequence; an empty value counts as an empty sequence.
    func sequence() -> [Reader]? {
        guard case .sequence(let sequence) = node else {
            if isNull { return [] }
            problem("expected a sequence, found \(kind)")
            return nil
        }
        var result: [Reader] = []
        for (i, item) in sequence.enumerated() {
            let location = diagnostics.location(item.mark)
            guard diagnostics.consume(at: location, field: field) else { break }
            result.append(Reader(diagnostics: diagnostics, node: item, field: "\(field)[\(i)]", location: location))
        }
        return result
    }

    /// A sequence, or a single value standing for a sequence of one.
    func list() -> [Reader]? {
        if case .scalar = node, !isNull { return [self] }
        return sequence()
    }

    // MARK: Scalars

    /// The text of a scalar, whatever YAML type it resolves to (so `0x10` stays `0x10`).
    func scalar() -> String? {
        switch node {
        case .scalar(let s):
            if isNull {
                problem("expected a value, found nothing")
                return nil
            }
            if s.string.unicodeScalars.contains("\0") {
                problem("\(quoted(s.string)) contains a NUL character")
                return nil
            }
            return s.string
        default:
            problem("expected a single value, found \(kind)")
            return nil
        }
    }

    /// A scalar turned into a value by `parse`; when that fails, "`"text"` is not NOUN".
    func value<T>(_ noun: String, _ parse: (String) -> T?) -> T? {
        guard let text = scalar() else { return nil }
        guard let value = parse(text) else {
            problem("\(quoted(text)) is not \(noun)")
            return nil
        }
        return value
    }

    func bool() -> Bool? {
        guard let text = scalar() else { return nil }
        switch text {
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return true
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return false
        default:
            problem("\(quoted(text)) is not a boolean (true or false)")
            return nil
        }
    }

    /// An integer in `range`, decimal or 0x-hex.
    func number(_ range: ClosedRange<Int64>) -> Int64? {
        guard let text = scalar() else { return nil }
        switch parseInteger(text) {
        case .invalid:
            problem("\(quoted(text)) is not a number")
            return nil
        case .value(let n):
            guard let n, range.contains(n) else {
                problem("\(quoted(text)) is out of range: must be \(range.lowerBound)...\(range.upperBound)")
                return nil
            }
            return n
        }
    }
}

/// The values of a mapping with known keys.
struct Fields {
    let owner: Reader
    let values: [String: Reader]

    subscript(key: String) -> Reader? { values[key] }

    /// The value, or nil after reporting that it is missing.
    func required(_ key: String) -> Reader? {
        if let value = values[key] { return value }
        owner.diagnostics.report(owner.location, field: Reader.path(owner.field, key: key), "missing required key \(quoted(key))")
        return nil
    }
}

enum ParsedInteger: Equatable {
    case invalid
    /// nil when it does not fit in 64 bits.
    case value(Int64?)
}

/// `[+-]DIGITS` or `[+-]0xHEX`.
func parseInteger(_ text: String) -> ParsedInteger {
    var t = Substring(text)
    var negative = false
    if let sign = t.first, sign == "-" || sign == "+" {
        negative = sign == "-"
        t = t.dropFirst()
    }
    var radix = 10
    if t.hasPrefix("0x") || t.hasPrefix("0X") {
        radix = 16
        t = t.dropFirst(2)
    }
    guard !t.isEmpty, t.unicodeScalars.allSatisfy({
        ("0"..."9").contains($0) || (radix == 16 && (("a"..."f").contains($0) || ("A"..."F").contains($0)))
    }) else { return .invalid }
    let digits = t.drop { $0 == "0" }
    guard digits.count <= 20, let magnitude = UInt64(digits.isEmpty ? "0" : digits, radix: radix),
          magnitude <= UInt64(Int64.max) else { return .value(nil) }
    return .value(negative ? -Int64(magnitude) : Int64(magnitude))
}

/// A value as it appears in a message: in double quotes, escaped, and cut short when long.
func quoted(_ text: String) -> String {
    let limit = 60
    var scalars = text.unicodeScalars.prefix(limit + 1).map { $0 }
    let long = scalars.count > limit
    if long { scalars = Array(scalars.prefix(limit)) }
    var s = String(String.UnicodeScalarView(scalars)).debugDescription
    if long { s.insert(contentsOf: "…", at: s.index(before: s.endIndex)) }
    return s
}
