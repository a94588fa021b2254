import FastAlloc
import PacketBuffers
import Logging
import Options
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What the server does with a connection's bytes.
public enum ServerMode: String, Sendable, CaseIterable {
    /// Every byte goes back to the connection it came from.
    case echo
    /// Every client connection gets its own connection to one of the upstreams; bytes flow both ways.
    case relay
}

/// Everything the server needs, validated in one place. Errors name the command-line option,
/// the value and the rule (`--workers: 0 (expected: 1...256)`).
public struct ServerConfig: Sendable {
    public var mode: ServerMode
    /// Where clients connect. 127.0.0.1 by default: exposing the server is a decision.
    public var listen: SocketAddress = SocketAddress(host: "127.0.0.1", port: 7000)
    /// The relay's upstreams (each entry a name or an address, with its weight and role);
    /// never chosen by a client (no open proxy). Relay mode only. `upstream` is the first.
    public var upstreams: [UpstreamSpec] = []
    /// How the relay picks an upstream for a new connection.
    public var balance: BalanceMethod = .random
    /// Active health checks: a TCP connect to every upstream each `healthCheckInterval`, from
    /// one checker thread (off the data path).
    public var healthCheck: HealthCheckMode = .tcp
    public var healthCheckInterval: Double = 2
    /// Consecutive successful checks that bring a down upstream back (haproxy's default, 2).
    public var rise = 2
    /// Consecutive failures (checks, or connects by clients) that mark an upstream down
    /// (haproxy's default, 3).
    public var fall = 3
    /// Further upstreams a client's connect may try, each a different one, after a refused or
    /// timed-out connect.
    public var connectRetries = 2
    /// The PROXY protocol header sent to every upstream that does not set its own
    /// (`proxy-protocol=` on its entry): the client's address and the one it connected to.
    public var proxyProtocolUpstream: ProxyProtocolSetting = .off
    /// Every client connection must start with a PROXY header (v1 or v2), whose address is then
    /// the client's everywhere (access log, per-client limit, hash, the upstream's header).
    /// Needs `trustedProxies`: a connection from any other address is closed and counted.
    public var acceptProxy = false
    /// The addresses whose PROXY headers are believed (`--trusted-proxies`).
    public var trustedProxies: [AddressRange] = []
    /// Seconds a connection has to send its whole PROXY header.
    public var proxyProtocolTimeout: Double = 3
    /// Seconds between re-resolutions of the upstream names (0: resolved once, at start).
    public var resolveInterval: Double = 30
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
    /// How long an upgrade's new process may take to say it is ready (seconds).
    public var upgradeTimeout: Double = 30
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
    /// The listen backlog of each worker's listener (the kernel caps it at net.core.somaxconn).
    public var backlog: Int = 1024
    /// How much the server logs: trace, debug, info, notice, warning, error or critical.
    public var logLevel: Logger.Level = .info
    /// Reload when the config file's content changes (its directory watched), as on SIGHUP.
    public var watchConfig = false
    /// Run even as root (the server refuses to otherwise: it needs no privilege).
    public var allowRoot = false
    /// A line per connection when it ends (docs/OPERATIONS.md#access-log): off, stderr or a file.
    public var accessLog = AccessLogTarget.off
    public var accessLogFormat = AccessLogFormat.text
    /// Connections open at once from one client IP address, all workers together (0: no limit).
    public var maxConnectionsPerClient = 0
    /// Where the stats HTTP endpoint listens (`--stats off`: nil, no endpoint). 127.0.0.1:9464 by
    /// default: loopback, and not 9090, which a local Prometheus takes.
    public var stats: SocketAddress? = SocketAddress(host: "127.0.0.1", port: 9464)

    public init(mode: ServerMode) {
        self.mode = mode
    }

    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// The default worker count: one per online core, at most 256 (`defaultWorkers(onlineCores:)`).
    public static var defaultWorkers: Int { defaultWorkers(onlineCores: onlineCores) }

    /// Builds a configuration from option values with the mode given: each from `values` (the
    /// command line) or, when absent there, from its environment variable, or else its
    /// default. Errors name the option (and the variable when the value came from there), the
    /// value and the rule.
    public init(mode: ServerMode, values: [String: String], environment: [String: String]) throws(ConfigError) {
        var values = values
        values["mode"] = mode.rawValue
        try self.init(values: values, environment: environment)
    }

    /// Builds a configuration from option values: each from `values` (the command line), or
    /// else its environment variable, or else the config file's `file` (`ConfigYAML`), or else
    /// its default. The mode is one of them, and has no default. Errors name the option and
    /// where its value came from (the variable; the file and the line), the value and the rule.
    public init(values: [String: String], environment: [String: String], file: ConfigFileValues? = nil) throws(ConfigError) {
        self.init(mode: .echo)
        let origins = try ServerConfig.table.apply(values: values, environment: environment, file: file, to: &self)
        guard origins.isGiven("mode") else {
            throw ConfigError(field: "--mode", value: "(none)",
                              expected: "echo or relay, as the first argument, --mode, FASTALLOC_MODE or the config file's mode")
        }
        do { try validate() } catch { throw origins.renaming(error) }
    }

    /// Checks every rule, each option's own (the table's) and those between options; the error
    /// names the first option that breaks one.
    public func validate() throws(ConfigError) {
        func fail(_ option: String, _ value: Any, _ rule: String) -> ConfigError {
            ConfigError(field: option, value: "\(value)", expected: rule)
        }
        if let violation = upstreamViolation() { throw fail("--upstream", violation.value, violation.rule) }
        if acceptProxy && trustedProxies.isEmpty {
            throw fail("--trusted-proxies", "(none)", "the load balancers' addresses (CIDR ranges) whose PROXY headers are "
                + "believed, required with --accept-proxy: a header from anyone else could forge any client address")
        }
        try ServerConfig.table.validate(self)
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
                + "at most the physical memory, \(formatBytes(ServerConfig.bufferMemoryCeiling)); "
                + "this configuration asks for \(formatBytes(memory))")
        }
        if lowWatermark < 0 || lowWatermark >= highWatermark {
            throw fail("--low-watermark", lowWatermark, "0...--high-watermark - 1 (\(highWatermark - 1))")
        }
        if let stats, stats == listen, stats.port != 0 {
            throw fail("--stats", stats, "an address other than --listen's")
        }
    }
}
