import LoadClient
import Testing
import UVLoop

/// Issue 14, item 4, for the load client: every value LoadConfig.validate() accepts runs
/// without a trap. Extreme values of every flag are refused with a named rule, or accepted
/// within the documented ceilings with every integer the run computes in range.
@Suite struct LoadConfigBoundsTests {
    static let target = SocketAddress(host: "127.0.0.1", port: 7000)

    /// The properties of every accepted configuration: the conversions the run uses are in range.
    static func expectInBounds(_ config: LoadConfig, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let week: UInt64 = 7 * 86_400 * 1_000_000_000
        #expect(config.warmupNanoseconds <= week, "\(what)", sourceLocation: sourceLocation)
        if let duration = config.durationNanoseconds { #expect((1...week).contains(duration), "\(what)", sourceLocation: sourceLocation) }
        #expect((1...3_600_000).contains(config.connectTimeoutMilliseconds), "\(what)", sourceLocation: sourceLocation)
        if config.rate != nil {
            // At least 1 ns (0 would be a closed loop), at most 10^18 ns (31.7 years).
            #expect((1...1_000_000_000_000_000_000).contains(config.intervalNanoseconds), "\(what)", sourceLocation: sourceLocation)
        } else {
            #expect(config.intervalNanoseconds == 0, "\(what)", sourceLocation: sourceLocation)
        }
        if let bytes = config.bytesPerConnection { #expect(bytes < Int.max, "\(what)", sourceLocation: sourceLocation) }
        #expect((1...256).contains(config.threads), "\(what)", sourceLocation: sourceLocation)
        #expect(config.connections * config.depth <= LoadConfig.maxInFlight, "\(what)", sourceLocation: sourceLocation)
    }

    static let integers = [Int.min, -1, 0, 1, 255, 256, 257, 65_536, 65_537, 1_000_000, 1_000_001, 16 << 20, (16 << 20) + 1,
                           1_000_000_000, 1_000_000_001, Int(Int32.max), Int.max]
    static let doubles = [-Double.infinity, -1, -0.0, 0, 1e-300, 0.000_999, 0.001, 0.5, 1, 3600, 3601, 604_800, 604_801,
                          1e9, 1e9 + 1, 1e300, .greatestFiniteMagnitude, .infinity, .nan]

    @Test func extremeValues_ofEveryFlag_areRefusedWithANamedRule_orAcceptedInBounds() {
        typealias Change = (String, (inout LoadConfig) -> Void)
        var changes: [Change] = []
        for value in LoadConfigBoundsTests.integers {
            changes.append(("--connections \(value)", { $0.connections = value }))
            changes.append(("--size \(value)", { $0.size = value }))
            changes.append(("--depth \(value)", { $0.depth = value }))
            changes.append(("--threads \(value)", { $0.threads = value }))
            changes.append(("--messages \(value)", { $0.messagesPerConnection = value }))
            changes.append(("--connections \(value) --threads \(value)", { $0.connections = value; $0.threads = value }))
            changes.append(("--messages \(value) --size 16MiB", { $0.messagesPerConnection = value; $0.size = 16 << 20 }))
        }
        for value in LoadConfigBoundsTests.doubles {
            changes.append(("--duration \(value)", { $0.duration = value }))
            changes.append(("--warmup \(value)", { $0.warmup = value }))
            changes.append(("--connect-timeout \(value)", { $0.connectTimeout = value }))
            changes.append(("--rate \(value)", { $0.rate = value }))
            changes.append(("--rate \(value) --connections 1000000 --depth 1", { $0.rate = value; $0.connections = 1_000_000 }))
        }
        let flags = ["--target", "--connections", "--size", "--depth", "--threads", "--messages", "--duration", "--warmup",
                     "--rate", "--connect-timeout"]
        for (what, change) in changes {
            var config = LoadConfig(target: LoadConfigBoundsTests.target)
            change(&config)
            do {
                try config.validate()
                LoadConfigBoundsTests.expectInBounds(config, what)
            } catch {
                #expect(flags.contains(error.field), "\(what): \(error)")
                #expect(!error.expected.isEmpty, "\(what): \(error)")
            }
        }
    }

    @Test(arguments: [
        ("--rate", "1e-300", "--rate: 1e-300 (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        ("--rate", "1e300", "--rate: 1e+300 (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        ("--rate", "inf", "--rate: inf (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        ("--rate", "nan", "--rate: nan (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        ("--duration", "1e300", "--duration: 1e+300 (expected: a time > 0, at most 7d, like 10s or 500ms)"),
        ("--warmup", "604801", "--warmup: 604801.0 (expected: a time from 0 to 7d, like 2s)"),
        ("--connect-timeout", "1e300", "--connect-timeout: 1e+300 (expected: a time > 0, at most 1h, like 5s)"),
        ("--connect-timeout", "inf", "--connect-timeout: inf (expected: a time > 0, at most 1h, like 5s)"),
        ("--messages", "9223372036854775807", "--messages: 9223372036854775807 (expected: 1...1000000000)"),
        ("--threads", "300", "--threads: 300 (expected: 1...256)"),
        ("--depth", "65536", "--depth: 65536 (expected: --connections × --depth at most 16777216 messages in flight (this run asks for 65536000))"),
    ])
    func extremeValue_namesFlagValueAndRule(flag: String, text: String, message: String) {
        var config = LoadConfig(target: LoadConfigBoundsTests.target)
        config.connections = 1000
        let number = Double(text)!
        switch flag {
        case "--rate": config.rate = number
        case "--duration": config.duration = number
        case "--warmup": config.warmup = number
        case "--connect-timeout": config.connectTimeout = number
        case "--messages": config.messagesPerConnection = Int(text)!
        case "--threads": config.threads = Int(text)!
        case "--depth": config.depth = Int(text)!
        default: Issue.record("no such flag \(flag)")
        }
        #expect(throws: LoadConfigError.self) { try config.validate() }
        do {
            try config.validate()
        } catch {
            #expect(error.description == message)
        }
    }

    @Test func conversions_clamp_neverTrap() {
        var config = LoadConfig(target: LoadConfigBoundsTests.target)
        config.warmup = .infinity
        config.duration = 1e300
        config.connectTimeout = .nan
        config.rate = 1e-300
        #expect(config.warmupNanoseconds == .max)
        #expect(config.durationNanoseconds == .max)
        #expect(config.connectTimeoutMilliseconds == 0)
        #expect(config.intervalNanoseconds == .max)
        config.rate = 1e300
        #expect(config.intervalNanoseconds == 1)  // never 0: that would be a closed loop
        config.rate = .nan
        #expect(config.intervalNanoseconds == 0)
        config.rate = 1000
        config.connections = 64
        #expect(config.intervalNanoseconds == 64_000_000)
        config.messagesPerConnection = .max
        config.size = 16 << 20
        #expect(config.bytesPerConnection == .max)
        #expect(config.warmupNanoseconds == 0 && config.durationNanoseconds == nil)  // a fixed-count run
        config.messagesPerConnection = 1_000_000_000
        #expect(config.bytesPerConnection == 1_000_000_000 * (16 << 20))
        #expect(clampedNanoseconds(2.5e-9) == 3 && clampedNanoseconds(1e-300) == 1 && clampedNanoseconds(-1) == 0)
        #expect(clampedMilliseconds(.infinity) == .max && clampedMilliseconds(.nan) == 0)
    }

    /// The slowest and the fastest rate validation accepts, run for real against an echo server
    /// on 127.0.0.1: a fixed count, so each ends by itself, with every byte checked.
    @Test(arguments: [0.001, 1_000_000_000.0])
    func extremeRates_run(rate: Double) throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        var config = LoadConfig(target: server.address)
        config.connections = 1
        config.rate = rate
        config.messagesPerConnection = rate < 1 ? 1 : 200  // at 0.001/s only the message due at t = 0
        config.connectTimeout = 3600
        let report = try runLoad(config)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == config.messagesPerConnection)
    }
}
