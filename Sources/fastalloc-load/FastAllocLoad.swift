import ArgumentParser
import LoadClient
import Options
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// fastalloc-load: drives an echo server (or a relay in front of one) and checks every byte.
@main
struct FastAllocLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fastalloc-load",
        abstract: "A load-test client for echo servers and relays: verifies every echoed byte, reports throughput and latency.",
        discussion: """
            Each connection sends a deterministic byte pattern (per connection and offset) and checks
            every byte that comes back, however the server splits or coalesces it. Without --rate the
            load is closed loop (each connection keeps --depth messages in flight). With --rate it is
            open loop: every message has an intended send time and its latency counts from that time,
            so a server that stalls cannot hide it (as wrk2 does). Warm-up results are discarded.
            Exit status: 0 when every byte matched and no connection failed or closed early; 1 otherwise,
            with the reason on stderr; 64 for a bad flag.
            """)

    @Option(help: "The server, HOST:PORT (IPv4).")
    var target: String = "127.0.0.1:7000"

    @Option(help: "Connections in all, 1 to 1000000.")
    var connections: Int = 64

    @Option(help: "Bytes per message, 1 to 16777216.")
    var size: Int = 64

    @Option(help: "Messages in flight per connection, 1 to 65536 (and --connections × --depth at most 16777216).")
    var depth: Int = 1

    @Option(help: "Measured time after the warm-up: 10s, 500ms, 2m; at most 7d.")
    var duration: String = "10s"

    @Option(help: "Warm-up time whose results are discarded, 0 to 7d.")
    var warmup: String = "2s"

    @Option(help: "Event-loop threads, 1 to 256 (and at most --connections).")
    var threads: Int = 1

    @Option(help: "Messages per second in all, open loop, 0.001 to 1000000000. Omit for as fast as possible.")
    var rate: Double?

    @Option(help: "Send this many messages per connection and stop (a fixed-count run, no warm-up), 1 to 1000000000.")
    var messages: Int?

    @Option(name: .customLong("connect-timeout"), help: "Time a connection may take to connect, at most 1h.")
    var connectTimeout: String = "5s"

    @Flag(help: "Print one JSON object instead of the summary.")
    var json = false

    @Flag(name: .customLong("no-verify"), help: "Do not check the echoed bytes (only count them).")
    var noVerify = false

    @Option(help: "Seed of the byte pattern.")
    var seed: UInt64 = 1

    func makeConfig() throws -> LoadConfig {
        let address: SocketAddress
        do {
            address = try SocketAddress(parsing: target)
        } catch {
            throw ValidationError("--target: \(error)")
        }
        func seconds(_ text: String, _ flag: String) throws -> Double {
            guard let value = parseDuration(text) else {
                throw ValidationError("\(flag): '\(text)' (expected: a time like 10s, 500ms, 2m or 1.5)")
            }
            return value
        }
        var config = LoadConfig(target: address)
        config.connections = connections
        config.size = size
        config.depth = depth
        config.duration = try seconds(duration, "--duration")
        config.warmup = try seconds(warmup, "--warmup")
        config.connectTimeout = try seconds(connectTimeout, "--connect-timeout")
        config.threads = threads
        config.rate = rate
        config.messagesPerConnection = messages
        config.verify = !noVerify
        config.seed = seed
        do {
            try config.validate()
        } catch {
            throw ValidationError("\(error)")
        }
        return config
    }

    func validate() throws {
        _ = try makeConfig()
    }

    func run() throws {
        let config = try makeConfig()
        signal(SIGPIPE, SIG_IGN)
        let terminal = isatty(STDERR_FILENO) == 1
        let progress: @Sendable (Double, Double, UInt64) -> Void = { elapsed, rate, p99 in
            // Both finite and far below 2^63 (elapsed: at most the run; rate: messages over a
            // positive time), but clamped anyway: Int(_:) traps beyond.
            let line = "\(Int(min(elapsed, 1e18)))s  \(Int(min(rate, 1e18))) msg/s  p99 \(p99 / 1000) µs"
            writeStderr(terminal ? "\r\u{1B}[K" + line : line + "\n")
        }
        let report = try runLoad(config, progress: progress)
        if terminal { writeStderr("\r\u{1B}[K") }
        print(json ? report.json() : report.summary())
        if let reason = report.failureReason {
            writeStderr("fastalloc-load: \(reason)\n")
            throw ExitCode.failure
        }
    }
}

func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
