import FastAlloc
import ServerCore
import Testing
import UVLoop

/// Matches a `ConfigError` by the option it names.
enum ConfigErrorMatcher {
    static func field(_ name: String) -> (any Error) -> Bool {
        { ($0 as? ConfigError)?.field == name }
    }
}

@Suite struct ServerConfigTests {
    func parse(_ values: [String: String], environment: [String: String] = [:], mode: ServerMode = .echo) throws(ConfigError) -> ServerConfig {
        try ServerConfig(mode: mode, values: values, environment: environment)
    }

    @Test func defaults_bindLoopback_andAreValid() throws {
        let config = try parse([:])
        #expect(config.listen == SocketAddress(host: "127.0.0.1", port: 7000))
        #expect(config.workers == min(ServerConfig.onlineCores, 256))
        #expect(config.buffers.bufferSize == 65536)
        #expect(config.idleTimeout == 60 && config.connectTimeout == 5 && config.drainTimeout == 10)
    }

    @Test func flagsWinOverEnvironment_environmentOverDefaults() throws {
        let config = try parse(["workers": "3"], environment: ["FASTALLOC_WORKERS": "5", "FASTALLOC_BUFFER_SIZE": "16KiB",
                                                               "FASTALLOC_OVERFLOW_GROWTH": "linear:32"])
        #expect(config.workers == 3)
        #expect(config.buffers.bufferSize == 16384)
        #expect(config.buffers.overflowGrowth == .linear(32))
    }

    @Test func valuesAreParsed() throws {
        let config = try parse(["idle-timeout": "500ms", "drain-timeout": "2m", "buffer-size": "1MiB",
                                "overflow-growth": "exponential:1.5", "high-watermark": "1M", "low-watermark": "4096",
                                "listen": "0.0.0.0:0"])
        #expect(config.idleTimeout == 0.5)
        #expect(config.drainTimeout == 120)
        #expect(config.buffers.bufferSize == 1 << 20)
        #expect(config.buffers.overflowGrowth == .exponential(1.5))
        #expect(config.highWatermark == 1 << 20 && config.lowWatermark == 4096)
        #expect(config.listen.port == 0)
    }

    @Test(arguments: [
        (["workers": "0"], "--workers: 0 (expected: 1...256)"),
        (["workers": "two"], "--workers: 'two' (expected: a whole number)"),
        (["buffer-size": "32"], "--buffer-size: 32 (expected: 64...1048576 bytes)"),
        (["overflow-growth": "double"], "--overflow-growth: 'double' (expected: linear:N (N > 0), exponential:F (F > 1) or none)"),
        (["overflow-growth": "exponential:1"], "--overflow-growth: .exponential(1.0) (expected: a finite factor > 1)"),
        (["overflow-initial": "100", "overflow-max": "10"], "--overflow-max: 10 (expected: >= --overflow-initial (100))"),
        (["idle-timeout": "soon"], "--idle-timeout: 'soon' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["connect-timeout": "0"], "--connect-timeout: '0' (expected: a time > 0, at most 1h, like 5s)"),
        (["low-watermark": "1M", "high-watermark": "64K"], "--low-watermark: 1048576 (expected: 0...--high-watermark - 1 (65535))"),
        (["listen": "localhost:7000"], "--listen: 'localhost:7000' (expected: HOST:PORT with an IPv4 host, like 127.0.0.1:7000 ('localhost' is not an IPv4 address))"),
        (["max-connections": "0"], "--max-connections: 0 (expected: 1...1000000)"),
    ])
    func badValue_namesOptionValueAndRule(values: [String: String], message: String) {
        #expect(throws: (any Error).self) { try parse(values) }
        do {
            _ = try parse(values)
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func upstreamName_isResolvedOnceToIPv4() throws {
        let config = try parse(["upstream": "localhost:7001"], mode: .relay)
        #expect(config.upstream == SocketAddress(host: "127.0.0.1", port: 7001))
        let literal = try parse(["upstream": "10.1.2.3:80"], mode: .relay)
        #expect(literal.upstream == SocketAddress(host: "10.1.2.3", port: 80))
    }

    @Test func upstreamThatDoesNotResolve_namesOptionAndRule() {
        do {
            _ = try parse(["upstream": "no-such-host.invalid:7001"], mode: .relay)  // RFC 2606: never resolves
            Issue.record("accepted an upstream that does not resolve")
        } catch {
            #expect(error.field == "--upstream")
            #expect(error.expected.hasPrefix("HOST:PORT with an IPv4 address or a name that resolves to one"))
            #expect(error.expected.contains("'no-such-host.invalid' is neither an IPv4 address nor a name that resolves to one"))
        }
        #expect(throws: ConfigError.self) { try parse(["upstream": "localhost:70000"], mode: .relay) }
    }

    @Test func badEnvironmentValue_namesTheVariable() {
        do {
            _ = try parse([:], environment: ["FASTALLOC_WORKERS": "999"])
            Issue.record("accepted 999 workers")
        } catch {
            #expect(error.field == "--workers (from FASTALLOC_WORKERS)")
        }
    }

    @Test func connectionBudget_fitsTheDescriptorLimit() {
        var config = ServerConfig(mode: .echo)
        config.workers = 2
        // 1024 - 20 open - 2 x 8 per worker - 72 reserved - 16 spare = 900: one each for echo...
        #expect(Server.connectionBudget(config: config, fileLimit: 1024, openNow: 20, reserved: 72) == 900)
        // ...two each (client and upstream) for a relay.
        config.mode = .relay
        #expect(Server.connectionBudget(config: config, fileLimit: 1024, openNow: 20, reserved: 72) == 450)
        #expect(Server.connectionBudget(config: config, fileLimit: 100, openNow: 20, reserved: 72) == 0)
        #expect(Server.connectionBudget(config: config, fileLimit: Int.max, openNow: 20, reserved: 72) == Int.max)
    }

    @Test func everyOptionHasAVariableAndHelp() {
        for option in ServerConfig.options {
            #expect(option.environment == "FASTALLOC_" + option.name.uppercased().replacing("-", with: "_"))
            #expect(!option.help.isEmpty)
        }
    }
}
