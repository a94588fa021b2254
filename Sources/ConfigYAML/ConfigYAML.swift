import CYAML
import FastAlloc
import Options
#if canImport(Glibc)
import Glibc
#endif

/// A config file in YAML, read into a `ConfigNode` tree whose every node knows its line, with
/// libyaml's event parser (Debian's libyaml-dev). Plain YAML only, what a config file needs:
/// maps, lists and scalars, read as the text they are written as (`60s`, `2`, `true` are
/// texts: each option parses its own); an empty value or `null` is "". What is refused, with the
/// line: a syntax error, an alias (`*name`: no expansion, hence no "billion laughs"), a key that
/// is not a scalar or comes twice in one map, more than one document, nesting deeper than 16,
/// and a file over 1 MiB.
public enum ConfigYAML {
    /// The largest file read: far beyond any configuration (the examples are under 2 KiB).
    public static let maxFileSize = 1 << 20
    /// Nesting deeper than this is refused: the deepest a configuration needs is 3 (the file's
    /// map, upstream's list, an entry's map).
    public static let maxDepth = 16

    /// Reads the file at `path` and parses it. `field` names where the path came from, for the
    /// error when it cannot be read (`--config`, `--config (from FASTALLOC_CONFIG)`).
    public static func read(path: String, field: String = "--config") throws(ConfigError) -> ConfigNode {
        try parse(readFile(path, field: field), path: path)
    }

    /// Parses YAML text; errors name `path` and the line.
    public static func parse(_ bytes: [UInt8], path: String) throws(ConfigError) -> ConfigNode {
        var builder = TreeBuilder(path: path)
        var parser = yaml_parser_t()
        guard yaml_parser_initialize(&parser) == 1 else {
            throw ConfigError(field: path, value: "cannot start the YAML parser", expected: "memory")
        }
        defer { yaml_parser_delete(&parser) }
        // An empty buffer still needs a valid pointer for libyaml.
        let input = bytes.isEmpty ? [UInt8(ascii: "\n")] : bytes
        return try input.withUnsafeBufferPointer { buffer throws(ConfigError) -> ConfigNode in
            yaml_parser_set_input_string(&parser, buffer.baseAddress, buffer.count)
            var event = yaml_event_t()
            while true {
                guard yaml_parser_parse(&parser, &event) == 1 else { throw syntaxError(parser, path: path, bytes: input) }
                defer { yaml_event_delete(&event) }
                if let root = try builder.take(event) { return root }
            }
        }
    }

    static func readFile(_ path: String, field: String) throws(ConfigError) -> [UInt8] {
        func failure(_ reason: String) -> ConfigError {
            ConfigError(field: field, value: "'\(path)'", expected: "a readable YAML file (\(reason))")
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw failure(String(cString: strerror(errno))) }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw failure(String(cString: strerror(errno)))
            }
            if count == 0 { break }
            bytes += chunk[0..<count]
            if bytes.count > maxFileSize { throw failure("larger than \(formatBytes(maxFileSize))") }
        }
        return bytes
    }

    /// libyaml's error: its line (from 1), the problem, the column, and what it was parsing.
    static func syntaxError(_ parser: yaml_parser_t, path: String, bytes: [UInt8]) -> ConfigError {
        let problem = parser.problem.map { String(cString: $0) } ?? "not YAML"
        var line = Int(parser.problem_mark.line) + 1
        var detail = "\(problem), column \(parser.problem_mark.column + 1)"
        // The reader's errors (an invalid UTF-8 byte, a control character) give only an offset.
        if parser.error == YAML_READER_ERROR {
            let offset = min(Int(parser.problem_offset), bytes.count)
            line = 1 + bytes[..<offset].count { $0 == UInt8(ascii: "\n") }
            detail = "\(problem) (byte \(parser.problem_offset))"
        }
        if let context = parser.context {
            detail += ", \(String(cString: context)) on line \(parser.context_mark.line + 1)"
        }
        return ConfigError(field: "\(path):\(line)", value: "YAML syntax error: \(detail)", expected: "YAML")
    }
}

/// Builds the tree from libyaml's events with an explicit stack (no recursion).
private struct TreeBuilder {
    let path: String
    var stack: [Frame] = []
    var root: ConfigNode?
    var documents = 0

    enum Frame {
        case sequence(line: Int, items: [ConfigNode])
        case mapping(line: Int, pairs: [ConfigNode.Pair], key: (text: String, line: Int)?, seen: [String: Int])
    }

    init(path: String) { self.path = path }

    /// `FILE:LINE`, and the key whose value is being read, if any: `relay.yaml:7: listen`.
    func error(_ line: Int, _ value: String, _ expected: String) -> ConfigError {
        var key = ""
        for frame in stack.reversed() {
            if case .mapping(_, _, let pending?, _) = frame { key = ": \(pending.text)"; break }
        }
        return ConfigError(field: "\(path):\(line)\(key)", value: value, expected: expected)
    }

    /// Takes one event; returns the root when the stream ends.
    mutating func take(_ event: yaml_event_t) throws(ConfigError) -> ConfigNode? {
        let line = Int(event.start_mark.line) + 1
        switch event.type {
        case YAML_DOCUMENT_START_EVENT:
            documents += 1
            if documents > 1 { throw error(line, "a second YAML document", "one document: a map of option names to values") }
        case YAML_STREAM_END_EVENT:
            return root ?? ConfigNode(.mapping([]), line: 1)
        case YAML_ALIAS_EVENT:
            throw error(line, "an alias (*name)", "values written out: aliases are not read")
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            var text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            if scalar.style == YAML_PLAIN_SCALAR_STYLE, ["~", "null", "Null", "NULL"].contains(text) { text = "" }
            try add(ConfigNode(.scalar(text), line: line))
        case YAML_SEQUENCE_START_EVENT:
            try push(.sequence(line: line, items: []), line: line)
        case YAML_MAPPING_START_EVENT:
            try push(.mapping(line: line, pairs: [], key: nil, seen: [:]), line: line)
        case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
            switch stack.removeLast() {
            case .sequence(let start, let items): try add(ConfigNode(.sequence(items), line: start))
            case .mapping(let start, let pairs, _, _): try add(ConfigNode(.mapping(pairs), line: start))
            }
        default:
            break
        }
        return nil
    }

    mutating func push(_ frame: Frame, line: Int) throws(ConfigError) {
        if case .mapping(_, _, nil, _)? = stack.last {
            throw error(line, "a key that is a list or a map", "a name: keys are option names")
        }
        guard stack.count < ConfigYAML.maxDepth else {
            throw error(line, "nesting deeper than \(ConfigYAML.maxDepth)", "a map of option names to values, a list or a map in them")
        }
        stack.append(frame)
    }

    /// A finished node: the root, an item of the list being read, or a key or value of the map.
    mutating func add(_ node: ConfigNode) throws(ConfigError) {
        guard let top = stack.popLast() else {
            root = node
            return
        }
        switch top {
        case .sequence(let line, var items):
            items.append(node)
            stack.append(.sequence(line: line, items: items))
        case .mapping(let line, var pairs, let key, var seen):
            if let key {
                pairs.append(ConfigNode.Pair(key: key.text, line: key.line, value: node))
                stack.append(.mapping(line: line, pairs: pairs, key: nil, seen: seen))
            } else {
                guard let text = node.scalar else {
                    throw error(node.line, "a key that is a list or a map", "a name: keys are option names")
                }
                if let first = seen[text] {
                    throw ConfigError(field: "\(path):\(node.line): \(text)", value: "given twice",
                                      expected: "each key once; it was first given on line \(first)")
                }
                seen[text] = node.line
                stack.append(.mapping(line: line, pairs: pairs, key: (text, node.line), seen: seen))
            }
        }
    }
}

extension OptionTable {
    /// The config file at `path`, read (ConfigYAML) and taken apart into the options' values
    /// (`fileValues(from:path:)`). `field` names where the path came from.
    public func readConfigFile(_ path: String, field: String = "--config") throws(ConfigError) -> ConfigFileValues {
        try fileValues(from: ConfigYAML.read(path: path, field: field), path: path)
    }
}
