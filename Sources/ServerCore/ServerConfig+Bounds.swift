import Options
#if canImport(Glibc)
import Glibc
#endif

// The ceiling of every duration, size and count the server takes, and why each is where it is.
// validate() enforces them with a named rule; the conversions (ServerConfig+Conversions.swift)
// do not rely on them for safety: they clamp whatever they are given.

extension ServerConfig {
    /// Worker threads. Beyond 256 a listener per worker (SO_REUSEPORT) only spreads the same
    /// connections thinner; the default (one per online core) is clamped to this range.
    public static let workersRange = 1...256

    /// The default worker count for a machine with `onlineCores` cores: one per core, clamped
    /// to `workersRange` (a 512-core machine gets 256 workers, not a default its own
    /// validation refuses).
    public static func defaultWorkers(onlineCores: Int) -> Int {
        min(max(onlineCores, workersRange.lowerBound), workersRange.upperBound)
    }

    /// The idle, write, drain and linger timeouts: at most 7 days. A connection silent for a
    /// week is not waiting for a timeout (TCP keepalive finds vanished peers), and a drain or a
    /// linger of a week outlasts any supervisor's stop timeout. 7 d is 604,800,000 ms: well
    /// inside haproxy's 24.8 days (its int32 millisecond ticks), so a proxy in front can be
    /// given the same value, and far from any integer limit in the conversions.
    public static let maxTimeout: Double = 7 * 86_400

    /// The relay's connect timeout: at most 1 hour. Linux gives up an unanswered connect after
    /// about 2 minutes (tcp_syn_retries 6: 127 s); an hour leaves room for tuned kernels.
    public static let maxConnectTimeout: Double = 3_600

    /// TCP keepalive's idle time: at most 32,767 s (9 h 6 m 7 s), Linux's MAX_TCP_KEEPIDLE.
    /// libuv hands it to setsockopt(TCP_KEEPIDLE), which refuses more with EINVAL.
    public static let maxTCPKeepalive: Double = 32_767

    /// Buffers each worker owns: at most 2^20. The local pool is allocated in full at start;
    /// the memory ceiling below bounds the product with the buffer size.
    public static let localBuffersRange = 1...(1 << 20)

    /// The overflow pool's most buffers: the pool's own limit (a slot count fits an Int32).
    public static let maxOverflowBuffers = Int(Int32.max)

    /// A linear overflow step: at most the overflow pool's most buffers (a larger step only
    /// reaches the maximum in one go).
    public static let maxLinearGrowth = Int(Int32.max)

    /// The high watermark: at most 1 GiB queued per direction of one connection. More defeats
    /// backpressure (one slow reader could hold the whole pool) and no socket buffer needs it.
    public static let highWatermarkRange = 1...(1 << 30)

    /// Connections open at once, all workers together.
    public static let maxConnectionsRange = 1...1_000_000
    /// `--max-connections-per-client`: 0 (off) up to `--max-connections`' own ceiling.
    public static let maxConnectionsPerClientRange = 0...1_000_000

    /// The listen backlog (the kernel caps it again at net.core.somaxconn).
    public static let backlogRange = 1...65_535

    /// The most packet-buffer memory a configuration may ask for: the machine's physical memory
    /// (sysconf(_SC_PHYS_PAGES) × page size), read once. Local pools are allocated in full at
    /// start and the overflow pool grows to its maximum under load; an allocation the kernel
    /// refuses (beyond RAM + swap under the default overcommit heuristic) traps, so a fixed
    /// ceiling would accept on a small machine what crashes there. It does not see a cgroup's
    /// memory limit (a container's); a deployment sets the pools under that itself.
    /// 64 GiB when the system does not say.
    public static let bufferMemoryCeiling: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES))
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return 64 << 30 }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        return overflow ? Int.max : bytes
    }()

    /// The packet-buffer memory this configuration may come to hold: (workers × local buffers +
    /// the overflow maximum) × the buffer size, in bytes; saturates at Int.max (never traps).
    public var bufferMemory: Int {
        let (local, o1) = workers.multipliedReportingOverflow(by: buffers.localBuffers)
        let (count, o2) = local.addingReportingOverflow(buffers.overflowMax)
        let (bytes, o3) = count.multipliedReportingOverflow(by: buffers.bufferSize)
        return o1 || o2 || o3 || workers < 0 || buffers.localBuffers < 0 || buffers.overflowMax < 0 || buffers.bufferSize < 0
            ? Int.max : bytes
    }

    /// The rules of the duration options (their ranges above).
    static let idleTimeoutRule = DurationRule(zeroAllowed: true, maximum: maxTimeout, text: "a time from 0 to 7d (0: none), like 60s")
    static let connectTimeoutRule = DurationRule(zeroAllowed: false, maximum: maxConnectTimeout, text: "a time > 0, at most 1h, like 5s")
    static let drainTimeoutRule = DurationRule(zeroAllowed: true, maximum: maxTimeout, text: "a time from 0 to 7d (0: close at once), like 10s")
    static let upgradeTimeoutRule = DurationRule(zeroAllowed: false, maximum: maxConnectTimeout, text: "a time > 0, at most 1h, like 30s")
    static let writeTimeoutRule = DurationRule(zeroAllowed: true, maximum: maxTimeout, text: "a time from 0 to 7d (0: none), like 30s")
    static let proxyProtocolTimeoutRule = DurationRule(zeroAllowed: false, maximum: maxConnectTimeout,
                                                       text: "a time > 0, at most 1h, like 3s")
    static let lingerTimeoutRule = DurationRule(zeroAllowed: false, maximum: maxTimeout, text: "a time > 0, at most 7d, like 5s")
    static let tcpKeepaliveRule = DurationRule(zeroAllowed: true, maximum: maxTCPKeepalive,
                                               text: "a time from 0 to 32767s (0: off; Linux's most), like 60s")

    /// Retries of an upstream connect: at most 16 (each is a connect timeout long at worst).
    public static let connectRetriesRange = 0...16
    /// Health checks: rise and fall from 1 to 100 checks.
    public static let riseFallRange = 1...100
    static let healthCheckIntervalRule = DurationRule(zeroAllowed: false, maximum: 3_600, text: "a time from 10ms to 1h, like 2s",
                                                      minimum: 0.01)
    static let resolveIntervalRule = DurationRule(zeroAllowed: true, maximum: maxTimeout, text: "0 (once) or a time from 1s to 7d, like 30s",
                                                  minimum: 1)
}

/// How the relay picks an upstream for a new connection.
public enum BalanceMethod: String, Sendable, CaseIterable {
    /// Power of two choices: two members at random (by weight), the one with fewer active
    /// connections per weight (nginx's `random two least_conn`, haproxy's default `random`).
    case random
    /// Exact rotation, each member as often as its weight.
    case roundrobin
    /// The fewest active connections per weight; ties go round.
    case leastconn
    /// Rendezvous hashing of the client's IP address: sticky while the set is stable, and only
    /// the clients of a member that leaves (about 1/N) move.
    case hash
}

/// The PROXY protocol header the relay writes as the first bytes of an upstream connection
/// (haproxy's doc/proxy-protocol.txt): none, the text form (v1) or the binary one (v2).
public enum ProxyProtocolSetting: String, Sendable, CaseIterable {
    case off, v1, v2
}

/// Active health checks.
public enum HealthCheckMode: String, Sendable, CaseIterable {
    case tcp, off
}
