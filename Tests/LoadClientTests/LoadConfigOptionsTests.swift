import LoadClient
import Options
import Testing
import UVLoop

/// fastalloc-load's flags, as LoadConfig.table declares them: the command line they read, the
/// defaults (LoadConfig's own initial values), the messages of a bad flag, --help.
@Suite struct LoadConfigOptionsTests {
    static func config(_ arguments: [String]) throws -> LoadConfig {
        try LoadConfig(values: LoadConfig.table.parse(commandLine: arguments).values)
    }

    @Test func noFlags_giveTheDefaults() throws {
        let config = try LoadConfigOptionsTests.config([])
        #expect(config.target == SocketAddress(host: "127.0.0.1", port: 7000))
        #expect(LoadConfig.table.render(config) == LoadConfig.table.render(LoadConfig()))
        #expect(LoadConfig.table.render(config) == [
            "target = 127.0.0.1:7000", "connections = 64", "size = 64", "depth = 1", "duration = 10s", "warmup = 2s",
            "threads = 1", "rate = ", "messages = ", "connect-timeout = 5s", "json = false", "no-verify = false", "seed = 1",
        ].joined(separator: "\n"))
    }

    @Test func everyFlag_setsItsField() throws {
        let config = try LoadConfigOptionsTests.config([
            "--target", "10.0.0.2:7001", "--connections=8", "--size", "1000", "--depth", "4", "--duration", "500ms",
            "--warmup", "0", "--threads", "2", "--rate", "2500.5", "--connect-timeout", "1h", "--json", "--no-verify",
            "--seed", "18446744073709551615",
        ])
        #expect(config.target == SocketAddress(host: "10.0.0.2", port: 7001))
        #expect(config.connections == 8 && config.size == 1000 && config.depth == 4 && config.threads == 2)
        #expect(config.duration == 0.5 && config.warmup == 0 && config.connectTimeout == 3600)
        #expect(config.rate == 2500.5 && config.messagesPerConnection == nil)
        #expect(config.jsonOutput && !config.verify && config.seed == .max)
        #expect(try LoadConfigOptionsTests.config(["--messages", "20"]).messagesPerConnection == 20)
    }

    @Test func renderedConfiguration_parsesBackToItself() throws {
        var config = LoadConfig(target: SocketAddress(host: "192.168.1.9", port: 9000))
        config.rate = 0.5
        config.messagesPerConnection = 3
        config.duration = 90
        config.verify = false
        config.seed = 42
        var values: [String: String] = [:]
        for line in LoadConfig.table.render(config).split(separator: "\n") {
            let parts = line.split(separator: " = ", maxSplits: 1).map(String.init)
            values[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        #expect(LoadConfig.table.render(try LoadConfig(values: values)) == LoadConfig.table.render(config))
    }

    @Test(arguments: [
        (["--connections", "many"], "--connections: 'many' (expected: a whole number)"),
        (["--connections", "0"], "--connections: 0 (expected: 1...1000000)"),
        (["--size", "17000000"], "--size: 17000000 (expected: 1...16777216 bytes)"),
        (["--target", "localhost:7000"], "--target: 'localhost:7000' (expected: HOST:PORT with a numeric host, like 127.0.0.1:7000 "),
        (["--target", "127.0.0.1"], "--target: '127.0.0.1' (expected: HOST:PORT with a numeric host, like 127.0.0.1:7000 (expected HOST:PORT"),
        (["--target", "127.0.0.1:0"], "--target: 127.0.0.1:0 (expected: a port from 1 to 65535)"),
        (["--duration", "0"], "--duration: 0.0 (expected: a time > 0, at most 7d, like 10s or 500ms)"),
        (["--warmup", "8d"], "--warmup: '8d' (expected: a time from 0 to 7d, like 2s)"),
        (["--connect-timeout", "soon"], "--connect-timeout: 'soon' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["--rate", "fast"], "--rate: 'fast' (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        (["--rate", "0"], "--rate: 0.0 (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        (["--messages", "0"], "--messages: 0 (expected: 1...1000000000)"),
        (["--threads", "5", "--connections", "4"], "--threads: 5 (expected: 1...connections (4))"),
        (["--seed", "-1"], "--seed: '-1' (expected: a whole number from 0 to 18446744073709551615)"),
        (["--json=maybe"], "--json: 'maybe' (expected: 1, true or yes (set), 0, false or no (unset))"),
    ])
    func badFlag_namesTheFlag_theValue_andTheRule(arguments: [String], message: String) {
        #expect(throws: LoadConfigError.self) { try LoadConfigOptionsTests.config(arguments) }
        do {
            _ = try LoadConfigOptionsTests.config(arguments)
        } catch {
            #expect("\(error)".hasPrefix(message), "\(error)")
        }
    }

    @Test func unknownOrValuelessFlag_isNamed() {
        #expect(throws: CommandLineError(message: "unknown option '--conections' (did you mean --connections?); see --help")) {
            try LoadConfig.table.parse(commandLine: ["--conections", "8"])
        }
        #expect(throws: CommandLineError(message: "--duration needs a value (TIME)")) {
            try LoadConfig.table.parse(commandLine: ["--duration"])
        }
    }

    /// A fixed-count run does not use --duration, so its rule does not hold there (as before
    /// the table): whichever flag comes first.
    @Test func fixedCountRun_ignoresTheDurationRule() throws {
        #expect(try LoadConfigOptionsTests.config(["--duration", "0", "--messages", "5"]).messagesPerConnection == 5)
        #expect(try LoadConfigOptionsTests.config(["--messages", "5", "--duration", "30d"]).duration == 30 * 86_400)
    }

    @Test func help_listsEveryFlag_withItsDefault() {
        let help = LoadConfig.table.help(defaults: LoadConfig())
        for option in LoadConfig.table.options {
            #expect(help.contains("  --\(option.name)"), "--\(option.name)")
            #expect(option.environment == nil, "--\(option.name) has a variable")
        }
        for text in ["Default: 127.0.0.1:7000.", "Default: 64.", "Default: 10s.", "Default: 2s.", "Default: 5s.", "Default: 1."] {
            #expect(help.contains(text), "\(text)")
        }
        #expect(!help.contains("FASTALLOC_"))
    }
}
