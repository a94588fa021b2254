import Synchronization

/// The stats endpoint's own connections, counted since it started.
public struct StatsConnectionStatistics: Sendable, Hashable {
    /// Stats connections open now: accepted and not yet closed (closing ones included).
    public var open: Int
    /// Connections admitted.
    public var accepted: UInt64
    /// Idle connections closed to admit a new one at `StatsLimits.maxConnections`: the
    /// longest-idle one without a request in progress or anything left to write.
    public var evicted: UInt64
    /// New connections closed at once: at the limit with a request in progress on every open
    /// connection, or while the endpoint stops.
    public var refused: UInt64

    public init(open: Int = 0, accepted: UInt64 = 0, evicted: UInt64 = 0, refused: UInt64 = 0) {
        self.open = open
        self.accepted = accepted
        self.evicted = evicted
        self.refused = refused
    }
}

/// The counters behind `StatsConnectionStatistics`. Written by the endpoint's thread only (a
/// relaxed load and store, no read-modify-write), read by any thread with relaxed loads.
final class StatsConnectionCounters: Sendable {
    let open = Atomic<Int>(0)
    let accepted = Atomic<UInt64>(0)
    let evicted = Atomic<UInt64>(0)
    let refused = Atomic<UInt64>(0)

    static func add(_ counter: borrowing Atomic<UInt64>) {
        // Single writer: the endpoint's thread. Readers see a value that was current.
        counter.store(counter.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
    }

    func snapshot() -> StatsConnectionStatistics {
        StatsConnectionStatistics(open: open.load(ordering: .relaxed), accepted: accepted.load(ordering: .relaxed),
                                  evicted: evicted.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed))
    }
}
