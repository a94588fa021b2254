import ConfigYAML
import FastAlloc
import Options
import Testing

/// A configuration to read config files into: a scalar of each kind, a list, and the file option.
private struct Site: Sendable, Equatable {
    enum Color: String, CaseIterable, Sendable { case red, green }
    var count = 4
    var timeout = 5.0
    var color = Color.red
    var verbose = false
    var hosts: [String] = []

    static let table = OptionTable<Site>([
        .configFile("config", environment: "SITE_CONFIG", help: "A YAML file."),
        .integer("count", environment: "SITE_COUNT", \.count, range: 1...10, help: "How many, 1 to 10."),
        .duration("timeout", environment: "SITE_TIMEOUT", \.timeout,
                  rule: DurationRule(zeroAllowed: false, maximum: 60, text: "a time > 0, at most 1m"), help: "How long."),
        .choice("color", environment: "SITE_COLOR", \.color, help: "A color."),
        .flag("verbose", environment: "SITE_VERBOSE", \.verbose, help: "Say more."),
        ConfigOption("host", environment: "SITE_HOST", valueName: "NAME", help: "A host; repeats.", repeats: true,
                     store: { config, text throws(OptionRuleError) in
                         let names = text.split(separator: ",").map(String.init)
                         guard names.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter } }) else {
                             throw OptionRuleError("names of letters")
                         }
                         config.hosts = names
                     }, check: { config in
                         config.hosts.count > 3 ? OptionViolation(value: config.hosts.last!, rule: "at most 3 hosts") : nil
                     }, render: { $0.hosts.joined(separator: ",") }),
    ], environmentPrefix: "SITE_")

    /// The file's YAML (named `site.yaml` in messages) under `values` and `environment`, validated.
    static func make(_ yaml: String, _ values: [String: String] = [:], _ environment: [String: String] = [:]) throws(ConfigError) -> Site {
        let file = try table.fileValues(from: ConfigYAML.parse(Array(yaml.utf8), path: "site.yaml"), path: "site.yaml")
        var site = Site()
        let origins = try table.apply(values: values, environment: environment, file: file, to: &site)
        do { try table.validate(site) } catch { throw origins.renaming(error) }
        return site
    }
}

/// The message `yaml` is refused with.
private func refusal(_ yaml: String) -> String {
    do {
        _ = try Site.make(yaml)
        return "(accepted)"
    } catch {
        return error.description
    }
}

@Suite struct ConfigFileTests {
    @Test func goodFile_givesEveryKind() throws {
        let site = try Site.make("""
            # a comment
            count: 7
            timeout: 500ms
            color: green
            verbose: true
            host:
              - alpha
              - beta   # a comment after a value
            """)
        #expect(site == Site(count: 7, timeout: 0.5, color: .green, verbose: true, hosts: ["alpha", "beta"]))
        // Flow style, quotes, and a single value for a list.
        #expect(try Site.make("{count: '3', host: [a, b]}") == Site(count: 3, hosts: ["a", "b"]))
        #expect(try Site.make("host: \"solo\"").hosts == ["solo"])
    }

    @Test func emptyFile_orOnlyComments_changesNothing() throws {
        #expect(try Site.make("") == Site())
        #expect(try Site.make("# nothing yet\n") == Site())
    }

    @Test func flagsWinOverVariables_whichWinOverTheFile_whichWinsOverDefaults() throws {
        let yaml = "count: 7\ntimeout: 2s\ncolor: green\nhost: [alpha, beta]\n"
        let site = try Site.make(yaml, ["count": "3", "host": "gamma"], ["SITE_COUNT": "5", "SITE_TIMEOUT": "9s", "SITE_COLOR": ""])
        #expect(site.count == 3)            // flag over variable over file
        #expect(site.timeout == 9)          // variable over file
        #expect(site.color == .green)       // file (an empty variable counts as absent)
        #expect(site.hosts == ["gamma"])    // a list is replaced whole
        #expect(site.verbose == false)      // default
    }

    @Test(arguments: [
        // An unknown key: named, with its line and the names it is near.
        ("count: 2\ncuont: 3\n", "site.yaml:2: cuont: unknown key; did you mean count? (expected: an option name of --help, without its dashes)"),
        ("count: 2\n\nfrobnicate: 3\n", "site.yaml:3: frobnicate: unknown key (expected: an option name of --help, without its dashes)"),
        // A value the option refuses: the option's own rule, and the line.
        ("count: 2\ntimeout: soon\n", "site.yaml:2: timeout: 'soon' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        ("color: blue\n", "site.yaml:1: color: 'blue' (expected: red or green)"),
        ("verbose: maybe\n", "site.yaml:1: verbose: 'maybe' (expected: 1, true or yes (set), 0, false or no (unset))"),
        // A rule checked by validation, on a value from the file.
        ("\ncount: 11\n", "site.yaml:2: count: 11 (expected: 1...10)"),
        // The item of a list that is refused, by its own line; and one validation quotes.
        ("host:\n  - alpha\n  - b2\n  - gamma\n", "site.yaml:3: host: 'b2' (expected: names of letters)"),
        ("host:\n  - a\n  - b\n  - c\n  - d\n", "site.yaml:5: host: d (expected: at most 3 hosts)"),
        // Wrong types: a map or a list where one value goes.
        ("count:\n  value: 3\n", "site.yaml:2: count: a map (expected: one value, N)"),
        ("count: [1, 2]\n", "site.yaml:1: count: a list (expected: one value, N)"),
        ("verbose: {a: 1}\n", "site.yaml:1: verbose: a map (expected: one value, true or false)"),
        ("host:\n  - alpha\n  - {name: beta}\n", "site.yaml:3: host: a map (expected: one value, NAME)"),
        // Not a map of options at all.
        ("- count\n- 3\n", "site.yaml:1: a list (expected: a map of option names to values, one `name: value` a line, like `listen: 127.0.0.1:7000`)"),
        ("just words\n", "site.yaml:1: 'just words' (expected: a map of option names to values, one `name: value` a line, like `listen: 127.0.0.1:7000`)"),
        // YAML syntax, with the line.
        ("count: 2\ntimeout: [1s\ncolor: red\n",
         "site.yaml:3: YAML syntax error: did not find expected ',' or ']', column 6, while parsing a flow sequence on line 2 (expected: YAML)"),
        ("count: 2\n  timeout: 1s\n", "site.yaml:2: YAML syntax error: mapping values are not allowed in this context, column 10 (expected: YAML)"),
        ("count: 2\ncolor: 'red\n", "site.yaml:3: YAML syntax error: found unexpected end of stream, column 1, while scanning a quoted scalar on line 2 (expected: YAML)"),
        ("count: 2\n\tcolor: red\n", "site.yaml:2: YAML syntax error: found a tab character that violates indentation, column 1, while scanning a plain scalar on line 1 (expected: YAML)"),
        // What the reader refuses on purpose.
        ("count: 2\ncount: 3\n", "site.yaml:2: count: given twice (expected: each key once; it was first given on line 1)"),
        ("count: &n 2\nhost: *n\n", "site.yaml:2: host: an alias (*name) (expected: values written out: aliases are not read)"),
        ("count: 2\n---\ncount: 3\n", "site.yaml:2: a second YAML document (expected: one document: a map of option names to values)"),
        ("[a]: 1\n", "site.yaml:1: a key that is a list or a map (expected: a name: keys are option names)"),
        ("config: other.yaml\n", "site.yaml:1: config: a config file cannot name another (expected: an option name of --help, without its dashes)"),
    ] as [(String, String)])
    func badFile_namesTheLine_theKey_andTheRule(yaml: String, message: String) {
        #expect(refusal(yaml) == message)
    }

    @Test func invalidUTF8_isASyntaxErrorOnItsLine() {
        let bytes = Array("count: 2\ncolor: ".utf8) + [0xFF, 0x0A]
        #expect(throws: ConfigError(field: "site.yaml:2", value: "YAML syntax error: invalid leading UTF-8 octet (byte 16)", expected: "YAML")) {
            try ConfigYAML.parse(bytes, path: "site.yaml")
        }
    }

    @Test func nestingBeyondTheLimit_isRefused_withoutRecursion() {
        let deep = String(repeating: "[", count: 100_000)
        #expect(throws: ConfigError(field: "site.yaml:1", value: "nesting deeper than 16",
                                    expected: "a map of option names to values, a list or a map in them")) {
            try ConfigYAML.parse(Array(deep.utf8), path: "site.yaml")
        }
    }

    @Test func unreadableFile_namesWhereThePathCameFrom() {
        #expect(throws: ConfigError(field: "--config (from SITE_CONFIG)", value: "'/nonexistent/site.yaml'",
                                    expected: "a readable YAML file (No such file or directory)")) {
            try Site.table.readConfigFile("/nonexistent/site.yaml", field: "--config (from SITE_CONFIG)")
        }
        #expect(throws: ConfigError.self) { try Site.table.readConfigFile("/", field: "--config") }
    }

    @Test func configFilePath_comesFromTheFlag_orElseTheVariable() {
        #expect(Site.table.configFilePath(values: [:], environment: [:]) == nil)
        #expect(Site.table.configFilePath(values: [:], environment: ["SITE_CONFIG": ""]) == nil)
        #expect(Site.table.configFilePath(values: [:], environment: ["SITE_CONFIG": "b.yaml"])! == ("b.yaml", "--config (from SITE_CONFIG)"))
        #expect(Site.table.configFilePath(values: ["config": "a.yaml"], environment: ["SITE_CONFIG": "b.yaml"])! == ("a.yaml", "--config"))
    }

    @Test func scalarsAreTheirText_andNullIsEmpty() throws {
        let root = try ConfigYAML.parse(Array("a: 2\nb: true\nc: ~\nd:\ne: 'null'\nf: \"x y\"\ng: |\n  two\n  lines\n".utf8), path: "t.yaml")
        guard case .mapping(let pairs) = root.content else { Issue.record("not a map"); return }
        #expect(pairs.map(\.key) == ["a", "b", "c", "d", "e", "f", "g"])
        #expect(pairs.map(\.line) == [1, 2, 3, 4, 5, 6, 7])
        #expect(pairs.map { $0.value.scalar } == ["2", "true", "", "", "null", "x y", "two\nlines\n"])
    }

    @Test func renderedYAML_readsBackToTheSameConfiguration() throws {
        let site = Site(count: 9, timeout: 0.25, color: .green, verbose: true, hosts: ["alpha", "beta"])
        let yaml = Site.table.renderYAML(site)
        #expect(yaml == "count: 9\ntimeout: 250ms\ncolor: green\nverbose: true\nhost:\n  - alpha\n  - beta\n")
        #expect(try Site.make(yaml) == site)
        #expect(Site.table.renderYAML(Site()).contains("host: []\n"))
        #expect(try Site.make(Site.table.renderYAML(Site())) == Site())
        #expect(!Site.table.render(site).contains("config"))
    }

    @Test(arguments: [
        ("60s", "60s"), ("127.0.0.1:7000", "127.0.0.1:7000"), ("exponential:2", "exponential:2"), ("16KiB", "16KiB"),
        ("[::1]:7000", "'[::1]:7000'"), ("off", "'off'"), ("Yes", "'Yes'"), ("null", "'null'"), ("", "''"),
        ("a: b", "'a: b'"), ("a #b", "'a #b'"), ("it's", "it's"), ("'q'", "'''q'''"), ("-1", "'-1'"), ("*x", "'*x'"),
    ] as [(String, String)])
    func yamlScalar_quotesOnlyWhatAPlainScalarWouldMisread(text: String, written: String) throws {
        #expect(yamlScalar(text) == written)
        let root = try ConfigYAML.parse(Array("k: \(written)\n".utf8), path: "t.yaml")
        guard case .mapping(let pairs) = root.content else { Issue.record("not a map"); return }
        #expect(pairs.first?.value.scalar == text)
    }
}
