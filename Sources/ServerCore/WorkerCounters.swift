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
    /// Client connections closed because no upstream could be connected (every try failed).
    let upstreamUnavailable = Atomic<UInt64>(0)
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
    /// Access log records dropped because this worker's ring was full (the writer fell behind).
    let accessLogDropped = Atomic<UInt64>(0)
    /// Connections closed at accept by --max-connections-per-client.
    let clientLimitRejections = Atomic<UInt64>(0)
    /// Connections admitted untracked because the per-client table had no room for their address.
    let clientLimitTableFull = Atomic<UInt64>(0)
    /// PROXY protocol headers written to upstreams and read from clients.
    let proxyHeadersSent = Atomic<UInt64>(0)
    let proxyHeadersReceived = Atomic<UInt64>(0)
    /// Client connections closed for their PROXY header, by `ProxyProtocolFailure` (in its order).
    private let proxyProtocolErrors: [Counter] = ProxyProtocolFailure.allCases.map { _ in Counter() }
    private final class Counter: Sendable { let value = Atomic<UInt64>(0) }
    /// Connections of this worker open now (client connections; a relay's upstream is not counted).
    let active = Atomic<Int>(0)

    @inline(__always)
    static func add(_ counter: borrowing Atomic<UInt64>, _ amount: UInt64 = 1) {
        // Single writer: the owning worker's thread. Readers see a value that was current.
        counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    func add(_ failure: ProxyProtocolFailure) {
        WorkerCounters.add(proxyProtocolErrors[ProxyProtocolFailure.allCases.firstIndex(of: failure)!].value)
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
            upstreamUnavailable: upstreamUnavailable.load(ordering: .relaxed),
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
            drainCut: drainCut.load(ordering: .relaxed),
            accessLogDropped: accessLogDropped.load(ordering: .relaxed),
            clientLimitRejections: clientLimitRejections.load(ordering: .relaxed),
            clientLimitTableFull: clientLimitTableFull.load(ordering: .relaxed),
            proxyHeadersSent: proxyHeadersSent.load(ordering: .relaxed),
            proxyHeadersReceived: proxyHeadersReceived.load(ordering: .relaxed),
            proxyProtocolErrors: proxyErrorStatistics())
    }

    private func proxyErrorStatistics() -> ProxyProtocolErrorStatistics {
        var result = ProxyProtocolErrorStatistics()
        for (index, reason) in ProxyProtocolFailure.allCases.enumerated() {
            result[reason] = proxyProtocolErrors[index].value.load(ordering: .relaxed)
        }
        return result
    }
}
