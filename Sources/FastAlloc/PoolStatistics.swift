/// One growth step of a pool: when it happened and the capacity before and after.
public struct GrowthEvent: Sendable, Hashable {
    /// Monotonic time of the growth (`CLOCK_MONOTONIC`), in nanoseconds.
    public let monotonicNanoseconds: UInt64
    public let capacityBefore: Int
    public let capacityAfter: Int

    package init(monotonicNanoseconds: UInt64, capacityBefore: Int, capacityAfter: Int) {
        self.monotonicNanoseconds = monotonicNanoseconds
        self.capacityBefore = capacityBefore
        self.capacityAfter = capacityAfter
    }
}

/// A snapshot of a pool's counters: a value, safe to keep and to send to another thread.
public struct PoolStatistics: Sendable, Hashable {
    /// The pool's name from its configuration.
    public var name: String
    /// Slots the pool holds now.
    public var capacity: Int
    /// The most slots it may ever hold.
    public var maxCapacity: Int
    /// Slots held by handles now.
    public var inUse: Int
    /// The most slots ever in use at once. With magazines: the most ever taken out of the
    /// shared pool at once, slots cached in magazines included (an upper bound of the slots
    /// handles held at once).
    public var highWater: Int
    /// Successful acquisitions since the pool was made.
    public var acquisitions: UInt64
    /// Releases since the pool was made.
    public var releases: UInt64
    /// `tryAcquire` calls that found the pool exhausted and unable to grow.
    public var failedAcquisitions: UInt64
    /// How many times the pool grew.
    public var growthEvents: Int
    /// `ThreadSafePool` with magazines: acquisitions served from a thread's magazine (included
    /// in `acquisitions`): without the lock, but for the one a refill hands out under it.
    public var magazineAcquisitions: UInt64 = 0
    /// `ThreadSafePool` with magazines: releases a thread's magazine took: without the lock,
    /// but for those that first flushed a full magazine under it.
    public var magazineReleases: UInt64 = 0
    /// `ThreadSafePool` with magazines: free slots cached in threads' magazines now (free, so
    /// not in `inUse`; other threads cannot have them until they are flushed).
    public var cachedInMagazines: Int = 0
    /// `ThreadSafePool` with magazines: threads that have a magazine of this pool now.
    public var magazines: Int = 0
    /// `ThreadSafePool` with magazines: times an exhausted acquire asked every magazine to flush.
    public var magazineFlushRequests: UInt64 = 0

    /// Slots free now, without growing.
    public var available: Int { capacity - inUse }
    /// `inUse / capacity`, from 0 to 1.
    public var utilisation: Double { capacity == 0 ? 0 : Double(inUse) / Double(capacity) }
}

/// Lock counters of a `ThreadSafePool`: contention is measured, not guessed.
public struct LockStatistics: Sendable, Hashable {
    /// Times the lock was taken.
    public var acquisitions: UInt64
    /// Times it was busy at the first try, so the taker had to wait.
    public var contended: UInt64
    /// Total time spent waiting for it, in nanoseconds.
    public var waitNanoseconds: UInt64

    public init(acquisitions: UInt64 = 0, contended: UInt64 = 0, waitNanoseconds: UInt64 = 0) {
        self.acquisitions = acquisitions
        self.contended = contended
        self.waitNanoseconds = waitNanoseconds
    }
}
