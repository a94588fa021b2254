import PacketBuffers
import Synchronization

/// What every worker shares: the buffer pools, the connection limit, the shutdown phase asked for.
final class ServerShared: Sendable {
    let pools: PacketBufferPools
    let maxConnections: Int
    /// The relay's upstreams (nil in echo mode).
    let upstreams: UpstreamPool?
    /// The access log (nil: off) and the per-client connection counts (nil: no limit).
    let accessLog: AccessLog?
    let clientLimits: ClientLimits?
    let active = Atomic<Int>(0)
    let rejected = Atomic<UInt64>(0)
    /// What `drain()` or `stop()` asked for (`.serving` until then). Only ever raised; each
    /// worker reads it when woken and enters that phase.
    let requestedPhase = Atomic<ShutdownPhase>(.serving)
    /// Set by `Server.startAccepting()`: workers holding inherited listeners that wait for it
    /// (an upgrade's new process) start accepting when woken.
    let acceptRequested = Atomic<Bool>(false)
    /// Workers whose loop has ended.
    let finishedWorkers = Atomic<Int>(0)

    init(pools: PacketBufferPools, maxConnections: Int, upstreams: UpstreamPool? = nil,
         accessLog: AccessLog? = nil, clientLimits: ClientLimits? = nil) {
        self.pools = pools
        self.maxConnections = maxConnections
        self.upstreams = upstreams
        self.accessLog = accessLog
        self.clientLimits = clientLimits
    }

    /// Counts a new connection in, or refuses it (counted) when the limit is reached. One atomic
    /// read-modify-write per connection, none per message.
    func admit() -> Bool {
        if active.add(1, ordering: .relaxed).newValue > maxConnections {
            active.subtract(1, ordering: .relaxed)
            rejected.add(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Requests `phase` unless a later one (stop over drain) is requested already. Returns the
    /// phase requested afterwards.
    @discardableResult
    func request(_ phase: ShutdownPhase) -> ShutdownPhase {
        var current = requestedPhase.load(ordering: .relaxed)
        while current < phase {
            let (exchanged, found) = requestedPhase.compareExchange(
                expected: current, desired: phase, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { return phase }
            current = found
        }
        return current
    }

    /// A connection `admit()` counted in has closed.
    func release() {
        active.subtract(1, ordering: .relaxed)
    }
}
