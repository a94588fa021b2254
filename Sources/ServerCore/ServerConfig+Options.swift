import FastAlloc
import Logging
import Options
import PacketBuffers
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

// The server's options, each declared once: name, variable, field (whose initial value in
// ServerConfig is the default), parser, rule and help. The command line, the environment, the
// config file (whose keys are these names), validate(), --help, `check`, the documentation
// test and the fuzzer all read this table.

extension ServerConfig {
    /// Every option, in `--help` order.
    public static let table = OptionTable<ServerConfig>([
        .configFile("config", environment: variable("config"),
                    help: "A YAML file of options, read at start: its keys are these options' names (listen: 127.0.0.1:7000; "
                        + "upstream: a list), its values theirs. Flags win over variables, variables over the file, the file "
                        + "over the defaults. 'fastalloc-server check --config FILE' checks it without starting."),
        .choice("mode", environment: variable("mode"), \.mode,
                help: "echo or relay, usually given as the first argument; required, from the argument, this option, the "
                    + "variable or the config file.", defaultText: ""),
        .address("listen", \.listen, help: "Address to accept clients on, HOST:PORT (port 0: any free port)."),
        ConfigOption("upstream", environment: variable("upstream"), valueName: "HOST:PORT [weight=N] [backup] [proxy-protocol=v1|v2|off]",
               help: "Relay mode: an upstream, HOST:PORT ([IPv6]:PORT, or a name: every A and AAAA record it resolves to "
                   + "becomes a member), optionally with weight=N (1 to 256, default 1) and backup (used only when no other "
                   + "upstream is up) and proxy-protocol=v1|v2|off (its own --proxy-protocol-upstream). Give it once per "
                   + "upstream; the variable takes a comma-separated list, a config file a list of entries or of maps "
                   + "with address, weight, backup and proxy-protocol.",
               repeats: true,
               store: { config, text throws(OptionRuleError) in config.upstreams = text.isEmpty ? [] : try parseUpstreams(text) },
               render: { $0.upstreams.map(\.description).joined(separator: ",") },
               fileItem: upstreamFileItem),
        .choice("balance", environment: variable("balance"), \.balance,
                help: "How a new connection picks its upstream: random (the better of two random picks by active "
                    + "connections), roundrobin (exact rotation, by weight), leastconn (fewest active connections per "
                    + "weight) or hash (the client's address: a client keeps its upstream while the set is stable)."),
        .integer("connect-retries", environment: variable("connect-retries"), \.connectRetries, range: connectRetriesRange,
                 help: "Relay mode: after a refused or timed-out connect, try this many more upstreams, each a different "
                     + "one, 0 to 16; the client's bytes wait in its socket meanwhile."),
        .choice("proxy-protocol-upstream", environment: variable("proxy-protocol-upstream"), \.proxyProtocolUpstream,
                help: "Relay mode: a PROXY protocol header as the first bytes of every upstream connection, off, v1 (text) "
                    + "or v2 (binary), with the client's address and port and the address it connected to; an upstream "
                    + "entry's proxy-protocol=... wins. Active checks send a LOCAL (v2) or UNKNOWN (v1) header."),
        .flag("accept-proxy", environment: variable("accept-proxy"), \.acceptProxy,
              help: "Every client connection must start with a PROXY protocol header (v1 or v2, from a load balancer "
                  + "such as haproxy's send-proxy), whose client address is then the client's everywhere. Needs "
                  + "--trusted-proxies. A connection without a valid header is closed, counted and never forwarded."),
        ConfigOption("trusted-proxies", environment: variable("trusted-proxies"), valueName: "CIDR[,CIDR...]",
                     help: "With --accept-proxy: the addresses whose headers are believed, IPv4 or IPv6 ranges like "
                         + "10.0.0.0/8 or ::1 (a single address); a connection from any other address is closed and counted.",
                     store: storeTrustedProxies, render: renderTrustedProxies),
        .duration("proxy-protocol-timeout", environment: variable("proxy-protocol-timeout"), \.proxyProtocolTimeout,
                  rule: proxyProtocolTimeoutRule,
                  help: "With --accept-proxy: time a connection has to send its whole PROXY header, at most 1h."),
        .choice("health-check", environment: variable("health-check"), \.healthCheck,
                help: "Relay mode: active health checks, tcp (a connect to every upstream each --health-check-interval, "
                    + "from one checker thread) or off (only failed connects mark an upstream down)."),
        .duration("health-check-interval", environment: variable("health-check-interval"), \.healthCheckInterval,
                  rule: healthCheckIntervalRule, help: "Time between two checks of an upstream, 10ms to 1h."),
        .integer("rise", environment: variable("rise"), \.rise, range: riseFallRange,
                 help: "Consecutive passed checks that bring a down upstream back, 1 to 100."),
        .integer("fall", environment: variable("fall"), \.fall, range: riseFallRange,
                 help: "Consecutive failures (checks, or connects by clients) that mark an upstream down, 1 to 100."),
        .duration("resolve-interval", environment: variable("resolve-interval"), \.resolveInterval, rule: resolveIntervalRule,
                  help: "Time between two resolutions of the upstream names, off the data path (a failed lookup keeps "
                      + "the last good set), 0 (once, at start) or 1s to 7d."),
        .integer("workers", environment: variable("workers"), \.workers, range: workersRange,
                 help: "Worker threads, each with its own event loop and buffer pool, 1 to 256.",
                 defaultText: "the online cores (at most 256)"),
        .byteCount("buffer-size", environment: variable("buffer-size"), \.buffers.bufferSize, range: PacketBufferConfig.bufferSizeRange,
                   rule: bufferSizeRule,
                   help: "Bytes per packet buffer (one read), 64 to 1048576; suffixes K, KiB, M, MiB, G, GiB."),
        .integer("local-buffers", environment: variable("local-buffers"), \.buffers.localBuffers, range: localBuffersRange,
                 help: "Buffers each worker owns (taken without a lock), 1 to 1048576. All packet buffers together, "
                     + "(workers × this + --overflow-max) × --buffer-size, must fit the physical memory."),
        .integer("overflow-initial", environment: variable("overflow-initial"), \.buffers.overflowInitial, range: nil,
                 help: "Buffers the shared overflow pool starts with, 1 to --overflow-max."),
        ConfigOption("overflow-growth", environment: variable("overflow-growth"), valueName: "GROWTH",
               help: "How the overflow pool grows: linear:N (N up to 2147483647), exponential:F (F > 1) or none.",
               store: { config, text throws(OptionRuleError) in
                   guard let growth = parseGrowth(text) else {
                       throw OptionRuleError("linear:N (N > 0), exponential:F (F > 1) or none")
                   }
                   config.buffers.overflowGrowth = growth
               }, check: { config in
                   guard case .linear(let step) = config.buffers.overflowGrowth, step > maxLinearGrowth else { return nil }
                   return OptionViolation(value: "\(config.buffers.overflowGrowth)", rule: "a linear step from 1 to \(maxLinearGrowth)")
               }, render: { renderGrowth($0.buffers.overflowGrowth) }),
        .integer("overflow-max", environment: variable("overflow-max"), \.buffers.overflowMax, range: nil,
                 help: "Most buffers the overflow pool may hold, up to 2147483647; beyond, readers wait (backpressure)."),
        .integer("max-connections", environment: variable("max-connections"), \.maxConnections, range: maxConnectionsRange,
                 help: "Client connections open at once, 1 to 1000000; beyond, new ones are closed at once and counted. "
                     + "The default is what the default buffer pools serve fairly; more warns at start."),
        .integer("max-connections-per-client", environment: variable("max-connections-per-client"), \.maxConnectionsPerClient,
                 range: maxConnectionsPerClientRange,
                 help: "Connections open at once from one client IP address (any port), all workers together, 0 (no limit) "
                     + "to 1000000; beyond, new ones are closed at once, counted and logged."),
        .duration("idle-timeout", environment: variable("idle-timeout"), \.idleTimeout, rule: idleTimeoutRule,
                  help: "Close a connection that has neither sent nor taken a byte for this long, 0 (never) to 7d."),
        .duration("connect-timeout", environment: variable("connect-timeout"), \.connectTimeout, rule: connectTimeoutRule,
                  help: "Relay mode: time the upstream may take to accept, at most 1h."),
        .duration("drain-timeout", environment: variable("drain-timeout"), \.drainTimeout, rule: drainTimeoutRule,
                  help: "On SIGTERM/SIGINT, how long established connections may go on (both ways) before what is left is "
                      + "reset on both sides, 0 to 7d."),
        .duration("upgrade-timeout", environment: variable("upgrade-timeout"), \.upgradeTimeout, rule: upgradeTimeoutRule,
                  help: "On SIGUSR2 (a binary upgrade), how long the new process may take to start and say it is ready before "
                      + "it is killed and this one keeps serving, > 0 to 1h."),
        .duration("write-timeout", environment: variable("write-timeout"), \.writeTimeout, rule: writeTimeoutRule,
                  help: "Reset a connection whose queued writes make no progress for this long (a reader that stopped "
                      + "reading; counted), 0 (never) to 7d."),
        .duration("linger-timeout", environment: variable("linger-timeout"), \.lingerTimeout, rule: lingerTimeoutRule,
                  help: "After a failure, how long a connection may linger (flush, FIN, discard input until the peer "
                      + "closes) before it is closed, at most 7d."),
        .duration("tcp-keepalive", environment: variable("tcp-keepalive"), \.tcpKeepalive, rule: tcpKeepaliveRule,
                  help: "TCP keepalive on client and upstream sockets: seconds of silence before probes start (then every "
                      + "10 s, 6 probes), 0 (off) to 32767s (Linux's most). Upstream sockets skip it when --idle-timeout "
                      + "always ends a silent session first (60s against 60 + 6 x 10 s by default)."),
        .byteCount("high-watermark", environment: variable("high-watermark"), \.highWatermark, range: highWatermarkRange,
                   rule: "a byte count from 1 to 1GiB",
                   help: "Buffer memory a direction's write queue may hold before its source stops reading (counted in "
                       + "whole buffers), 1 byte to 1GiB."),
        .byteCount("low-watermark", environment: variable("low-watermark"), \.lowWatermark, range: nil,
                   help: "Reading resumes when the queue holds this much or less (below --high-watermark)."),
        .integer("backlog", environment: variable("backlog"), \.backlog, range: backlogRange,
                 help: "The listen backlog of each worker's listener, 1 to 65535 (the kernel caps it at net.core.somaxconn)."),
        ConfigOption("stats", environment: variable("stats"), valueName: "HOST:PORT|off",
               help: "Stats HTTP endpoint (/metrics, /stats, /healthz, /readyz, / dashboard), HOST:PORT or off.",
               store: { config, text throws(OptionRuleError) in
                   if text == "off" { config.stats = nil; return }
                   do throws(AddressError) { config.stats = try SocketAddress(parsing: text) } catch {
                       throw OptionRuleError("HOST:PORT with a numeric host (an IPv6 one in brackets), or off (\(error.reason))")
                   }
               }, render: { $0.stats?.description ?? "off" }),
        .choice("log-level", environment: variable("log-level"), \.logLevel,
                help: "How much to log: trace, debug, info, notice, warning, error or critical."),
        ConfigOption("access-log", environment: variable("access-log"), valueName: "PATH|stderr|off",
               help: "A line per connection when it ends (client, upstream, times, bytes each way, why it ended), written "
                   + "by a thread of its own: a file (appended to; SIGUSR1 reopens it, for logrotate), stderr, or off.",
               store: { config, text throws(OptionRuleError) in config.accessLog = try parseAccessLog(text) },
               check: { config in
                   guard case .file(let path) = config.accessLog, !directoryExists(of: path) else { return nil }
                   return OptionViolation(value: path, rule: "a file in a directory that exists, stderr or off")
               }, render: { $0.accessLog.description }),
        .choice("access-log-format", environment: variable("access-log-format"), \.accessLogFormat,
                help: "The access log's lines: text (key=value pairs) or json (an object per line)."),
        .flag("watch-config", environment: variable("watch-config"), \.watchConfig,
              help: "Reload when the --config file's content changes, as on SIGHUP: its directory is watched (inotify), so a file "
                  + "replaced by a rename and a Kubernetes ConfigMap's symlink swap are seen; changes within 100 ms are one reload."),
        .flag("allow-root", environment: variable("allow-root"), \.allowRoot,
              help: "Run even as root. Without it the server refuses to start as root: it needs no privilege (it binds "
                  + "ports above 1024 by default), so run it as its own user."),
    ], environmentPrefix: "FASTALLOC_")

    /// A comma-separated list of CIDR ranges (spaces around each allowed); `none` or nothing: none.
    static func storeTrustedProxies(_ config: inout ServerConfig, _ text: String) throws(OptionRuleError) {
        var ranges: [AddressRange] = []
        for part in text.isEmpty || text == "none" ? [] : text.split(separator: ",", omittingEmptySubsequences: false) {
            ranges.append(try AddressRange(parsing: String(part.filter { $0 != " " })))
        }
        config.trustedProxies = ranges
    }

    static func renderTrustedProxies(_ config: ServerConfig) -> String {
        config.trustedProxies.isEmpty ? "none" : config.trustedProxies.map(\.description).joined(separator: ",")
    }

    /// `off`, `stderr` or a path (not empty).
    static func parseAccessLog(_ text: String) throws(OptionRuleError) -> AccessLogTarget {
        switch text {
        case "off": return .off
        case "stderr": return .stderr
        case "": throw OptionRuleError("a file's path, stderr or off")
        default: return .file(text)
        }
    }

    /// Whether the directory `path` names its file in exists (the current one for a bare name).
    static func directoryExists(of path: String) -> Bool {
        let directory: String
        if let slash = path.lastIndex(of: "/") {
            directory = slash == path.startIndex ? "/" : String(path[..<slash])
        } else {
            directory = "."
        }
        var info = stat()
        return stat(directory, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    static let bufferSizeRule = "\(PacketBufferConfig.bufferSizeRange.lowerBound)...\(PacketBufferConfig.bufferSizeRange.upperBound) bytes"

    /// Every option, in `--help` order.
    public static var options: [ConfigOption<ServerConfig>] { table.options }

    /// `FASTALLOC_` and the name in capitals, dashes as underscores: `FASTALLOC_IDLE_TIMEOUT`.
    static func variable(_ name: String) -> String {
        "FASTALLOC_" + name.uppercased().replacing("-", with: "_")
    }

    /// One `upstream` of a config file as the entry text `ADDRESS [weight=N] [backup]`: the entry
    /// itself, or a map with `address` (required), `weight` and `backup` (true or false).
    static func upstreamFileItem(_ node: ConfigNode) throws(ConfigNodeError) -> String {
        let form = "HOST:PORT [weight=N] [backup] [proxy-protocol=v1|v2|off], or a map with address: HOST:PORT, optionally "
            + "weight: N, backup: true and proxy-protocol: v1|v2|off"
        guard case .mapping(let pairs) = node.content else {
            guard let text = node.scalar else { throw ConfigNodeError(line: node.line, value: node.shown, rule: form) }
            return text
        }
        var address: String?
        var weight: String?
        var backup = false
        var proxyProtocol: String?
        for pair in pairs {
            guard let text = pair.value.scalar else {
                throw ConfigNodeError(line: pair.value.line, value: "\(pair.key): \(pair.value.shown)", rule: "one value for \(pair.key)")
            }
            switch pair.key {
            case "address":
                guard !text.isEmpty, !text.contains(" "), !text.contains(",") else {
                    throw ConfigNodeError(line: pair.line, value: "address: '\(text)'", rule: "HOST:PORT alone (weight and backup are keys of their own)")
                }
                address = text
            case "weight":
                guard let number = Int(text), UpstreamSpec.weightRange.contains(number) else {
                    throw ConfigNodeError(line: pair.line, value: "weight: '\(text)'", rule: "a whole number from 1 to 256")
                }
                weight = "\(number)"
            case "backup":
                switch text.lowercased() {
                case "true", "yes", "1": backup = true
                case "false", "no", "0": backup = false
                default: throw ConfigNodeError(line: pair.line, value: "backup: '\(text)'", rule: "true or false")
                }
            case "proxy-protocol":
                guard ProxyProtocolSetting(rawValue: text) != nil else {
                    throw ConfigNodeError(line: pair.line, value: "proxy-protocol: '\(text)'", rule: "v1, v2 or off")
                }
                proxyProtocol = text
            default:
                throw ConfigNodeError(line: pair.line,
                                      value: "'\(pair.key)'\(didYouMean(pair.key, among: ["address", "weight", "backup", "proxy-protocol"]))",
                                      rule: "address, weight, backup or proxy-protocol")
            }
        }
        guard let address else {
            throw ConfigNodeError(line: node.line, value: "a map without address",
                                  rule: "address: HOST:PORT, optionally weight: N, backup: true and proxy-protocol: v1|v2|off")
        }
        return address + (weight.map { " weight=\($0)" } ?? "") + (backup ? " backup" : "")
            + (proxyProtocol.map { " proxy-protocol=\($0)" } ?? "")
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

    /// A growth strategy as `parseGrowth` reads it back.
    static func renderGrowth(_ growth: GrowthStrategy) -> String {
        switch growth {
        case .none: "none"
        case .linear(let step): "linear:\(step)"
        case .exponential(let factor): factor.rounded() == factor && abs(factor) < 1e15 ? "exponential:\(Int(factor))" : "exponential:\(factor)"
        }
    }
}

extension ConfigOption where Config == ServerConfig {
    /// A numeric `HOST:PORT`: `127.0.0.1:7000`, `[::1]:7000`, `[::]:7000`.
    static func address(_ name: String, _ keyPath: WritableKeyPath<ServerConfig, SocketAddress> & Sendable, help: String) -> ConfigOption {
        ConfigOption(name, environment: ServerConfig.variable(name), valueName: "HOST:PORT", help: help, store: { config, text throws(OptionRuleError) in
            do throws(AddressError) { config[keyPath: keyPath] = try SocketAddress(parsing: text) } catch {
                throw OptionRuleError("HOST:PORT with a numeric host, like 127.0.0.1:7000 or [::1]:7000 (\(error.reason))")
            }
        }, render: { $0[keyPath: keyPath].description })
    }
}
