import PacketBuffers
import Synchronization

/// What every worker shares: the buffer pools, the connection limit, the shutdown phase asked
/// for, and the settings a reload publishes.
final class ServerShared: Sendable {
    let pools: PacketBufferPools
    let maxConnections: Int
    /// The relay's upstreams (nil in echo mode).
    let upstreams: UpstreamPool?
    /// The settings in effect (`ServerSettings`): replaced whole by a reload.
    private let settings: Mutex<ServerSettings>
    /// The generation of `settings`, read by each worker at each accept (relaxed: a worker that
    /// sees the new number takes the snapshot under the mutex, which orders the rest).
    let settingsGeneration: Atomic<UInt64>
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

    init(pools: PacketBufferPools, maxConnections: Int, upstreams: UpstreamPool? = nil, settings: ServerSettings) {
        self.pools = pools
        self.maxConnections = maxConnections
        self.upstreams = upstreams
        self.settings = Mutex(settings)
        settingsGeneration = Atomic(settings.generation)
    }

    /// The settings in effect now (a lock: once per reload per worker, never per connection).
    var currentSettings: ServerSettings { settings.withLock { $0 } }

    /// Makes `next` the settings in effect: each worker takes it at its next accept.
    func publish(_ next: ServerSettings) {
        settings.withLock { $0 = next }
        settingsGeneration.store(next.generation, ordering: .releasing)
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
