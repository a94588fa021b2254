import LoadClient
import Synchronization
import TestSupport
import Testing
import UVLoop

/// The load client against an in-process echo server that behaves, or misbehaves on purpose.
/// Every run is bounded: a fixed message count, or a sub-second duration.
@Suite struct LoadClientTests {
    func fixedCount(_ server: TestEchoServer, connections: Int = 4, messages: Int = 50, size: Int = 100,
                    depth: Int = 3, threads: Int = 1) throws -> LoadReport {
        var config = LoadConfig(target: server.address)
        config.connections = connections
        config.messagesPerConnection = messages
        config.size = size
        config.depth = depth
        config.threads = threads
        config.connectTimeout = 5
        return try runLoad(config)
    }

    @Test func fixedCountRun_countsExactly() throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        let report = try fixedCount(server, connections: 4, messages: 50, size: 100, depth: 3)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 200)
        #expect(report.bytes == 20_000)
        #expect(report.mismatchedBytes == 0)
        #expect(report.latency["p50"] != nil && report.latency["max"]! >= report.latency["p50"]!)
    }

    @Test func twoThreads_countExactly() throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        let report = try fixedCount(server, connections: 6, messages: 40, size: 33, depth: 2, threads: 2)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 240)
        #expect(report.bytes == 240 * 33)
    }

    @Test func corruptingServer_isDetected_withFirstOffset() throws {
        let server = try TestEchoServer(.corrupt(offset: 1000))
        defer { server.stop() }
        let report = try fixedCount(server, connections: 3, messages: 20, size: 100, depth: 2)
        #expect(!report.succeeded)
        #expect(report.mismatchedBytes == 3, "one flipped byte per connection")
        #expect(report.firstMismatch?.offset == 1000)
        #expect(report.failureReason?.contains("mismatched byte(s), first at offset 1000") == true)
        #expect(report.json().contains("\"mismatched_bytes\": 3"))
    }

    @Test func serverClosingEarly_isReported() throws {
        let server = try TestEchoServer(.closeAfter(bytes: 640))
        defer { server.stop() }
        let report = try fixedCount(server, connections: 2, messages: 100, size: 64, depth: 1)
        #expect(!report.succeeded)
        #expect(report.earlyCloses == 2)
        #expect(report.messages < 200)
        #expect(report.failureReason?.contains("closed early") == true)
    }

    @Test func unreachableTarget_givesClearError() throws {
        let server = try TestEchoServer()
        let address = server.address
        server.stop()  // nothing listens there now
        var config = LoadConfig(target: address)
        config.connections = 2
        config.messagesPerConnection = 5
        let report = try runLoad(config)
        #expect(report.connectFailures == 2)
        #expect(report.messages == 0)
        #expect(report.errors.first?.contains("ECONNREFUSED") == true, "\(report.errors)")
        #expect(report.failureReason?.contains("failed to connect") == true)
    }

    @Test func oneByteWrites_stillVerify() throws {
        let server = try TestEchoServer(.oneByteWrites)
        defer { server.stop() }
        let report = try fixedCount(server, connections: 2, messages: 20, size: 50, depth: 2)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 40)
    }

    @Test func coalescedWrites_stillVerify() throws {
        let server = try TestEchoServer(.coalesce(atLeast: 300))
        defer { server.stop() }
        // depth 4 x 100 bytes in flight: the server holds 300 before writing them back at once.
        let report = try fixedCount(server, connections: 2, messages: 40, size: 100, depth: 4)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 80)
    }

    @Test func timedRun_discardsWarmup_andStopsByItself() throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        var config = LoadConfig(target: server.address)
        config.connections = 2
        config.duration = 0.4
        config.warmup = 0.2
        let report = try runLoad(config)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages > 0)
        #expect(report.warmupMessages > 0)
        // At least the duration was measured; the generous upper bound only says the run ended
        // by itself (a loaded CI machine under a sanitizer can be late by far more than 0.2 s).
        #expect(report.seconds > 0.3 && report.seconds < 3)
    }

    @Test func progressLine_duringWarmup_saysWarmingUp_withItsRate() {
        #expect(LoadProgress(elapsed: 1.2, warmingUp: true, rate: 39_875.6, p99: 0).line == "1s  warming up: 39876 msg/s")
        #expect(LoadProgress(elapsed: 2.998, warmingUp: false, rate: 41_230.2, p99: 812_345).line == "3s  41230 msg/s  p99 812 µs")
        #expect(LoadProgress(elapsed: .nan, warmingUp: true, rate: .infinity, p99: 0).line == "0s  warming up: 1000000000000000000 msg/s")
    }

    /// The progress reports during the warm-up say so and give the warm-up's own rate (they
    /// used to say "0 msg/s  p99 0 µs": nothing measured yet). Reported every 50 ms here.
    @Test func progress_duringWarmup_reportsTheWarmupsOwnRate() throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        var config = LoadConfig(target: server.address)
        config.connections = 2
        config.warmup = 0.5
        config.duration = 0.3
        let seen = Mutex<[LoadProgress]>([])
        let report = try runLoad(config, progressInterval: 0.05) { progress in seen.withLock { $0.append(progress) } }
        let reports = seen.withLock { $0 }
        #expect(report.succeeded, "\(report.summary())")
        // Decided from the same clock reading as `elapsed`: warm-up exactly while it lasts.
        for progress in reports {
            #expect(progress.warmingUp == (progress.elapsed < config.warmup), "\(progress)")
        }
        let warm = reports.filter(\.warmingUp)
        #expect(reports.contains { !$0.warmingUp }, "\(reports)")
        for progress in warm {
            #expect(progress.p99 == 0)
            #expect(progress.line.contains("s  warming up: ") && !progress.line.contains("p99"), "\(progress.line)")
        }
        // The warm-up's own rate: its messages so far over its time so far, so no more than
        // all its messages, and not 0 once messages flow.
        let last = try #require(warm.last, "no report during the warm-up: \(reports)")
        #expect(last.rate > 0, "\(last)")
        #expect(last.rate * last.elapsed <= Double(report.warmupMessages) + 0.5, "\(last), \(report.warmupMessages) warm-up messages")
    }

    @Test func progressInterval_outOfRange_isRefused() throws {
        let config = LoadConfig(target: SocketAddress(host: "127.0.0.1", port: 9))
        #expect(throws: LoadConfigError.self) { try runLoad(config, progressInterval: 0) { _ in } }
        #expect(throws: LoadConfigError.self) { try runLoad(config, progressInterval: .nan) { _ in } }
    }

    @Test func openLoop_neverSendsAheadOfSchedule() throws {
        let server = try TestEchoServer()
        defer { server.stop() }
        var config = LoadConfig(target: server.address)
        config.connections = 4
        config.rate = 2000
        config.duration = 0.5
        config.warmup = 0
        let report = try runLoad(config)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages > 0)
        // The schedule allows at most rate x time messages (plus one per connection at t=0).
        #expect(report.messages <= 2000 / 2 + 4 + 4)
    }
}

@Suite struct LoadConfigTests {
    @Test func badValues_nameTheFlagAndRule() throws {
        var config = LoadConfig(target: SocketAddress(host: "127.0.0.1", port: 7000))
        config.size = 0
        #expect(throws: LoadConfigError(field: "--size", value: "0", expected: "1...16777216 bytes")) { try config.validate() }
        config.size = 64
        config.threads = 65
        #expect(throws: LoadConfigError(field: "--threads", value: "65", expected: "1...connections (64)")) { try config.validate() }
        config.threads = 1
        config.rate = 0
        #expect(throws: LoadConfigError.self) { try config.validate() }
        config.rate = nil
        config.depth = 0
        #expect(throws: LoadConfigError.self) { try config.validate() }
        config.depth = 1
        config.target = SocketAddress(host: "127.0.0.1", port: 0)
        #expect(throws: LoadConfigError.self) { try config.validate() }
    }

    @Test func addresses_parse_withReasons() throws {
        #expect(try SocketAddress(parsing: "127.0.0.1:7000") == SocketAddress(host: "127.0.0.1", port: 7000))
        #expect(throws: AddressError.self) { try SocketAddress(parsing: "localhost") }
        #expect(throws: AddressError.self) { try SocketAddress(parsing: "127.0.0.1:99999") }
        #expect(throws: AddressError.self) { try SocketAddress(parsing: "example.com:80") }
    }
}
