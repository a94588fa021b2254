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
