import FastAlloc

/// Every packet-buffer pool's counters at one moment: a value, safe to keep and to send.
public struct PacketBufferStatistics: Sendable, Hashable {
    public var bufferSize: Int
    public var workers: [WorkerBufferStatistics]
    public var overflow: OverflowBufferStatistics

    /// Buffers out of every pool (local and overflow).
    public var totalInUse: Int { workers.reduce(overflow.inUse) { $0 + $1.inUse } }
}

/// One worker's local pool.
public struct WorkerBufferStatistics: Sendable, Hashable {
    public var worker: Int
    public var capacity: Int
    /// Buffers out; those released on other threads and not yet drained count as back.
    public var inUse: Int
    public var highWater: Int
    /// Buffers taken from the local pool.
    public var takes: UInt64
    /// Takes the overflow pool served because the local pool was empty.
    public var overflowDraws: UInt64
    /// Takes that found no buffer, local or overflow (the server then applies backpressure).
    public var failedDraws: UInt64
    /// Buffers other threads released into this pool's return ring.
    public var remoteReturns: UInt64
    /// Of those, the ones the worker has not taken back yet.
    public var pendingReturns: Int

    public var utilisation: Double { capacity == 0 ? 0 : Double(inUse) / Double(capacity) }
}

/// The shared overflow pool.
public struct OverflowBufferStatistics: Sendable, Hashable {
    public var capacity: Int
    public var maxCapacity: Int
    public var inUse: Int
    public var highWater: Int
    /// Buffers handed out.
    public var draws: UInt64
    /// Draws that found the pool at its maximum and empty.
    public var failedDraws: UInt64
    /// Growth steps so far.
    public var growthEvents: Int
    /// The latest growth steps, oldest first (bounded by `recentGrowthEventLimit`).
    public var recentGrowthEvents: [GrowthEvent]
    /// The overflow lock: acquisitions, contended acquisitions, nanoseconds waited.
    public var lock: LockStatistics

    public var utilisation: Double { capacity == 0 ? 0 : Double(inUse) / Double(capacity) }
}
