import Foundation

/// Everything wrong with a topology file, one `Problem` per mistake, in file order.
///
/// `description` prints one problem per line as `FILE:LINE:COLUMN: FIELD: MESSAGE`
/// (compilers' format, so editors can jump to it). Lines and columns are 1-based;
/// line 0 means the problem concerns the file as a whole (it could not be read).
public struct TopologyError: Error, CustomStringConvertible, Sendable {
    public var problems: [Problem]

    public init(problems: [Problem]) {
        self.problems = problems
    }

    public struct Problem: Hashable, Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public var column: Int
        /// The path of the offending value, such as `hosts.west.routes[1].via` or
        /// `networks[0].members[2].host`; empty for problems with the document itself
        /// (YAML syntax, an empty or unreadable file).
        public var field: String
        public var message: String

        public init(file: String, line: Int, column: Int, field: String, message: String) {
            self.file = file
            self.line = line
            self.column = column
            self.field = field
            self.message = message
        }

        public var description: String {
            field.isEmpty ? "\(file):\(line):\(column): \(message)" : "\(file):\(line):\(column): \(field): \(message)"
        }
    }

    public var description: String {
        problems.map(\.description).joined(separator: "\n")
    }
}

extension TopologyError: LocalizedError {
    public var errorDescription: String? { description }
}
