import PacketBuffers
import Synchronization

/// One worker's counters. Each is written by the worker's thread only (a relaxed load and store,
/// no read-modify-write on the data path) and read by any thread with relaxed loads.
final class WorkerCounters: Sendable {
    let accepted = Atomic<UInt64>(0)
    let closed = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
    /// A direction's write queue passed the high watermark and its source stopped reading.
    let backpressurePauses = Atomic<UInt64>(0)
    /// A read found no buffer (local and overflow pools empty) and waited for one.
    let bufferWaits = Atomic<UInt64>(0)
    let upstreamConnectFailures = Atomic<UInt64>(0)
    let upstreamResets = Atomic<UInt64>(0)
    let clientResets = Atomic<UInt64>(0)
    let idleTimeouts = Atomic<UInt64>(0)
    /// accept() failures by reason: out of descriptors (process, system), out of memory, other.
    let acceptErrorsProcessFiles = Atomic<UInt64>(0)
    let acceptErrorsSystemFiles = Atomic<UInt64>(0)
    let acceptErrorsMemory = Atomic<UInt64>(0)
    let acceptErrorsOther = Atomic<UInt64>(0)
    /// Connections reset because a write queued to them made no progress for --write-timeout.
    let writeTimeouts = Atomic<UInt64>(0)
    /// Lingering closes (after a failure) ended by --linger-timeout instead of by the peer.
    let lingerTimeouts = Atomic<UInt64>(0)
    /// Connections reset because the pools ran out while a connection holding no buffer needed
    /// one (the longest-stalled first).
    let stalledEvictions = Atomic<UInt64>(0)
    /// Connections open when a drain began that ended by themselves before --drain-timeout.
    let drainCompleted = Atomic<UInt64>(0)
    /// Connections reset (both sides) when --drain-timeout passed.
    let drainCut = Atomic<UInt64>(0)
    /// Connections of this worker open now (client connections; a relay's upstream is not counted).
    let active = Atomic<Int>(0)

    @inline(__always)
    static func add(_ counter: borrowing Atomic<UInt64>, _ amount: UInt64 = 1) {
        // Single writer: the owning worker's thread. Readers see a value that was current.
        counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    @inline(__always)
    static func set(_ counter: borrowing Atomic<Int>, _ value: Int) {
        counter.store(value, ordering: .relaxed)
    }

    func snapshot(worker: Int) -> WorkerStatistics {
        WorkerStatistics(
            worker: worker,
            connectionsActive: active.load(ordering: .relaxed),
            connectionsAccepted: accepted.load(ordering: .relaxed),
            connectionsClosed: closed.load(ordering: .relaxed),
            bytesReceived: bytesReceived.load(ordering: .relaxed),
            bytesSent: bytesSent.load(ordering: .relaxed),
            backpressurePauses: backpressurePauses.load(ordering: .relaxed),
            bufferWaits: bufferWaits.load(ordering: .relaxed),
            upstreamConnectFailures: upstreamConnectFailures.load(ordering: .relaxed),
            upstreamResets: upstreamResets.load(ordering: .relaxed),
            clientResets: clientResets.load(ordering: .relaxed),
            idleTimeouts: idleTimeouts.load(ordering: .relaxed),
            acceptErrors: AcceptErrorStatistics(
                processFileLimit: acceptErrorsProcessFiles.load(ordering: .relaxed),
                systemFileLimit: acceptErrorsSystemFiles.load(ordering: .relaxed),
                memory: acceptErrorsMemory.load(ordering: .relaxed),
                other: acceptErrorsOther.load(ordering: .relaxed)),
            writeTimeouts: writeTimeouts.load(ordering: .relaxed),
            lingerTimeouts: lingerTimeouts.load(ordering: .relaxed),
            stalledEvictions: stalledEvictions.load(ordering: .relaxed),
            drainCompleted: drainCompleted.load(ordering: .relaxed),
            drainCut: drainCut.load(ordering: .relaxed))
    }
}

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
    public var upstreamResets: UInt64
    public var clientResets: UInt64
    public var idleTimeouts: UInt64
    public var acceptErrors: AcceptErrorStatistics
    public var writeTimeouts: UInt64
    public var lingerTimeouts: UInt64
    public var stalledEvictions: UInt64
    public var drainCompleted: UInt64
    public var drainCut: UInt64
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

    public var connectionsActive: Int { workers.reduce(0) { $0 + $1.connectionsActive } }
    public var connectionsAccepted: UInt64 { workers.reduce(0) { $0 + $1.connectionsAccepted } }
    public var bytesReceived: UInt64 { workers.reduce(0) { $0 + $1.bytesReceived } }
    public var bytesSent: UInt64 { workers.reduce(0) { $0 + $1.bytesSent } }
    public var backpressurePauses: UInt64 { workers.reduce(0) { $0 + $1.backpressurePauses } }
    public var bufferWaits: UInt64 { workers.reduce(0) { $0 + $1.bufferWaits } }
    public var upstreamConnectFailures: UInt64 { workers.reduce(0) { $0 + $1.upstreamConnectFailures } }
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

    /// One line for the log at exit.
    public var summary: String {
        "connections accepted \(connectionsAccepted), rejected \(connectionsRejected), active \(connectionsActive); "
            + "bytes received \(bytesReceived), sent \(bytesSent); backpressure pauses \(backpressurePauses), "
            + "buffer waits \(bufferWaits); upstream connect failures \(upstreamConnectFailures), resets \(upstreamResets); "
            + "idle timeouts \(idleTimeouts), write timeouts \(writeTimeouts), linger timeouts \(lingerTimeouts), stalled evictions \(stalledEvictions); "
            + "drain: \(drainCompleted) ended by themselves, \(drainCut) cut (reset); buffers in use \(buffers.totalInUse), overflow high water \(buffers.overflow.highWater)"
    }
}
