import FastAlloc

/// One option of a configuration, declared once: its name (`--idle-timeout` on the command
/// line, `idle-timeout` as a key of a config file), its environment variable, its parser, its
/// rule, its help and how its value prints. That one declaration drives the command line, the
/// environment, the config file, validation, `--help`, the documentation test and the fuzzers;
/// an `OptionTable` holds them.
///
/// The default is the configuration's own initial value, printed by `render`: it is written
/// once, in the configuration type.
public struct ConfigOption<Config>: Sendable {
    /// The long name without dashes: `idle-timeout`.
    public let name: String
    /// The environment variable that may give the value (`FASTALLOC_IDLE_TIMEOUT`), if any.
    public let environment: String?
    /// What the value looks like in `--help`: `TIME`, `N`, `BYTES`, `HOST:PORT`.
    public let valueName: String
    /// What the option does, and its range.
    public let help: String
    /// What `--help` says the default is, when the default value alone would mislead (`the
    /// online cores`); nil: the default configuration's value, printed.
    public let defaultText: String?
    /// A flag takes no value: present means `true`.
    public let isFlag: Bool
    /// May be given more than once: the values are joined with commas, in order (the form the
    /// environment variable takes too).
    public let repeats: Bool
    /// Parses the text and stores the value; throws the rule the text broke.
    let store: @Sendable (inout Config, String) throws(OptionRuleError) -> Void
    /// The rule the configuration's value breaks, with the value as the message shows it; nil
    /// when it keeps it. `validate` calls it for every option.
    let check: @Sendable (Config) -> OptionViolation?
    /// The value as text, the way the option takes it (`60s`, `65536`, `127.0.0.1:7000`, `off`).
    public let render: @Sendable (Config) -> String
    /// How a config file's value for this key becomes the option's text, for one value (of a
    /// list, for an option that `repeats`): nil, a scalar's text as written, and anything else
    /// is refused. An option whose entries may be written as maps (`upstream`: `address`,
    /// `weight`, `backup`) turns them into its text here.
    public let fileItem: (@Sendable (ConfigNode) throws(ConfigNodeError) -> String)?
    /// The option that names the config file (`--config FILE`): read before the others, never a
    /// key of the file itself, not stored, not rendered.
    public let isConfigFile: Bool

    public init(_ name: String, environment: String?, valueName: String, help: String, defaultText: String? = nil,
                isFlag: Bool = false, repeats: Bool = false,
                store: @escaping @Sendable (inout Config, String) throws(OptionRuleError) -> Void,
                check: @escaping @Sendable (Config) -> OptionViolation? = { _ in nil },
                render: @escaping @Sendable (Config) -> String,
                fileItem: (@Sendable (ConfigNode) throws(ConfigNodeError) -> String)? = nil,
                isConfigFile: Bool = false) {
        self.name = name
        self.environment = environment
        self.valueName = valueName
        self.help = help
        self.defaultText = defaultText
        self.isFlag = isFlag
        self.repeats = repeats
        self.store = store
        self.check = check
        self.render = render
        self.fileItem = fileItem
        self.isConfigFile = isConfigFile
    }
}

/// A text an option could not take: the rule, for the message `--name: 'text' (expected: rule)`.
public struct OptionRuleError: Error, Sendable {
    public let rule: String
    public init(_ rule: String) { self.rule = rule }
}

/// A value that breaks its option's rule, for the message `--name: value (expected: rule)`.
public struct OptionViolation: Sendable {
    public let value: String
    public let rule: String
    public init(value: String, rule: String) {
        self.value = value
        self.rule = rule
    }
}

// MARK: The kinds of option

extension ConfigOption {
    /// A whole number in `range`, checked when the configuration is validated; nil range: the
    /// rule lives with a cross-option check or the library the value is handed to.
    public static func integer(_ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, Int> & Sendable,
                               range: ClosedRange<Int>?, rule: String? = nil, help: String, defaultText: String? = nil) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: "N", help: help, defaultText: defaultText, store: { config, text throws(OptionRuleError) in
            guard let number = Int(text) else { throw OptionRuleError("a whole number") }
            config[keyPath: keyPath] = number
        }, check: { config in
            let value = config[keyPath: keyPath]
            guard let range, !range.contains(value) else { return nil }
            return OptionViolation(value: "\(value)", rule: rule ?? "\(range.lowerBound)...\(range.upperBound)")
        }, render: { "\($0[keyPath: keyPath])" })
    }

    /// A byte count (`65536`, `64K`, `1MiB`: `parseByteCount`) in `range`, checked when the
    /// configuration is validated; nil range: the rule lives with a cross-option check.
    public static func byteCount(_ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, Int> & Sendable,
                                 range: ClosedRange<Int>?, rule: String? = nil, help: String) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: "BYTES", help: help, store: { config, text throws(OptionRuleError) in
            guard let count = parseByteCount(text) else { throw OptionRuleError("a byte count like 65536, 64K or 1MiB") }
            config[keyPath: keyPath] = count
        }, check: { config in
            let value = config[keyPath: keyPath]
            guard let range, !range.contains(value) else { return nil }
            return OptionViolation(value: "\(value)", rule: rule ?? "\(range.lowerBound)...\(range.upperBound)")
        }, render: { formatByteCount($0[keyPath: keyPath]) })
    }

    /// A time (`60s`, `500ms`, `2m`: `parseDuration`) in seconds that keeps `rule`. The rule is
    /// checked as the text is parsed too, so that its message quotes the text as given.
    ///
    /// `condition`, when given, limits the rule to the configurations it holds for: another
    /// option makes this one moot (the load client's `--duration` in a fixed-count run). The
    /// rule is then checked by validation alone, since that option may come later on the
    /// command line.
    public static func duration(_ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, Double> & Sendable,
                                rule: DurationRule, onlyWhen condition: (@Sendable (Config) -> Bool)? = nil,
                                help: String) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: "TIME", help: help, store: { config, text throws(OptionRuleError) in
            guard let seconds = parseDuration(text) else { throw OptionRuleError("a time like 60s, 500ms, 2m or 1.5") }
            guard condition != nil || rule.allows(seconds) else { throw OptionRuleError(rule.text) }
            config[keyPath: keyPath] = seconds
        }, check: { config in
            if let condition, !condition(config) { return nil }
            let seconds = config[keyPath: keyPath]
            return rule.allows(seconds) ? nil : OptionViolation(value: "\(seconds)", rule: rule.text)
        }, render: { formatDuration($0[keyPath: keyPath]) })
    }

    /// One of a fixed set of words (`T`'s raw values).
    public static func choice<T: RawRepresentable & CaseIterable & Sendable>(
        _ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, T> & Sendable, help: String,
        defaultText: String? = nil
    ) -> ConfigOption where T.RawValue == String {
        let words = T.allCases.map(\.rawValue)
        return ConfigOption(name, environment: environment, valueName: words.joined(separator: "|"), help: help,
                            defaultText: defaultText, store: { config, text throws(OptionRuleError) in
            guard let value = T(rawValue: text) else { throw OptionRuleError(listing(words)) }
            config[keyPath: keyPath] = value
        }, render: { $0[keyPath: keyPath].rawValue })
    }

    /// A flag: present (or `1`, `true`, `yes` in the environment) sets it, to `value`: a flag
    /// that turns something off (`--no-verify`) stores false in its field (`verify`).
    public static func flag(_ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, Bool> & Sendable,
                            setting value: Bool = true, help: String) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: "", help: help, isFlag: true, store: { config, text throws(OptionRuleError) in
            switch text.lowercased() {
            case "1", "true", "yes": config[keyPath: keyPath] = value
            case "0", "false", "no": config[keyPath: keyPath] = !value
            default: throw OptionRuleError("1, true or yes (set), 0, false or no (unset)")
            }
        }, render: { $0[keyPath: keyPath] == value ? "true" : "false" })
    }

    /// A value that may be absent: nil unless given (`defaultText` says what nil means, when
    /// `--help` should say it), and an empty text gives nil back (the form `render` prints nil
    /// in). `parse` reads the text, nil when it is not `syntax`; validation checks the value
    /// with `allows`, whose rule is `rule`, and its message shows the value as Swift prints it.
    public static func optional<T: Sendable>(_ name: String, environment: String?, _ keyPath: WritableKeyPath<Config, T?> & Sendable,
                                             valueName: String, syntax: String, parse: @escaping @Sendable (String) -> T?,
                                             rule: String, allows: @escaping @Sendable (T) -> Bool,
                                             help: String, defaultText: String? = nil) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: valueName, help: help, defaultText: defaultText,
                     store: { config, text throws(OptionRuleError) in
            if text.isEmpty { config[keyPath: keyPath] = nil; return }
            guard let value = parse(text) else { throw OptionRuleError(syntax) }
            config[keyPath: keyPath] = value
        }, check: { config in
            guard let value = config[keyPath: keyPath], !allows(value) else { return nil }
            return OptionViolation(value: "\(value)", rule: rule)
        }, render: { $0[keyPath: keyPath].map { "\($0)" } ?? "" })
    }

    /// The config file (`--config FILE`): a path, read by the program before the other options
    /// are applied (`OptionTable.configFilePath`), whose keys are the other options' names.
    public static func configFile(_ name: String, environment: String?, help: String) -> ConfigOption {
        ConfigOption(name, environment: environment, valueName: "FILE", help: help, defaultText: "",
                     store: { _, _ in }, render: { _ in "" }, isConfigFile: true)
    }
}

/// `a, b or c`.
func listing(_ words: [String]) -> String {
    words.count < 2 ? words.joined() : words.dropLast().joined(separator: ", ") + " or " + words.last!
}

/// A duration option's rule: the range validation and the parser enforce, and its text.
public struct DurationRule: Sendable {
    public let zeroAllowed: Bool
    public let maximum: Double
    public let text: String
    /// The least time above 0 (0 itself is `zeroAllowed`'s); 0: any.
    public let minimum: Double

    public init(zeroAllowed: Bool, maximum: Double, text: String, minimum: Double = 0) {
        self.zeroAllowed = zeroAllowed
        self.maximum = maximum
        self.text = text
        self.minimum = minimum
    }

    public func allows(_ seconds: Double) -> Bool {
        guard seconds.isFinite && seconds <= maximum else { return false }
        if seconds == 0 { return zeroAllowed }
        return seconds > 0 && seconds >= minimum
    }
}
