import FastAlloc
import PacketBuffers
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
        (["listen": "localhost:7000"], "--listen: 'localhost:7000' (expected: HOST:PORT with a numeric host, like 127.0.0.1:7000 or [::1]:7000 ('localhost' is not an IP address))"),
        (["listen": "::1:7000"], "--listen: '::1:7000' (expected: HOST:PORT with a numeric host, like 127.0.0.1:7000 or [::1]:7000 (an IPv6 address goes in brackets, like [::1]:7000))"),
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
            #expect(error.expected.hasPrefix("HOST:PORT with an IPv4 address, an [IPv6] address or a name that resolves to one"))
            #expect(error.expected.contains("'no-such-host.invalid' is neither an IP address nor a name that resolves to one"))
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

    /// The table prints a configuration as `name = value` lines (the form the config file will
    /// take); reading them back gives the same configuration.
    @Test func renderedConfiguration_readsBackToItself() throws {
        let config = try parse(["workers": "3", "idle-timeout": "500ms", "stats": "off", "buffer-size": "16KiB",
                                "overflow-growth": "linear:32", "log-level": "debug", "backlog": "77", "upstream": "127.0.0.1:7001"],
                               mode: .relay)
        let text = ServerConfig.table.render(config)
        var values: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " = ", maxSplits: 1).map(String.init)
            if parts.count == 2 { values[parts[0]] = parts[1] }
        }
        #expect(values.count == ServerConfig.options.count - 1)  // all but --config
        let again = try parse(values, mode: .relay)
        #expect(ServerConfig.table.render(again) == text)
        #expect(again.backlog == 77 && again.stats == nil && again.idleTimeout == 0.5 && again.buffers.bufferSize == 16384)
    }

    @Test func everyOptionHasAVariableAndHelp() {
        for option in ServerConfig.options {
            #expect(option.environment == "FASTALLOC_" + option.name.uppercased().replacing("-", with: "_"))
            #expect(!option.help.isEmpty)
        }
    }
}

/// Issue 14, item 4: no value that validation accepts can crash the server. Every option gets
/// extreme values, from the command line and from the environment; each is either refused with
/// an error naming the option and a rule, or accepted within the documented ceilings, and then
/// every integer the server computes from it is in range (the conversions clamp, never trap).
@Suite struct ServerConfigBoundsTests {
    static let extremes = [
        "1e300", "1e-300", "inf", "-inf", "nan", "-1", "-0", "0", "1", "9223372036854775807", "-9223372036854775808",
        "9223372036854775808", "99999999999999999999", "99999999999999999999K", "9223372036854775807K", "1e308d", "1e300ms",
        "7d", "7.000001d", "604800", "604801", "1h", "3601s", "32767", "32768", "1GiB", "1025MiB", "2147483647", "2147483648",
        "1048576", "1048577", "0.0000001us", "1e-300ms", "linear:9223372036854775807", "linear:2147483648", "exponential:1e300",
        "exponential:inf", "exponential:nan", "", "0x1p70", "１",
    ]

    /// Every option but --upstream, whose names go to the resolver.
    static let options = ServerConfig.options.filter { $0.name != "upstream" }

    static let sevenDays: UInt64 = 7 * 86_400_000

    /// The properties every accepted configuration has: within the documented ceilings, and
    /// every conversion in range.
    static func expectInBounds(_ config: ServerConfig, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(ServerConfig.workersRange.contains(config.workers), "\(what)", sourceLocation: sourceLocation)
        #expect(config.bufferMemory <= ServerConfig.bufferMemoryCeiling, "\(what)", sourceLocation: sourceLocation)
        #expect(config.idleTimeoutMilliseconds <= sevenDays, "\(what)", sourceLocation: sourceLocation)
        #expect((1...3_600_000).contains(config.connectTimeoutMilliseconds), "\(what)", sourceLocation: sourceLocation)
        #expect(config.drainTimeoutMilliseconds <= sevenDays, "\(what)", sourceLocation: sourceLocation)
        #expect(config.writeTimeoutMilliseconds <= sevenDays, "\(what)", sourceLocation: sourceLocation)
        #expect((1...sevenDays).contains(config.lingerTimeoutMilliseconds), "\(what)", sourceLocation: sourceLocation)
        #expect(config.tcpKeepaliveSeconds <= 32_767, "\(what)", sourceLocation: sourceLocation)
        #expect((config.tcpKeepaliveSeconds == 0) == (config.tcpKeepalive == 0), "\(what)", sourceLocation: sourceLocation)
        #expect((10...1000).contains(config.sweepIntervalMilliseconds ?? 0), "\(what)", sourceLocation: sourceLocation)
        #expect(config.highWatermarkBuffers >= 1, "\(what)", sourceLocation: sourceLocation)
        #expect(config.highWatermarkBuffers <= (1 << 30) / 64, "\(what)", sourceLocation: sourceLocation)
        #expect((0..<config.highWatermarkBuffers).contains(config.lowWatermarkBuffers), "\(what)", sourceLocation: sourceLocation)
        #expect(ServerConfig.maxConnectionsRange.contains(config.maxConnections), "\(what)", sourceLocation: sourceLocation)
    }

    @Test(arguments: ServerConfigBoundsTests.options.map(\.name))
    func extremeValues_areRefusedWithANamedRule_orAcceptedInBounds(option: String) {
        let variable = ServerConfig.options.first { $0.name == option }!.environment!
        for text in ServerConfigBoundsTests.extremes {
            for fromEnvironment in [false, true] {
                let values = fromEnvironment ? [:] : [option: text]
                let environment = fromEnvironment ? [variable: text] : [:]
                let what = "--\(option) \(fromEnvironment ? "(from \(variable)) " : "")'\(text)'"
                do {
                    let config = try ServerConfig(mode: .echo, values: values, environment: environment)
                    ServerConfigBoundsTests.expectInBounds(config, what)
                } catch {
                    // Refused: the error names an option (this one, or the one it conflicts
                    // with: --overflow-initial 2147483647 breaks --overflow-max's rule) and a rule.
                    let named = ServerConfig.options.contains {
                        error.field == "--\($0.name)" || error.field == "--\($0.name) (from \($0.environment!))"
                    }
                    #expect(named, "\(what): \(error)")
                    #expect(error.field.hasPrefix("--\(option)") || !error.expected.contains("a time"), "\(what): \(error)")
                    #expect(!error.expected.isEmpty, "\(what): \(error)")
                }
            }
        }
    }

    @Test(arguments: [
        (["idle-timeout": "1e300"], "--idle-timeout: '1e300' (expected: a time from 0 to 7d (0: none), like 60s)"),
        (["idle-timeout": "7.000001d"], "--idle-timeout: '7.000001d' (expected: a time from 0 to 7d (0: none), like 60s)"),
        (["drain-timeout": "1e300"], "--drain-timeout: '1e300' (expected: a time from 0 to 7d (0: close at once), like 10s)"),
        (["write-timeout": "604801"], "--write-timeout: '604801' (expected: a time from 0 to 7d (0: none), like 30s)"),
        (["linger-timeout": "1e300ms"], "--linger-timeout: '1e300ms' (expected: a time > 0, at most 7d, like 5s)"),
        (["linger-timeout": "0"], "--linger-timeout: '0' (expected: a time > 0, at most 7d, like 5s)"),
        (["connect-timeout": "3601s"], "--connect-timeout: '3601s' (expected: a time > 0, at most 1h, like 5s)"),
        (["tcp-keepalive": "32768"], "--tcp-keepalive: '32768' (expected: a time from 0 to 32767s (0: off; Linux's most), like 60s)"),
        (["idle-timeout": "inf"], "--idle-timeout: 'inf' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["idle-timeout": "1e308d"], "--idle-timeout: '1e308d' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["idle-timeout": "-1"], "--idle-timeout: '-1' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["workers": "9223372036854775807"], "--workers: 9223372036854775807 (expected: 1...256)"),
        (["workers": "99999999999999999999"], "--workers: '99999999999999999999' (expected: a whole number)"),
        (["local-buffers": "1048577"], "--local-buffers: 1048577 (expected: 1...1048576)"),
        (["buffer-size": "99999999999999999999K"], "--buffer-size: '99999999999999999999K' (expected: a byte count like 65536, 64K or 1MiB)"),
        (["buffer-size": "9223372036854775807"], "--buffer-size: 9223372036854775807 (expected: 64...1048576 bytes)"),
        (["overflow-max": "2147483648"], "--overflow-max: 2147483648 (expected: <= 2147483647)"),
        (["overflow-growth": "linear:2147483648"], "--overflow-growth: .linear(2147483648) (expected: a linear step from 1 to 2147483647)"),
        (["high-watermark": "1025MiB"], "--high-watermark: 1074790400 (expected: a byte count from 1 to 1GiB)"),
        (["high-watermark": "9223372036854775807"], "--high-watermark: 9223372036854775807 (expected: a byte count from 1 to 1GiB)"),
        (["max-connections": "9223372036854775807"], "--max-connections: 9223372036854775807 (expected: 1...1000000)"),
    ])
    func extremeValue_namesOptionValueAndRule(values: [String: String], message: String) {
        do {
            let config = try ServerConfig(mode: .echo, values: values, environment: [:])
            Issue.record("accepted \(values): idle \(config.idleTimeout) s")
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func environmentValueOutOfRange_namesTheVariable() {
        do {
            _ = try ServerConfig(mode: .echo, values: [:], environment: ["FASTALLOC_IDLE_TIMEOUT": "1e300"])
            Issue.record("accepted an idle timeout of 1e300 s")
        } catch {
            #expect(error.description == "--idle-timeout (from FASTALLOC_IDLE_TIMEOUT): '1e300' (expected: a time from 0 to 7d (0: none), like 60s)")
        }
    }

    @Test func everyMaximum_isAccepted_andConverts() throws {
        let config = try ServerConfig(mode: .relay, values: [
            "upstream": "127.0.0.1:7001", "workers": "256", "idle-timeout": "7d", "connect-timeout": "1h", "drain-timeout": "7d",
            "write-timeout": "604800", "linger-timeout": "7d", "tcp-keepalive": "32767s", "high-watermark": "1GiB",
            "low-watermark": "1073741823", "max-connections": "1000000", "buffer-size": "64", "local-buffers": "4096",
            "overflow-max": "16777216", "overflow-initial": "1", "overflow-growth": "linear:2147483647",
        ], environment: [:])
        #expect(config.idleTimeoutMilliseconds == 604_800_000)
        #expect(config.connectTimeoutMilliseconds == 3_600_000)
        #expect(config.drainTimeoutMilliseconds == 604_800_000)
        #expect(config.writeTimeoutMilliseconds == 604_800_000)
        #expect(config.lingerTimeoutMilliseconds == 604_800_000)
        #expect(config.tcpKeepaliveSeconds == 32_767)
        #expect(config.sweepIntervalMilliseconds == 1000)
        #expect(config.highWatermarkBuffers == (1 << 30) / 64)
        #expect(config.lowWatermarkBuffers == (1 << 30) / 64 - 1)
        #expect(config.bufferMemory == (256 * 4096 + 16_777_216) * 64)  // 1 GiB + 64 MiB: fits any machine that runs this
        // The largest local pool and overflow pool (of the smallest buffers: 64 MiB, 128 GiB).
        let local = try ServerConfig(mode: .echo, values: ["workers": "1", "buffer-size": "64", "local-buffers": "1048576"], environment: [:])
        #expect(local.bufferMemory == (1_048_576 + 1024) * 64)
        var overflow = ServerConfig(mode: .echo)
        overflow.workers = 1
        overflow.buffers = try PacketBufferConfig(bufferSize: 64, localBuffers: 1, overflowMax: Int(Int32.max))
        #expect(overflow.bufferMemory == (1 + 2_147_483_647) * 64)
        if overflow.bufferMemory <= ServerConfig.bufferMemoryCeiling { try overflow.validate() }
    }

    @Test func milliseconds_clampsEveryDouble() {
        #expect(ServerConfig.milliseconds(.nan) == 0)
        #expect(ServerConfig.milliseconds(-.infinity) == 0)
        #expect(ServerConfig.milliseconds(-1) == 0)
        #expect(ServerConfig.milliseconds(-0.0) == 0)
        #expect(ServerConfig.milliseconds(0) == 0)
        #expect(ServerConfig.milliseconds(1e-300) == 1)  // a positive time is at least 1 ms, never "none"
        #expect(ServerConfig.milliseconds(0.0004) == 1)
        #expect(ServerConfig.milliseconds(0.0015) == 2)
        #expect(ServerConfig.milliseconds(1.1) == 1100)
        #expect(ServerConfig.milliseconds(60) == 60_000)
        #expect(ServerConfig.milliseconds(18_446_744_073_709_551.615) == .max)  // 2^64 ms, after rounding
        #expect(ServerConfig.milliseconds(1e300) == .max)
        #expect(ServerConfig.milliseconds(.greatestFiniteMagnitude) == .max)
        #expect(ServerConfig.milliseconds(.infinity) == .max)
        #expect(ServerConfig.milliseconds(9_000_000_000_000_000) == 9_000_000_000_000_000_000)
    }

    @Test func sweepInterval_isAQuarterOfTheShortestEnabledTimeout_within10To1000ms() {
        var config = ServerConfig(mode: .echo)
        config.idleTimeout = 2
        config.writeTimeout = 0
        config.lingerTimeout = 3
        #expect(config.sweepIntervalMilliseconds == 500)  // idle 2 s / 4
        config.writeTimeout = 0.4
        #expect(config.sweepIntervalMilliseconds == 100)  // write 400 ms / 4
        config.lingerTimeout = 0.2
        #expect(config.sweepIntervalMilliseconds == 50)  // linger 200 ms / 4
        config.connectTimeout = 0.1
        #expect(config.sweepIntervalMilliseconds == 50)  // connect counts in relay mode only
        config.mode = .relay
        #expect(config.sweepIntervalMilliseconds == 25)
        config.connectTimeout = 1e-300
        #expect(config.sweepIntervalMilliseconds == 10)  // never more often than every 10 ms
        config = ServerConfig(mode: .echo)
        config.idleTimeout = 7 * 86_400
        config.writeTimeout = 7 * 86_400
        config.lingerTimeout = 7 * 86_400
        #expect(config.sweepIntervalMilliseconds == 1000)  // never less often than every second
        config.idleTimeout = 0
        config.writeTimeout = 0
        config.lingerTimeout = 0  // (validate() refuses it; the conversion does not trap)
        #expect(config.sweepIntervalMilliseconds == nil)
        config.idleTimeout = .nan
        config.writeTimeout = -.infinity
        config.lingerTimeout = .infinity
        #expect(config.sweepIntervalMilliseconds == 1000)
    }

    @Test func tcpKeepaliveSeconds_offIsZero_otherwiseAtLeastOne() {
        var config = ServerConfig(mode: .echo)
        for (seconds, expected) in [(0.0, UInt32(0)), (-1, 0), (.nan, 0), (1e-300, 1), (0.4, 1), (1.4, 1), (1.5, 2), (60, 60),
                                    (32_767, 32_767), (4_294_967_295, .max), (1e300, .max), (.infinity, .max)] {
            config.tcpKeepalive = seconds
            #expect(config.tcpKeepaliveSeconds == expected, "\(seconds) s")
        }
    }

    @Test func watermarks_inWholeBuffers() throws {
        var config = ServerConfig(mode: .echo)
        config.buffers = try PacketBufferConfig(bufferSize: 65_536)
        for (high, low, highBuffers, lowBuffers) in [(256 * 1024, 64 * 1024, 4, 1), (100, 50, 1, 0), (65_537, 65_535, 2, 0),
                                                     (65_536, 0, 1, 0), (131_072, 131_071, 2, 1), (1 << 30, (1 << 30) - 1, 16_384, 16_383)] {
            config.highWatermark = high
            config.lowWatermark = low
            #expect(config.highWatermarkBuffers == highBuffers, "high \(high)")
            #expect(config.lowWatermarkBuffers == lowBuffers, "low \(low)")
        }
        // Unvalidated extremes do not trap.
        config.highWatermark = .max
        config.lowWatermark = .max
        #expect(config.highWatermarkBuffers == Int.max / 65_536 + 1)
        config.highWatermark = .min
        config.lowWatermark = .min
        #expect(config.highWatermarkBuffers == 1 && config.lowWatermarkBuffers == 0)
        config.buffers.bufferSize = 0
        config.highWatermark = .max
        #expect(config.highWatermarkBuffers == .max)
    }

    @Test func defaultWorkers_areClampedTo256() {
        #expect(ServerConfig.defaultWorkers(onlineCores: 512) == 256)
        #expect(ServerConfig.defaultWorkers(onlineCores: 256) == 256)
        #expect(ServerConfig.defaultWorkers(onlineCores: 3) == 3)
        #expect(ServerConfig.defaultWorkers(onlineCores: 0) == 1)
        #expect(ServerConfig(mode: .echo).workers == min(ServerConfig.onlineCores, 256))
    }

    @Test func totalBufferMemory_beyondThePhysicalMemory_isRefused_namingTheFigure() throws {
        // 2^31 - 1 overflow buffers of 1 MiB: 2 PiB, more than any machine has.
        do {
            _ = try ServerConfig(mode: .echo, values: ["workers": "1", "buffer-size": "1MiB", "overflow-max": "2147483647"], environment: [:])
            Issue.record("accepted 2 PiB of packet buffers")
        } catch {
            #expect(error.field == "--overflow-max")
            #expect(error.value == "2147483647")
            #expect(error.expected.hasPrefix("total packet-buffer memory (workers × --local-buffers + --overflow-max) × --buffer-size at most the physical memory, "))
            #expect(error.expected.hasSuffix("; this configuration asks for 2.0 PiB"), "\(error)")
        }
        // 256 workers × 2^20 local buffers of 1 MiB: 256 TiB, most of it local.
        do {
            _ = try ServerConfig(mode: .echo, values: ["workers": "256", "buffer-size": "1MiB", "local-buffers": "1048576"], environment: [:])
            Issue.record("accepted 256 TiB of packet buffers")
        } catch {
            #expect(error.field == "--local-buffers")
            #expect(error.expected.hasSuffix("; this configuration asks for 256.0 TiB"), "\(error)")
        }
        // The defaults and the test servers' shapes fit any machine.
        var config = ServerConfig(mode: .echo)
        config.workers = 256
        #expect(config.bufferMemory == (256 * 128 + 1024) * 65_536)
        try config.validate()
        #expect(ServerConfig.bufferMemoryCeiling >= 1 << 30)
    }

    @Test func bufferMemory_saturates_neverTraps() {
        var config = ServerConfig(mode: .echo)
        config.workers = .max
        config.buffers.localBuffers = .max
        #expect(config.bufferMemory == .max)
        config.workers = -1
        #expect(config.bufferMemory == .max)
        #expect(throws: ConfigError.self) { try config.validate() }
    }
}
