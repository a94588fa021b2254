import Synchronization
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
    /// Options a restart (or an upgrade) changes, never a reload: the listening sockets, the
    /// threads, the memory set aside at start.
    public let needRestart: [String]
    /// Options this version does not change while running yet.
    public let notReloadable: [String]

    public var description: String {
        var parts: [String] = []
        if !needRestart.isEmpty {
            parts.append("\(Self.list(needRestart)) cannot change while running (a restart applies "
                         + (needRestart.count == 1 ? "it" : "them") + ")")
        }
        if !notReloadable.isEmpty {
            parts.append("\(Self.list(notReloadable)) cannot change by a reload in this version "
                         + "(a reload applies \(Self.list(Server.reloadableOptions.sorted())); a restart applies the rest)")
        }
        return "reload refused, nothing changed: " + parts.joined(separator: "; ")
    }

    public static func list(_ names: [String]) -> String { names.map { "--" + $0 }.joined(separator: ", ") }
}

/// The reload counters and the current configuration, shared by every thread.
final class ReloadState: Sendable {
    let current: Mutex<ServerConfig>
    let reloads = Atomic<UInt64>(0)
    let failures = Atomic<UInt64>(0)
    /// 1 at start; one more for each reload that changed something.
    let generation = Atomic<UInt64>(1)
    /// When the configuration in effect was loaded (the start, or the last successful reload),
    /// milliseconds since the Unix epoch.
    let loadedAt = Atomic<Int64>(0)

    init(_ config: ServerConfig) {
        current = Mutex(config)
        loadedAt.store(Worker.wallClockMilliseconds(), ordering: .relaxed)
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
    /// What a reload applies now, to new connections (established ones keep what they have).
    public static let reloadableOptions: Set<String> = ["upstream"]
    /// What only a restart can change: the listening sockets, the threads, the memory set aside
    /// at start (and the mode, the stats address, the root check).
    public static let restartOptions: Set<String> = [
        "mode", "listen", "workers", "backlog", "buffer-size", "local-buffers", "overflow-initial", "overflow-growth",
        "overflow-max", "max-connections", "stats", "allow-root",
    ]

    /// The configuration in effect: the start's, then each applied reload's.
    public var currentConfig: ServerConfig { reloadState.current.withLock { $0 } }

    /// Applies `new`, a complete and valid configuration (read again from the config file, the
    /// variables and the flags), to new connections; any thread. Refused as a whole, and
    /// counted, when it changes an option a reload cannot change: nothing is applied then.
    @discardableResult
    public func reload(_ new: ServerConfig) throws(ReloadError) -> ReloadOutcome {
        try reloadState.current.withLock { (current) throws(ReloadError) -> ReloadOutcome in
            let changed = Server.changedOptions(from: current, to: new)
            let fixed = changed.filter { !Server.reloadableOptions.contains($0) }
            guard fixed.isEmpty else {
                reloadState.failures.add(1, ordering: .relaxed)
                throw ReloadError(needRestart: fixed.filter { Server.restartOptions.contains($0) },
                                  notReloadable: fixed.filter { !Server.restartOptions.contains($0) })
            }
            reloadState.reloads.add(1, ordering: .relaxed)
            reloadState.loadedAt.store(Worker.wallClockMilliseconds(), ordering: .relaxed)
            guard !changed.isEmpty else { return .unchanged }
            if changed.contains("upstream") { shared.upstreams?.reload(new.upstreams) }
            current = new
            reloadState.generation.add(1, ordering: .relaxed)
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
        result.generation = reloadState.generation.load(ordering: .relaxed)
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
