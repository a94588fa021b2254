import FastAlloc
import PacketBuffers
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What the server does with a connection's bytes.
public enum ServerMode: String, Sendable, CaseIterable {
    /// Every byte goes back to the connection it came from.
    case echo
    /// Every client connection gets its own connection to the fixed upstream; bytes flow both ways.
    case relay
}

/// Everything the server needs, validated in one place. Errors name the command-line option,
/// the value and the rule (`--workers: 0 (expected: 1...256)`).
public struct ServerConfig: Sendable {
    public var mode: ServerMode
    /// Where clients connect. 127.0.0.1 by default: exposing the server is a decision.
    public var listen: SocketAddress = SocketAddress(host: "127.0.0.1", port: 7000)
    /// The relay's one upstream; never chosen by a client (no open proxy). Relay mode only.
    public var upstream: SocketAddress?
    /// Worker threads, each with its own loop, listener (SO_REUSEPORT) and local buffer pool.
    /// The online cores by default, but never more than `workersRange` allows.
    public var workers: Int = ServerConfig.defaultWorkers
    /// Packet buffers: size, local buffers per worker, the shared overflow pool.
    public var buffers: PacketBufferConfig = try! PacketBufferConfig()
    /// Connections open at once, all workers together; beyond it new ones are closed at once.
    /// 1,024 by default: the default pools (at least 128 + 1,024 buffers) can then give every
    /// connection the one buffer a client that stops reading holds, and still keep a reserve
    /// for new ones (see `Server.fairConnections`); more warns at start.
    public var maxConnections: Int = 1024
    /// Seconds a connection may stay without a byte read from it or a queued write to it
    /// completing (0: never closed for it).
    public var idleTimeout: Double = 60
    /// Seconds the relay waits for the upstream to accept.
    public var connectTimeout: Double = 5
    /// Seconds established connections may go on after SIGTERM/SIGINT; then the rest are reset.
    public var drainTimeout: Double = 10
    /// Seconds a write queued to a connection may make no progress before the connection is
    /// reset and counted (a reader that stopped reading holds buffers only this long; 0: never).
    public var writeTimeout: Double = 30
    /// Seconds a lingering close (after a failure: flush, FIN, read and discard until the peer
    /// closes) may take, independent of the idle timeout.
    public var lingerTimeout: Double = 5
    /// Seconds of silence before TCP keepalive probes start on client and upstream sockets
    /// (0: off), so a peer that vanished is found even while nothing is queued to it.
    public var tcpKeepalive: Double = 60
    /// Memory a direction's write queue may hold (whole buffers counted) before the other side
    /// stops reading. Reading resumes at or below `lowWatermark`.
    public var highWatermark: Int = 256 * 1024
    public var lowWatermark: Int = 64 * 1024
    /// Listen backlog.
    public var backlog: Int = 1024
    /// Where the stats HTTP endpoint listens (`--stats off`: nil, no endpoint). 127.0.0.1:9464 by
    /// default: loopback, and not 9090, which a local Prometheus takes.
    public var stats: SocketAddress? = SocketAddress(host: "127.0.0.1", port: 9464)

    public init(mode: ServerMode) {
        self.mode = mode
    }

    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The default worker count: one per online core, at most 256 (`defaultWorkers(onlineCores:)`).
    public static var defaultWorkers: Int { defaultWorkers(onlineCores: onlineCores) }

    /// Checks every rule; the error names the first option that breaks one.
    public func validate() throws(ConfigError) {
        func fail(_ option: String, _ value: Any, _ rule: String) -> ConfigError {
            ConfigError(field: option, value: "\(value)", expected: rule)
        }
        switch (mode, upstream) {
        case (.relay, nil): throw fail("--upstream", "(none)", "HOST:PORT of the upstream, required in relay mode")
        case (.echo, let upstream?): throw fail("--upstream", upstream, "no upstream in echo mode (use relay)")
        case (.relay, let upstream?) where upstream.port == 0: throw fail("--upstream", upstream, "a port from 1 to 65535")
        default: break
        }
        if !ServerConfig.workersRange.contains(workers) { throw fail("--workers", workers, "1...256") }
        if !ServerConfig.localBuffersRange.contains(buffers.localBuffers) {
            throw fail("--local-buffers", buffers.localBuffers, "1...\(ServerConfig.localBuffersRange.upperBound)")
        }
        if case .linear(let step) = buffers.overflowGrowth, step > ServerConfig.maxLinearGrowth {
            throw fail("--overflow-growth", buffers.overflowGrowth, "a linear step from 1 to \(ServerConfig.maxLinearGrowth)")
        }
        do {
            try buffers.validate()
        } catch {
            let names = ["bufferSize": "--buffer-size", "localBuffers": "--local-buffers", "overflowInitial": "--overflow-initial",
                         "overflowGrowth": "--overflow-growth", "overflowMax": "--overflow-max"]
            throw ConfigError(field: names[error.field] ?? error.field, value: error.value,
                              expected: error.expected.replacing("overflowInitial", with: "--overflow-initial"))
        }
        // Every count above is within its own range, so the product names a real figure.
        let memory = bufferMemory
        if memory > ServerConfig.bufferMemoryCeiling {
            // Name the larger term: the option that asks for most of it.
            let localShare = workers * buffers.localBuffers
            let (option, value) = localShare >= buffers.overflowMax
                ? ("--local-buffers", buffers.localBuffers) : ("--overflow-max", buffers.overflowMax)
            throw fail(option, value, "total packet-buffer memory (workers × --local-buffers + --overflow-max) × --buffer-size "
                + "at most the physical memory, \(ServerConfig.formatBytes(ServerConfig.bufferMemoryCeiling)); "
                + "this configuration asks for \(ServerConfig.formatBytes(memory))")
        }
        if !ServerConfig.maxConnectionsRange.contains(maxConnections) { throw fail("--max-connections", maxConnections, "1...1000000") }
        for (option, seconds) in [("idle-timeout", idleTimeout), ("connect-timeout", connectTimeout), ("drain-timeout", drainTimeout),
                                  ("write-timeout", writeTimeout), ("linger-timeout", lingerTimeout), ("tcp-keepalive", tcpKeepalive)] {
            let rule = ServerConfig.durationRules[option]!
            if !rule.allows(seconds) { throw fail("--\(option)", seconds, rule.text) }
        }
        if !ServerConfig.highWatermarkRange.contains(highWatermark) {
            throw fail("--high-watermark", highWatermark, "a byte count from 1 to 1GiB")
        }
        if lowWatermark < 0 || lowWatermark >= highWatermark {
            throw fail("--low-watermark", lowWatermark, "0...--high-watermark - 1 (\(highWatermark - 1))")
        }
        if !ServerConfig.backlogRange.contains(backlog) { throw fail("--backlog", backlog, "1...65535") }
        if let stats, stats == listen, stats.port != 0 {
            throw fail("--stats", stats, "an address other than --listen's")
        }
    }
}

// MARK: Parsing the command line and the environment

/// One option of the server's command line, with its environment variable and rule.
public struct ServerOption: Sendable {
    public let name: String
    public let environment: String
    public let help: String
}

extension ServerConfig {
    /// Every option the command line and the environment take, in `--help` order.
    public static let options: [ServerOption] = [
        .init(name: "listen", environment: "FASTALLOC_LISTEN", help: "Address to accept clients on, HOST:PORT (port 0: any free port). Default 127.0.0.1:7000."),
        .init(name: "upstream", environment: "FASTALLOC_UPSTREAM", help: "Relay mode: the fixed upstream every client is relayed to, HOST:PORT; a host name is resolved once, at startup, to its first IPv4 address."),
        .init(name: "workers", environment: "FASTALLOC_WORKERS", help: "Worker threads, each with its own event loop and buffer pool, 1 to 256. Default: the online cores (at most 256)."),
        .init(name: "buffer-size", environment: "FASTALLOC_BUFFER_SIZE", help: "Bytes per packet buffer (one read), 64 to 1048576; suffixes K, KiB, M, MiB, G, GiB. Default 65536."),
        .init(name: "local-buffers", environment: "FASTALLOC_LOCAL_BUFFERS", help: "Buffers each worker owns (taken without a lock), 1 to 1048576. Default 128. All packet buffers together, (workers × this + --overflow-max) × --buffer-size, must fit the physical memory."),
        .init(name: "overflow-initial", environment: "FASTALLOC_OVERFLOW_INITIAL", help: "Buffers the shared overflow pool starts with. Default 64."),
        .init(name: "overflow-growth", environment: "FASTALLOC_OVERFLOW_GROWTH", help: "How the overflow pool grows: linear:N (N up to 2147483647), exponential:F (F > 1) or none. Default exponential:2."),
        .init(name: "overflow-max", environment: "FASTALLOC_OVERFLOW_MAX", help: "Most buffers the overflow pool may hold, up to 2147483647; beyond, readers wait (backpressure). Default 1024."),
        .init(name: "max-connections", environment: "FASTALLOC_MAX_CONNECTIONS", help: "Client connections open at once, 1 to 1000000; beyond, new ones are closed at once and counted. Default 1024 (what the default buffer pools serve fairly; more warns at start)."),
        .init(name: "idle-timeout", environment: "FASTALLOC_IDLE_TIMEOUT", help: "Close a connection that has neither sent nor taken a byte for this long, 0 (never) to 7d. Default 60s."),
        .init(name: "connect-timeout", environment: "FASTALLOC_CONNECT_TIMEOUT", help: "Relay mode: time the upstream may take to accept, at most 1h. Default 5s."),
        .init(name: "drain-timeout", environment: "FASTALLOC_DRAIN_TIMEOUT", help: "On SIGTERM/SIGINT, how long established connections may go on (both ways) before what is left is reset on both sides, 0 to 7d. Default 10s."),
        .init(name: "write-timeout", environment: "FASTALLOC_WRITE_TIMEOUT", help: "Reset a connection whose queued writes make no progress for this long (a reader that stopped reading; counted), 0 (never) to 7d. Default 30s."),
        .init(name: "linger-timeout", environment: "FASTALLOC_LINGER_TIMEOUT", help: "After a failure, how long a connection may linger (flush, FIN, discard input until the peer closes) before it is closed, at most 7d. Default 5s."),
        .init(name: "tcp-keepalive", environment: "FASTALLOC_TCP_KEEPALIVE", help: "TCP keepalive on client and upstream sockets: seconds of silence before probes start, 0 (off) to 32767s (Linux's most). Default 60s."),
        .init(name: "high-watermark", environment: "FASTALLOC_HIGH_WATERMARK", help: "Buffer memory a direction's write queue may hold before its source stops reading (counted in whole buffers), 1 byte to 1GiB. Default 256KiB."),
        .init(name: "low-watermark", environment: "FASTALLOC_LOW_WATERMARK", help: "Reading resumes when the queue holds this much or less (below --high-watermark). Default 64KiB."),
        .init(name: "stats", environment: "FASTALLOC_STATS", help: "Stats HTTP endpoint (/metrics, /stats, /healthz, /readyz, / dashboard), HOST:PORT or off. Default 127.0.0.1:9464."),
        .init(name: "log-level", environment: "FASTALLOC_LOG_LEVEL", help: "trace, debug, info, notice, warning, error or critical. Default info."),
    ]

    /// Builds a configuration from option values: each from `values` (the command line) or,
    /// when absent there, from its environment variable, or else its default. Errors name the
    /// option (and the variable when the value came from there).
    public init(mode: ServerMode, values: [String: String], environment: [String: String]) throws(ConfigError) {
        self.init(mode: mode)
        var origin: [String: String] = [:]
        func value(_ name: String) -> String? {
            if let text = values[name] { origin[name] = "--\(name)"; return text }
            let variable = ServerConfig.options.first { $0.name == name }!.environment
            if let text = environment[variable], !text.isEmpty { origin[name] = "--\(name) (from \(variable))"; return text }
            return nil
        }
        func fail(_ name: String, _ text: String, _ rule: String) -> ConfigError {
            ConfigError(field: origin[name] ?? "--\(name)", value: "'\(text)'", expected: rule)
        }
        func address(_ name: String) throws(ConfigError) -> SocketAddress? {
            guard let text = value(name) else { return nil }
            do { return try SocketAddress(parsing: text) } catch { throw fail(name, text, "HOST:PORT with an IPv4 host, like 127.0.0.1:7000 (\(error.reason))") }
        }
        func integer(_ name: String, bytes: Bool = false) throws(ConfigError) -> Int? {
            guard let text = value(name) else { return nil }
            if bytes, let count = ServerConfig.parseByteCount(text) { return count }
            guard let number = Int(text) else {
                throw fail(name, text, bytes ? "a byte count like 65536, 64K or 1MiB" : "a whole number")
            }
            return number
        }
        func seconds(_ name: String) throws(ConfigError) -> Double? {
            guard let text = value(name) else { return nil }
            guard let seconds = parseDuration(text) else { throw fail(name, text, "a time like 60s, 500ms, 2m or 1.5") }
            // The range is checked here too, so that the error quotes the text as given.
            if let rule = ServerConfig.durationRules[name], !rule.allows(seconds) { throw fail(name, text, rule.text) }
            return seconds
        }

        if let listen = try address("listen") { self.listen = listen }
        if let text = value("upstream") {
            do { upstream = try SocketAddress(resolving: text) } catch {
                throw fail("upstream", text, "HOST:PORT with an IPv4 address or a name that resolves to one, "
                    + "like 127.0.0.1:7001 or upstream.internal:7001 (\(error.reason))")
            }
        }
        if let workers = try integer("workers") { self.workers = workers }
        var buffers = self.buffers
        if let size = try integer("buffer-size", bytes: true) { buffers.bufferSize = size }
        if let local = try integer("local-buffers") { buffers.localBuffers = local }
        if let initial = try integer("overflow-initial") { buffers.overflowInitial = initial }
        if let text = value("overflow-growth") {
            guard let growth = ServerConfig.parseGrowth(text) else {
                throw fail("overflow-growth", text, "linear:N (N > 0), exponential:F (F > 1) or none")
            }
            buffers.overflowGrowth = growth
        }
        if let maximum = try integer("overflow-max") { buffers.overflowMax = maximum }
        self.buffers = buffers
        if let maximum = try integer("max-connections") { maxConnections = maximum }
        if let idle = try seconds("idle-timeout") { idleTimeout = idle }
        if let connect = try seconds("connect-timeout") { connectTimeout = connect }
        if let drain = try seconds("drain-timeout") { drainTimeout = drain }
        if let write = try seconds("write-timeout") { writeTimeout = write }
        if let linger = try seconds("linger-timeout") { lingerTimeout = linger }
        if let keepalive = try seconds("tcp-keepalive") { tcpKeepalive = keepalive }
        if let high = try integer("high-watermark", bytes: true) { highWatermark = high }
        if let low = try integer("low-watermark", bytes: true) { lowWatermark = low }
        if let text = value("stats") {
            if text == "off" {
                stats = nil
            } else {
                do { stats = try SocketAddress(parsing: text) } catch {
                    throw fail("stats", text, "HOST:PORT with an IPv4 host, or off (\(error.reason))")
                }
            }
        }
        do {
            try validate()
        } catch {
            // Say where a bad value came from when it was the environment.
            let name = String(error.field.dropFirst(2))
            if let where_ = origin[name], where_ != error.field {
                throw ConfigError(field: where_, value: error.value, expected: error.expected)
            }
            throw error
        }
    }

    /// `65536`, `64K`, `64KiB`, `1M`, `1MiB`, `1G`, `1GiB` (powers of 1024). Nil when the
    /// count does not fit an Int (`99999999999999999999K`).
    public static func parseByteCount(_ text: String) -> Int? {
        let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1024), ("M", 1 << 20), ("G", 1 << 30),
                                      ("k", 1024)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let value = Int(text.dropLast(suffix.count)), value >= 0, value <= Int.max / scale else { return nil }
            return value * scale
        }
        return Int(text)
    }

    /// `linear:N`, `exponential:F` or `none`. The numbers' own rules are checked by validate().
    public static func parseGrowth(_ text: String) -> GrowthStrategy? {
        if text == "none" { return GrowthStrategy.none }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        switch parts[0] {
        case "linear": return Int(parts[1]).map { .linear($0) }
        case "exponential": return Double(parts[1]).map { .exponential($0) }
        default: return nil
        }
    }
}
