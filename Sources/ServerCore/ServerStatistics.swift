import PacketBuffers

/// A worker's connection and byte counters at one moment.
public struct WorkerStatistics: Sendable, Hashable, Codable {
    public var worker: Int
    public var connectionsActive: Int
    public var connectionsAccepted: UInt64
    public var connectionsClosed: UInt64
    /// Bytes read from any socket (clients and, in relay mode, the upstream).
    public var bytesReceived: UInt64
    /// Bytes written to any socket.
    public var bytesSent: UInt64
    public var backpressurePauses: UInt64
    public var bufferWaits: UInt64
    public var upstreamConnectFailures: UInt64
    /// Client connections closed because no upstream could be connected (every try failed).
    public var upstreamUnavailable: UInt64
    public var upstreamResets: UInt64
    public var clientResets: UInt64
    public var idleTimeouts: UInt64
    public var acceptErrors: AcceptErrorStatistics
    public var writeTimeouts: UInt64
    public var lingerTimeouts: UInt64
    public var stalledEvictions: UInt64
    public var drainCompleted: UInt64
    public var drainCut: UInt64
    /// Access log records dropped because the worker's ring was full (never a wait).
    public var accessLogDropped: UInt64
    /// Connections closed at accept by --max-connections-per-client.
    public var clientLimitRejections: UInt64
    /// Connections admitted untracked: the per-client table had no room for their address.
    public var clientLimitTableFull: UInt64
    /// PROXY protocol headers written to upstreams, and read from clients (`--accept-proxy`).
    public var proxyHeadersSent: UInt64 = 0
    public var proxyHeadersReceived: UInt64 = 0
    /// Client connections closed because of their PROXY header (or its absence), by reason.
    public var proxyProtocolErrors = ProxyProtocolErrorStatistics()
}

/// Why a client connection was closed before its PROXY header was accepted (`--accept-proxy`).
/// Nothing of such a connection is forwarded.
public enum ProxyProtocolFailure: String, Sendable, CaseIterable {
    /// No complete header within --proxy-protocol-timeout.
    case timeout
    /// The client closed (or reset) the connection before its header was complete.
    case closed
    /// The connection came from an address outside --trusted-proxies.
    case untrusted
    /// The first bytes start neither a v1 nor a v2 header.
    case notAHeader = "not_a_header"
    /// A malformed header: a signature that goes wrong, a v2 version, command or family it does
    /// not define (or a transport other than TCP), a length too short for its addresses or a v1
    /// line longer than 107 bytes, a malformed v1 line.
    case signature, version, command, family, length, text
}

/// `ProxyProtocolFailure` counts.
public struct ProxyProtocolErrorStatistics: Sendable, Hashable, Codable {
    public var timeout: UInt64 = 0
    public var closed: UInt64 = 0
    public var untrusted: UInt64 = 0
    public var notAHeader: UInt64 = 0
    public var signature: UInt64 = 0
    public var version: UInt64 = 0
    public var command: UInt64 = 0
    public var family: UInt64 = 0
    public var length: UInt64 = 0
    public var text: UInt64 = 0

    public init() {}

    public subscript(reason: ProxyProtocolFailure) -> UInt64 {
        get {
            switch reason {
            case .timeout: timeout
            case .closed: closed
            case .untrusted: untrusted
            case .notAHeader: notAHeader
            case .signature: signature
            case .version: version
            case .command: command
            case .family: family
            case .length: length
            case .text: text
            }
        }
        set {
            switch reason {
            case .timeout: timeout = newValue
            case .closed: closed = newValue
            case .untrusted: untrusted = newValue
            case .notAHeader: notAHeader = newValue
            case .signature: signature = newValue
            case .version: version = newValue
            case .command: command = newValue
            case .family: family = newValue
            case .length: length = newValue
            case .text: text = newValue
            }
        }
    }

    public var total: UInt64 { ProxyProtocolFailure.allCases.reduce(0) { $0 + self[$1] } }
}

/// accept() failures by reason (the listener keeps listening after each).
public struct AcceptErrorStatistics: Sendable, Hashable, Codable {
    /// EMFILE: the process is at its file descriptor limit.
    public var processFileLimit: UInt64
    /// ENFILE: the system is at its file limit.
    public var systemFileLimit: UInt64
    /// ENOMEM, ENOBUFS.
    public var memory: UInt64
    /// Anything else (ECONNABORTED, EPERM, ...).
    public var other: UInt64

    public var total: UInt64 { processFileLimit + systemFileLimit + memory + other }
}

/// The whole server at one moment: workers, connection limits, and the packet-buffer pools.
public struct ServerStatistics: Sendable {
    public var workers: [WorkerStatistics]
    public var connectionsRejected: UInt64
    public var buffers: PacketBufferStatistics
    /// What `drain()` or `stop()` asked for (the workers act on it at once). `/readyz` answers
    /// 503, and the `draining` metric and JSON key read 1 (true), in every phase but `.serving`.
    public var shutdownPhase: ShutdownPhase
    /// The relay's upstreams, in configuration order (empty in echo mode).
    public var upstreams: [UpstreamStatistics] = []
    /// Lookups of upstream names that failed (each kept its last good addresses).
    public var upstreamResolveFailures: UInt64 = 0
    /// Reloads (SIGHUP) applied and refused, the configuration's generation, when it was loaded.
    public var reloads = ReloadStatistics()
    /// Binary upgrades (SIGUSR2) handed over and failed; whether this process inherited its listeners.
    public var upgrades = UpgradeStatistics()

    public var connectionsActive: Int { workers.reduce(0) { $0 + $1.connectionsActive } }
    public var connectionsAccepted: UInt64 { workers.reduce(0) { $0 + $1.connectionsAccepted } }
    public var bytesReceived: UInt64 { workers.reduce(0) { $0 + $1.bytesReceived } }
    public var bytesSent: UInt64 { workers.reduce(0) { $0 + $1.bytesSent } }
    public var backpressurePauses: UInt64 { workers.reduce(0) { $0 + $1.backpressurePauses } }
    public var bufferWaits: UInt64 { workers.reduce(0) { $0 + $1.bufferWaits } }
    public var upstreamConnectFailures: UInt64 { workers.reduce(0) { $0 + $1.upstreamConnectFailures } }
    public var upstreamUnavailable: UInt64 { workers.reduce(0) { $0 + $1.upstreamUnavailable } }
    public var upstreamResets: UInt64 { workers.reduce(0) { $0 + $1.upstreamResets } }
    public var idleTimeouts: UInt64 { workers.reduce(0) { $0 + $1.idleTimeouts } }
    public var connectionsClosed: UInt64 { workers.reduce(0) { $0 + $1.connectionsClosed } }
    public var clientResets: UInt64 { workers.reduce(0) { $0 + $1.clientResets } }
    public var acceptErrors: UInt64 { workers.reduce(0) { $0 + $1.acceptErrors.total } }
    public var writeTimeouts: UInt64 { workers.reduce(0) { $0 + $1.writeTimeouts } }
    public var lingerTimeouts: UInt64 { workers.reduce(0) { $0 + $1.lingerTimeouts } }
    public var stalledEvictions: UInt64 { workers.reduce(0) { $0 + $1.stalledEvictions } }
    public var drainCompleted: UInt64 { workers.reduce(0) { $0 + $1.drainCompleted } }
    public var drainCut: UInt64 { workers.reduce(0) { $0 + $1.drainCut } }
    public var accessLogDropped: UInt64 { workers.reduce(0) { $0 + $1.accessLogDropped } }
    public var proxyHeadersSent: UInt64 { workers.reduce(0) { $0 + $1.proxyHeadersSent } }
    public var proxyHeadersReceived: UInt64 { workers.reduce(0) { $0 + $1.proxyHeadersReceived } }
    public var proxyProtocolErrors: UInt64 { workers.reduce(0) { $0 + $1.proxyProtocolErrors.total } }
    public var clientLimitRejections: UInt64 { workers.reduce(0) { $0 + $1.clientLimitRejections } }
    public var clientLimitTableFull: UInt64 { workers.reduce(0) { $0 + $1.clientLimitTableFull } }

    /// One line for the log at exit.
    public var summary: String {
        "connections accepted \(connectionsAccepted), rejected \(connectionsRejected), active \(connectionsActive); "
            + "bytes received \(bytesReceived), sent \(bytesSent); backpressure pauses \(backpressurePauses), "
            + "buffer waits \(bufferWaits); upstream connect failures \(upstreamConnectFailures), resets \(upstreamResets); "
            + "idle timeouts \(idleTimeouts), write timeouts \(writeTimeouts), linger timeouts \(lingerTimeouts), stalled evictions \(stalledEvictions); "
            + "drain: \(drainCompleted) ended by themselves, \(drainCut) cut (reset); buffers in use \(buffers.totalInUse), overflow high water \(buffers.overflow.highWater)"
    }
}
