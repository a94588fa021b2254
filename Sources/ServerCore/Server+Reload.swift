import Logging
import FastAlloc
import Synchronization
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a reload (SIGHUP) did.
public enum ReloadOutcome: Sendable, Equatable {
    /// These options (names without dashes) changed and now apply to new connections.
    case applied([String])
    /// The configuration read is the one running.
    case unchanged
}

/// Why a reload was refused: the running configuration stays as it was.
public struct ReloadError: Error, Sendable, CustomStringConvertible {
    /// Options an upgrade (SIGUSR2) or a restart changes, never a reload: the listening sockets,
    /// the threads, the memory set aside at start.
    public let needRestart: [String]
    /// Options this version does not change while running (none today: an option added later
    /// without a decision lands here, refused rather than applied to some connections only).
    public let notReloadable: [String]
    /// The new configuration breaks a rule (`validate()`), or a part of it could not be put in
    /// place (an access log file that cannot be opened).
    public let invalid: ConfigError?

    init(needRestart: [String] = [], notReloadable: [String] = [], invalid: ConfigError? = nil) {
        self.needRestart = needRestart
        self.notReloadable = notReloadable
        self.invalid = invalid
    }

    public var description: String {
        var parts: [String] = []
        if let invalid { parts.append("\(invalid)") }
        if !needRestart.isEmpty {
            parts.append("\(Self.list(needRestart)) cannot change while running (an upgrade (SIGUSR2) or a restart applies "
                         + (needRestart.count == 1 ? "it" : "them") + ")")
        }
        if !notReloadable.isEmpty {
            parts.append("\(Self.list(notReloadable)) cannot change by a reload in this version "
                         + "(a reload applies \(Self.list(Server.reloadableOptions.sorted())); an upgrade or a restart applies the rest)")
        }
        return "reload refused, nothing changed: " + parts.joined(separator: "; ")
    }

    public static func list(_ names: [String]) -> String { names.map { "--" + $0 }.joined(separator: ", ") }
}

/// The reload counters and the current configuration, shared by every thread. `current`'s
/// lock also orders reloads (one at a time) and the end (`Server.wait`).
final class ReloadState: Sendable {
    let current: Mutex<ServerConfig>
    let reloads = Atomic<UInt64>(0)
    let failures = Atomic<UInt64>(0)
    /// When the configuration in effect was loaded (the start, or the last successful reload),
    /// milliseconds since the Unix epoch.
    let loadedAt = Atomic<Int64>(0)

    init(_ config: ServerConfig) {
        current = Mutex(config)
        loadedAt.store(Worker.wallClockMilliseconds(), ordering: .relaxed)
    }
}

/// The upstream monitor in effect, and whether the server has ended (no reload starts one then).
struct MonitorSlot {
    var monitor: UpstreamMonitor?
    var retired = false

    /// The server ends: hands the monitor over to be stopped; none is started again.
    mutating func retire() -> UpstreamMonitor? {
        retired = true
        defer { monitor = nil }
        return monitor
    }
}

/// The reload counters, for /metrics and /stats.
public struct ReloadStatistics: Sendable, Hashable, Codable {
    public var reloads: UInt64 = 0
    public var failures: UInt64 = 0
    public var generation: UInt64 = 1
    /// Seconds since the Unix epoch.
    public var loadedAt: Double = 0
    public init() {}
}

extension Server {
    /// What a reload applies, to new connections (established ones keep what they started
    /// with): the upstream set, balancing, health settings, limits, timeouts, the log level, the
    /// access log (reopened) and the PROXY protocol settings.
    public static let reloadableOptions: Set<String> = [
        "upstream", "balance", "connect-retries",
        "health-check", "health-check-interval", "rise", "fall", "resolve-interval",
        "idle-timeout", "connect-timeout", "write-timeout", "linger-timeout", "drain-timeout", "upgrade-timeout",
        "max-connections-per-client",
        "log-level", "access-log", "access-log-format",
        "proxy-protocol-upstream", "accept-proxy", "trusted-proxies", "proxy-protocol-timeout",
    ]
    /// What only an upgrade (SIGUSR2) or a restart can change: the listening sockets and their
    /// options (`tcp-keepalive` is set on the listener, which accepted sockets inherit), the
    /// threads, the memory set aside at start and the bounds computed from it (the watermarks
    /// are counted in buffers and shape every worker's queue shares), the mode, the stats
    /// address, the root check.
    public static let restartOptions: Set<String> = [
        "mode", "listen", "workers", "backlog", "buffer-size", "local-buffers", "overflow-initial", "overflow-growth",
        "overflow-max", "max-connections", "stats", "allow-root", "tcp-keepalive", "high-watermark", "low-watermark", "watch-config",
    ]

    /// The configuration in effect: the start's, then each applied reload's.
    public var currentConfig: ServerConfig { reloadState.current.withLock { $0 } }

    /// Applies `new`, a complete configuration (read again from the config file, the variables
    /// and the flags), to new connections; any thread. Refused as a whole, and counted, when it
    /// breaks a rule, changes an option a reload cannot change, or names an access log file that
    /// cannot be opened: nothing is applied then. `log-level` is reported among the options
    /// applied; the caller's log handler takes it (the server does not own the handler).
    @discardableResult
    public func reload(_ new: ServerConfig) throws(ReloadError) -> ReloadOutcome {
        try reloadState.current.withLock { (current) throws(ReloadError) -> ReloadOutcome in
            func refuse(_ error: ReloadError) -> ReloadError {
                reloadState.failures.add(1, ordering: .relaxed)
                return error
            }
            // After wait(): the access log and the monitor have ended; nothing would apply.
            guard !monitor.withLock({ $0.retired }) else {
                throw refuse(ReloadError(invalid: ConfigError(field: "reload", value: "(the server has ended)",
                                                              expected: "a server still running")))
            }
            do throws(ConfigError) { try new.validate() } catch { throw refuse(ReloadError(invalid: error)) }
            let changed = Server.changedOptions(from: current, to: new)
            let fixed = changed.filter { !Server.reloadableOptions.contains($0) }
            guard fixed.isEmpty else {
                throw refuse(ReloadError(needRestart: fixed.filter { Server.restartOptions.contains($0) },
                                         notReloadable: fixed.filter { !Server.restartOptions.contains($0) }))
            }
            guard !changed.isEmpty else {
                reloadState.reloads.add(1, ordering: .relaxed)
                reloadState.loadedAt.store(Worker.wallClockMilliseconds(), ordering: .relaxed)
                return .unchanged
            }
            let settings = shared.currentSettings
            // What may fail comes first, and is undone if a later step fails: the new access log
            // file, then the new monitor.
            var accessLog = settings.accessLog
            var createdLog: AccessLog?
            if new.accessLog != current.accessLog || new.accessLogFormat != current.accessLogFormat, accessLog == nil {
                do throws(ConfigError) {
                    createdLog = try AccessLog(target: new.accessLog, format: new.accessLogFormat, workers: config.workers,
                                               logger: logger)
                } catch { throw refuse(ReloadError(invalid: error)) }
            }
            var replacedMonitor: UpstreamMonitor??
            if let pool = shared.upstreams {
                let plan = UpstreamMonitor.Plan(new)
                let result = monitor.withLock { slot -> Result<UpstreamMonitor??, UVError> in
                    let same = slot.monitor.map { $0.plan == plan } ?? plan.isIdle
                    guard !slot.retired, !same else { return .success(nil) }
                    do throws(UVError) {
                        let next = try UpstreamMonitor.start(pool: pool, config: new, logger: logger)
                        let old = slot.monitor
                        slot.monitor = next
                        return .success(.some(old))
                    } catch { return .failure(error) }
                }
                switch result {
                case .success(let old): replacedMonitor = old
                case .failure(let error):
                    createdLog?.finish()
                    throw refuse(ReloadError(invalid: ConfigError(field: "--health-check", value: new.healthCheck.rawValue,
                                                                  expected: "a monitor thread that starts (\(error))")))
                }
            }
            if let createdLog {
                createdLog.start()
                accessLog = createdLog
            } else if let accessLog, new.accessLog != current.accessLog || new.accessLogFormat != current.accessLogFormat {
                do throws(ConfigError) {
                    try accessLog.switchTo(new.accessLog, format: new.accessLogFormat)
                } catch {
                    // Undo the monitor swap: the old one goes on.
                    if case .some(let old) = replacedMonitor {
                        let started = monitor.withLock { slot in
                            defer { slot.monitor = old }
                            return slot.monitor
                        }
                        started?.stop()
                    }
                    throw refuse(ReloadError(invalid: error))
                }
            }
            // Nothing fails from here on.
            if case .some(let old) = replacedMonitor { old?.stop() }
            reloadState.reloads.add(1, ordering: .relaxed)
            reloadState.loadedAt.store(Worker.wallClockMilliseconds(), ordering: .relaxed)
            shared.upstreams?.reload(new.upstreams, config: new)
            var clientLimits = settings.clientLimits
            if clientLimits == nil && new.maxConnectionsPerClient > 0 {
                clientLimits = ClientLimits(limit: new.maxConnectionsPerClient, connections: connectionLimit)
            }
            shared.publish(ServerSettings(generation: settings.generation + 1, config: new, accessLog: accessLog,
                                          clientLimits: clientLimits))
            current = new
            return .applied(changed)
        }
    }

    /// A reload that could not even be read (a bad file, a bad value): counted; nothing changes.
    public func countFailedReload() {
        reloadState.failures.add(1, ordering: .relaxed)
    }

    var reloadStatistics: ReloadStatistics {
        var result = ReloadStatistics()
        result.reloads = reloadState.reloads.load(ordering: .relaxed)
        result.failures = reloadState.failures.load(ordering: .relaxed)
        result.generation = shared.settingsGeneration.load(ordering: .relaxed)
        result.loadedAt = Double(reloadState.loadedAt.load(ordering: .relaxed)) / 1000
        return result
    }
    /// The same entries resolved to the same addresses, in any order (a resolver that rotates its
    /// answers changes nothing).
    static func sameUpstreams(_ old: [UpstreamSpec], _ new: [UpstreamSpec]) -> Bool {
        old.count == new.count && zip(old, new).allSatisfy { a, b in
            a.address == b.address && a.weight == b.weight && a.backup == b.backup && a.proxyProtocol == b.proxyProtocol
                && Set(a.resolved) == Set(b.resolved)
        }
    }

    /// The options (names without dashes) whose values differ, as the options table renders
    /// them; `upstream` also when a name now resolves to other addresses.
    static func changedOptions(from old: ServerConfig, to new: ServerConfig) -> [String] {
        func values(_ config: ServerConfig) -> [String: String] {
            var result: [String: String] = [:]
            for line in ServerConfig.table.render(config).split(separator: "\n") {
                let parts = line.split(separator: " = ", maxSplits: 1, omittingEmptySubsequences: false)
                if parts.count == 2 { result[String(parts[0])] = String(parts[1]) }
            }
            return result
        }
        let before = values(old)
        let after = values(new)
        var changed = Set(before.keys.filter { before[$0] != after[$0] } + after.keys.filter { before[$0] == nil })
        changed.remove("config")  // the file's path: what it says is compared
        if !sameUpstreams(old.upstreams, new.upstreams) { changed.insert("upstream") }
        return changed.sorted()
    }
}
