import FastAlloc

/// Every option of a configuration, in `--help` order, and what is done with them: values from
/// the command line, the environment and a config file are stored through each option's
/// parser, the result is checked against each option's rule, and `--help` is written from the
/// same declarations.
public struct OptionTable<Config>: Sendable {
    public let options: [ConfigOption<Config>]
    /// What the environment variables start with (`FASTALLOC_`); nil: no variables.
    public let environmentPrefix: String?

    public init(_ options: [ConfigOption<Config>], environmentPrefix: String?) {
        precondition(Set(options.map(\.name)).count == options.count, "two options share a name")
        self.options = options
        self.environmentPrefix = environmentPrefix
    }

    public subscript(name: String) -> ConfigOption<Config>? { options.first { $0.name == name } }

    /// Where each value came from, to name it in an error: `--workers`,
    /// `--workers (from FASTALLOC_WORKERS)` or `relay.yaml:7: workers`.
    public struct Origins: Sendable {
        var fields: [String: String] = [:]
        /// The config file's items of each option taken from it, to name the line of the one a
        /// validation error quotes.
        var fileItems: [String: (file: ConfigFileValues, items: [ConfigFileValues.Item])] = [:]
        public init() {}
        /// The field an error about option `name` names.
        public func field(_ name: String) -> String { fields[name] ?? "--\(name)" }
        /// Whether option `name` was given at all (command line, environment or file).
        public func isGiven(_ name: String) -> Bool { fields[name] != nil }
        /// An error about `--name` (as validation names it), renamed to say where its value came
        /// from; for a value from a config file's list, the line of the item the error quotes.
        public func renaming(_ error: ConfigError) -> ConfigError {
            guard error.field.hasPrefix("--") else { return error }
            let name = String(error.field.dropFirst(2))
            if let (file, items) = fileItems[name],
               let item = items.first(where: { error.value == $0.text || error.value == "'\($0.text)'" }) {
                return ConfigError(field: file.field(name, line: item.line), value: error.value, expected: error.expected)
            }
            return ConfigError(field: field(name), value: error.value, expected: error.expected)
        }
    }

    /// Stores every option given in `values` (the command line: name to text) or, when absent
    /// there, in `environment` (an empty variable counts as absent), in that order of
    /// precedence; the rest keep their value in `config`. The first text an option cannot take
    /// throws an error naming the option, where the value came from, the text and the rule.
    /// Rules on the stored values are `validate`'s.
    public func apply(values: [String: String], environment: [String: String], to config: inout Config) throws(ConfigError) -> Origins {
        try apply(values: values, environment: environment, file: nil, to: &config)
    }

    /// As `apply(values:environment:to:)`, with a config file's values below the environment's:
    /// the command line wins over the environment, which wins over the file, which wins over
    /// the defaults, an option at a time (a list in the file is replaced whole by `--upstream`s
    /// on the command line, or by the variable). An error about a value from the file names
    /// the file and the line: `relay.yaml:7: upstream: 'x' (expected: ...)`, the line of the
    /// item of a list that the option refuses.
    public func apply(values: [String: String], environment: [String: String], file: ConfigFileValues?,
                      to config: inout Config) throws(ConfigError) -> Origins {
        var origins = Origins()
        for option in options where !option.isConfigFile {
            let text: String
            var entry: ConfigFileValues.Entry?
            if let given = values[option.name] {
                text = given
                origins.fields[option.name] = "--\(option.name)"
            } else if let variable = option.environment, let given = environment[variable], !given.isEmpty {
                text = given
                origins.fields[option.name] = "--\(option.name) (from \(variable))"
            } else if let file, let given = file.entries[option.name] {
                text = given.text
                entry = given
                origins.fields[option.name] = file.field(option.name, line: given.line)
                origins.fileItems[option.name] = (file, given.items)
            } else {
                continue
            }
            do {
                try option.store(&config, text)
            } catch {
                // From a file's list: name the item the option refuses, tried alone.
                if let file, let entry, entry.items.count > 1 {
                    for item in entry.items {
                        var scratch = config
                        do { try option.store(&scratch, item.text) } catch {
                            throw ConfigError(field: file.field(option.name, line: item.line), value: "'\(item.text)'",
                                              expected: error.rule)
                        }
                    }
                }
                let field = entry.map { file!.field(option.name, line: $0.items.first?.line ?? $0.line) } ?? origins.field(option.name)
                throw ConfigError(field: field, value: "'\(text)'", expected: error.rule)
            }
        }
        return origins
    }

    /// Checks every option's rule on `config`, in table order; the error names the first
    /// option that breaks its rule (as `--name`; `Origins.renaming` says where it came from).
    public func validate(_ config: Config) throws(ConfigError) {
        for option in options {
            if let violation = option.check(config) {
                throw ConfigError(field: "--\(option.name)", value: violation.value, expected: violation.rule)
            }
        }
    }

    /// The options part of `--help`: each option with its value, help, variable and default.
    public func help(defaults: Config, width: Int = 100) -> String {
        var out = ""
        for option in options {
            let head = "  --\(option.name)" + (option.isFlag ? "" : " <\(option.valueName)>")
            var text = option.help
            if !option.isFlag {
                let value = option.defaultText ?? option.render(defaults)
                if !value.isEmpty { text += " Default: \(value)." }
            }
            if let variable = option.environment { text += " (\(variable))" }
            out += head + "\n" + wrap(text, indent: 8, width: width) + "\n"
        }
        return out
    }

    /// Every option (but the config file's) as `name = value` lines, in table order: the
    /// configuration in effect (`renderYAML` prints it as a config file).
    public func render(_ config: Config) -> String {
        options.filter { !$0.isConfigFile }.map { "\($0.name) = \($0.render(config))" }.joined(separator: "\n")
    }
}

/// `text` in lines of at most `width` characters, each indented by `indent` spaces.
func wrap(_ text: String, indent: Int, width: Int) -> String {
    let pad = String(repeating: " ", count: indent)
    var lines: [String] = []
    var line = ""
    for word in text.split(separator: " ") {
        if !line.isEmpty && pad.count + line.count + 1 + word.count > width {
            lines.append(pad + line)
            line = ""
        }
        line += line.isEmpty ? String(word) : " " + word
    }
    if !line.isEmpty { lines.append(pad + line) }
    return lines.joined(separator: "\n")
}
