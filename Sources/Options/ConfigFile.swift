import FastAlloc

// The config file, on the options' side: a file is a map whose keys are the options' names and
// whose values become the options' texts, as if given on the command line; each keeps the line
// it was written on, for the messages. Reading the file's syntax (YAML) is the ConfigYAML
// module's; this part needs only the tree it gives.

/// A config file's content as a tree, each node with the line it starts on (from 1).
public struct ConfigNode: Sendable, Equatable {
    public enum Content: Sendable, Equatable {
        /// A value as written (without its quotes); an empty value or `null` is "".
        case scalar(String)
        /// A list: `- item` lines or `[a, b]`.
        case sequence([ConfigNode])
        /// A map, in the file's order: `key: value` lines or `{key: value}`.
        case mapping([Pair])
    }

    /// One key of a map, with the line it is written on, and its value.
    public struct Pair: Sendable, Equatable {
        public var key: String
        public var line: Int
        public var value: ConfigNode
        public init(key: String, line: Int, value: ConfigNode) {
            self.key = key
            self.line = line
            self.value = value
        }
    }

    public var content: Content
    public var line: Int

    public init(_ content: Content, line: Int) {
        self.content = content
        self.line = line
    }

    /// The scalar's text, or nil for a list or a map.
    public var scalar: String? {
        if case .scalar(let text) = content { return text }
        return nil
    }

    /// What the node is, for a message: `'text'`, `a list`, `a map`.
    public var shown: String {
        switch content {
        case .scalar(let text): "'\(text)'"
        case .sequence: "a list"
        case .mapping: "a map"
        }
    }
}

/// A value of a config file an option cannot take, where it is and the rule it breaks: becomes
/// `FILE:LINE: key: value (expected: rule)`.
public struct ConfigNodeError: Error, Sendable {
    public let line: Int
    public let value: String
    public let rule: String
    public init(line: Int, value: String, rule: String) {
        self.line = line
        self.value = value
        self.rule = rule
    }
}

/// The options a config file gives: each option's text and where it was written.
public struct ConfigFileValues: Sendable, Equatable {
    /// One value as the option takes it (a list has one per item), and its line.
    public struct Item: Sendable, Equatable {
        public var text: String
        public var line: Int
        public init(text: String, line: Int) {
            self.text = text
            self.line = line
        }
    }

    /// One key of the file: the line of the key, and its values (joined with commas into the
    /// option's text, as a repeated flag's are).
    public struct Entry: Sendable, Equatable {
        public var line: Int
        public var items: [Item]
        public var text: String { items.map(\.text).joined(separator: ",") }
        public init(line: Int, items: [Item]) {
            self.line = line
            self.items = items
        }
    }

    /// The file as the messages name it (as it was given: `relay.yaml`, `/etc/fastalloc/relay.yaml`).
    public var path: String
    /// Option name to its entry.
    public var entries: [String: Entry]

    public init(path: String, entries: [String: Entry] = [:]) {
        self.path = path
        self.entries = entries
    }

    /// `relay.yaml:7: upstream`: what a message about option `name` at `line` names.
    public func field(_ name: String, line: Int) -> String { "\(path):\(line): \(name)" }
}

extension OptionTable {
    /// The config file to read, if any: the config-file option's value on the command line, or
    /// else its variable (an empty one counts as absent); with the field a message about it
    /// names (`--config`, `--config (from FASTALLOC_CONFIG)`).
    public func configFilePath(values: [String: String], environment: [String: String]) -> (path: String, field: String)? {
        guard let option = options.first(where: \.isConfigFile) else { return nil }
        if let path = values[option.name] { return (path, "--\(option.name)") }
        if let variable = option.environment, let path = environment[variable], !path.isEmpty {
            return (path, "--\(option.name) (from \(variable))")
        }
        return nil
    }

    /// The options a config file's tree gives. The file is a map; each key is an option's name
    /// (an unknown one is an error, with the names it is near); each value is a scalar, which
    /// becomes the option's text, or, for an option that repeats, a list of them (joined with
    /// commas), or what the option's `fileItem` takes. Errors name the file, the line, the key,
    /// the value and the rule: `relay.yaml:4: listn: unknown key; did you mean listen? (expected: ...)`.
    public func fileValues(from root: ConfigNode, path: String) throws(ConfigError) -> ConfigFileValues {
        var file = ConfigFileValues(path: path)
        guard case .mapping(let pairs) = root.content else {
            throw ConfigError(field: "\(path):\(root.line)", value: root.shown,
                              expected: "a map of option names to values, one `name: value` a line, like `listen: 127.0.0.1:7000`")
        }
        let names = options.filter { !$0.isConfigFile }.map(\.name)
        for pair in pairs {
            guard let option = self[pair.key], !option.isConfigFile else {
                if self[pair.key]?.isConfigFile == true {
                    throw ConfigError(field: file.field(pair.key, line: pair.line), value: "a config file cannot name another",
                                      expected: "an option name of --help, without its dashes")
                }
                throw ConfigError(field: file.field(pair.key, line: pair.line), value: "unknown key\(didYouMean(pair.key, among: names))",
                                  expected: "an option name of --help, without its dashes")
            }
            var nodes = [pair.value]
            if case .sequence(let elements) = pair.value.content {
                guard option.repeats else {
                    throw ConfigError(field: file.field(pair.key, line: pair.value.line), value: "a list",
                                      expected: "one value, \(option.valueName)")
                }
                nodes = elements
            }
            var items: [ConfigFileValues.Item] = []
            for node in nodes {
                do throws(ConfigNodeError) {
                    items.append(ConfigFileValues.Item(text: try option.fileText(node), line: node.line))
                } catch {
                    throw ConfigError(field: file.field(pair.key, line: error.line), value: error.value, expected: error.rule)
                }
            }
            file.entries[option.name] = ConfigFileValues.Entry(line: pair.line, items: items)
        }
        return file
    }

    /// Every option (but the config file's) as a YAML map, in table order: the configuration in
    /// effect, in a form the config file reads back. An option that repeats is a list of its
    /// comma-separated values.
    public func renderYAML(_ config: Config) -> String {
        var out = ""
        for option in options where !option.isConfigFile {
            let text = option.render(config)
            if option.repeats {
                let items = text.split(separator: ",", omittingEmptySubsequences: true)
                if items.isEmpty {
                    out += "\(option.name): []\n"
                } else {
                    out += "\(option.name):\n" + items.map { "  - \(yamlScalar(String($0)))\n" }.joined()
                }
            } else {
                // A flag's true or false is YAML's own boolean, in any reader.
                out += "\(option.name): \(option.isFlag ? text : yamlScalar(text))\n"
            }
        }
        return out
    }
}

extension ConfigOption {
    /// One value of a config file as this option's text: its own `fileItem`, or else a scalar's text.
    func fileText(_ node: ConfigNode) throws(ConfigNodeError) -> String {
        if let fileItem { return try fileItem(node) }
        guard let text = node.scalar else {
            throw ConfigNodeError(line: node.line, value: node.shown, rule: "one value, \(isFlag ? "true or false" : valueName)")
        }
        return text
    }
}

/// `; did you mean listen?` when `name` is within two edits of some of `names` (as the command
/// line's hint), else "".
public func didYouMean(_ name: String, among names: [String]) -> String {
    let near = names.filter { editDistance($0, name) <= 2 }
    return near.isEmpty ? "" : "; did you mean " + listing(near) + "?"
}

/// `text` as a YAML scalar that reads back as the same text, in any YAML reader: plain where
/// that is unambiguous, single-quoted where a plain scalar would be read as something else
/// (`[::1]:7000`, `off`, `yes`, `null`, `''`, `a: b`, `# x`).
public func yamlScalar(_ text: String) -> String {
    let words: Set<String> = ["", "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n"]
    let first = text.first
    let needsQuotes = words.contains(text.lowercased())
        || first.map { "[]{}!&*|>'\"%@`,?:-#".contains($0) || $0 == " " } ?? true
        || text.last == " "
        || text.contains(": ") || text.contains(" #") || text.hasSuffix(":")
        || text.contains { $0 == "\n" || $0 == "\t" || $0 == "\r" }
    guard needsQuotes else { return text }
    return "'" + text.replacing("'", with: "''") + "'"
}
