import FastAlloc
#if canImport(Glibc)
import Glibc
#endif

/// A server's packet-buffer memory: one shared, growing, locked overflow pool, and one local
/// pool per worker thread (`makeWorkerPool()`), all of buffers of one size.
///
/// ```swift
/// let buffers = try PacketBufferPools(config: PacketBufferConfig(bufferSize: 16 * 1024))
/// // on each worker thread:
/// let pool = buffers.makeWorkerPool()
/// if var buffer = pool.take() {          // local, then overflow; nil: apply backpressure
///     buffer.withUnsafeMutableBytes { bytes in /* fill */ }
///     buffer.length = 5
/// }
/// // from any thread, any time:
/// let stats = buffers.statistics()
/// ```
///
/// Every buffer goes home wherever it is released (see `PacketBuffer`). The pools live as long
/// as this object: debug builds trap if it dies while buffers are out; release builds then
/// keep the memory rather than free it under them.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: the overflow home, each worker's
/// home and the `homes` array are allocated here and live until deinit, which frees them only
/// when no buffer is out; `homes` is touched under `registryLock` only.
@safe
public final class PacketBufferPools: @unchecked Sendable {
    // @unchecked Sendable: `overflow` is a `_Home` (thread-safe by its lock and atomics);
    // `homes` is touched only under `registryLock`.
    public let config: PacketBufferConfig
    @usableFromInline let overflow: UnsafeMutablePointer<_Home>
    private let registryLock = _ContentionLock()
    private let homes = UnsafeMutablePointer<[UnsafeMutablePointer<_Home>]>.allocate(capacity: 1)

    public init(config: PacketBufferConfig = try! PacketBufferConfig()) throws(PoolConfigError) {
        try config.validate()
        self.config = config
        // Safe: new allocations, one value each, initialised once here.
        unsafe overflow = .allocate(capacity: 1)
        unsafe overflow.initialize(to: _Home(overflow: config))
        unsafe homes.initialize(to: [])
    }

    deinit {
        // Safe: the homes are live until the loop below, which frees each once, only when no
        // buffer is out; nobody else reaches `homes` any more (no worker pool is left).
        // A buffer released on another thread meanwhile (a misuse: it outlived the pools) is
        // counted as out until its release's last touch of its home, so that home is not freed
        // under it:
        // - overflow: its count is read under its lock. A release either unlocked before this
        //   lock() returned (the unlock is its last touch of the home and the lock), or has not
        //   put its buffer back yet (counted). The published `inUse` alone would not do: a
        //   release stores it inside the lock, before its unlock.
        // - local homes: their published `inUse` (an atomic, stored last by a release on the
        //   owner thread; the plain count would be a data race), less the returns whose push is
        //   complete: the filled cells of the return ring, loaded acquiring (a push's store of
        //   its cell is its last touch, and releasing). A push that has taken its index but not
        //   stored yet counts as out, so the ring is not freed under it. Nobody drains now (no
        //   worker pool is left), so the cells between drained and tail stay put. The owner's
        //   `inUse` store is relaxed: for it this relies on the store being the release's last
        //   touch, not on a formal happens-before (that would take a releasing store on the
        //   data path).
        // Deinit only: the data path is unchanged.
        let all = unsafe homes.pointee + [overflow]
        let overflowLock = unsafe overflow.pointee.lock.unsafelyUnwrapped
        overflowLock.lock()
        let overflowOut = unsafe overflow.pointee.slots.pointee.inUse
        overflowLock.unlock()
        let out = unsafe homes.pointee.reduce(overflowOut) { unsafe $0 + $1.pointee.inUse.load(ordering: .acquiring) }
        let pending = unsafe all.reduce(0) { unsafe $0 + _Home.completedReturns($1) }
        if out - pending > 0 {
            #if DEBUG
            fatalError("PacketBufferPools destroyed while \(out - pending) buffer(s) are out")
            #else
            return  // keep the memory: buffers still point into it
            #endif
        }
        for unsafe home in unsafe all {
            unsafe home.pointee.destroy()
            unsafe home.deinitialize(count: 1)
            unsafe home.deallocate()
        }
        unsafe homes.deinitialize(count: 1)
        unsafe homes.deallocate()
        unsafe registryLock.destroy()
    }

    /// Makes the calling thread's local pool. Call it on the worker thread that will use it:
    /// that thread becomes its owner, and retires it (`WorkerBufferPool.retire()`) before exiting.
    public func makeWorkerPool() -> WorkerBufferPool {
        // Safe: `homes` under the lock; the new home lives until deinit (the worker pool keeps
        // these pools alive).
        registryLock.lock()
        let worker = unsafe homes.pointee.count
        let home = UnsafeMutablePointer<_Home>.allocate(capacity: 1)
        unsafe home.initialize(to: _Home(local: worker, config: config))
        unsafe homes.pointee.append(home)
        registryLock.unlock()
        return unsafe WorkerBufferPool(pools: self, home: home)
    }

    /// Takes a buffer from the overflow pool directly, for threads that have no local pool.
    public func takeShared() -> PacketBuffer? {
        // Safe: the overflow home is live; the buffer taken goes to the new handle.
        guard let data = unsafe _Home.takeOverflow(overflow) else { return nil }
        return unsafe PacketBuffer(data: data)
    }

    /// A snapshot of every pool's counters, from any thread, without touching the hot path's
    /// locks: counters are atomics their single writer publishes.
    public func statistics() -> PacketBufferStatistics {
        // Safe: `homes` under the lock; every home lives as long as these pools; only atomics
        // and immutable fields are read from other threads' homes.
        registryLock.lock()
        let locals = unsafe homes.pointee
        registryLock.unlock()
        let workers = unsafe locals.map { home in
            let pending = unsafe _Home.pendingReturns(home)
            return unsafe WorkerBufferStatistics(
                worker: home.pointee.worker,
                capacity: home.pointee.capacity.load(ordering: .relaxed),
                inUse: max(0, home.pointee.inUse.load(ordering: .relaxed) - pending),
                highWater: home.pointee.highWater.load(ordering: .relaxed),
                takes: home.pointee.takes.load(ordering: .relaxed),
                overflowDraws: home.pointee.overflowDraws.load(ordering: .relaxed),
                failedDraws: home.pointee.failedDraws.load(ordering: .relaxed),
                remoteReturns: _Home.remoteReturns(home),
                pendingReturns: pending)
        }
        let home = unsafe overflow
        // In use before capacity (the writer publishes them in the other order), so that
        // inUse <= capacity holds in every snapshot.
        let overflowInUse = unsafe home.pointee.inUse.load(ordering: .acquiring)
        let overflowStatistics = unsafe OverflowBufferStatistics(
            capacity: home.pointee.capacity.load(ordering: .acquiring),
            maxCapacity: config.overflowMax,
            inUse: overflowInUse,
            highWater: home.pointee.highWater.load(ordering: .relaxed),
            draws: home.pointee.takes.load(ordering: .relaxed),
            failedDraws: home.pointee.failedDraws.load(ordering: .relaxed),
            growthEvents: home.pointee.growthCount.load(ordering: .relaxed),
            recentGrowthEvents: home.pointee.recentGrowthEvents(),
            lock: home.pointee.lock!.statistics)
        return PacketBufferStatistics(bufferSize: config.bufferSize, workers: workers, overflow: overflowStatistics)
    }
}

/// One worker thread's buffers: taken and returned with no lock and no atomic
/// read-modify-write. When they run out it draws from the shared overflow pool.
///
/// Not `Sendable`: it belongs to the thread that made it (debug builds check), which calls
/// `retire()` before it exits.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: `home` and `overflow` live as
/// long as `pools`, which this object keeps alive, and `home`'s slots are touched only on the
/// owner thread (this object is not `Sendable`).
@safe
public final class WorkerBufferPool {
    /// Keeps the shared pools (and so every home) alive as long as a worker pool exists.
    public let pools: PacketBufferPools
    @usableFromInline let home: UnsafeMutablePointer<_Home>
    @usableFromInline let overflow: UnsafeMutablePointer<_Home>

    init(pools: PacketBufferPools, home: UnsafeMutablePointer<_Home>) {
        // Safe: both homes belong to `pools`, kept alive by this object (see the type).
        self.pools = pools
        unsafe self.home = home
        unsafe overflow = pools.overflow
    }

    /// This worker's number, as the statistics give it.
    // Safe (this and every member below): the homes are live, and this is the owner thread
    // (see the type); only atomics are read from the shared overflow home.
    public var worker: Int { unsafe home.pointee.worker }

    /// Takes a buffer: from this worker's pool; when it is empty, first what other threads
    /// returned, then from the overflow pool. Nil when the overflow pool is at its maximum too
    /// (counted as a failed draw): the caller should stop reading until buffers come back.
    @inlinable @inline(__always)
    public func take() -> PacketBuffer? {
        #if DEBUG
        if isRetired { fatalError("WorkerBufferPool.take(): worker \(worker)'s pool is retired") }
        #endif
        if let data = unsafe _Home.takeLocal(home) {
            return unsafe PacketBuffer(data: data)
        }
        return takeFromOverflow()
    }

    @usableFromInline
    func takeFromOverflow() -> PacketBuffer? {
        guard let data = unsafe _Home.takeOverflow(overflow) else {
            unsafe _singleWriterAdd(1, to: home.pointee.failedDraws)
            return nil
        }
        unsafe _singleWriterAdd(1, to: home.pointee.overflowDraws)
        return unsafe PacketBuffer(data: data)
    }

    /// Buffers `take()` could still hand out now: this worker's free ones (what other threads
    /// returned included) and the overflow pool's room up to its maximum. Owner thread; the
    /// overflow part is a relaxed reading (other workers draw from it at the same time). A server
    /// uses it to shrink each connection's share as the pools fill.
    public var available: Int {
        let slots = unsafe home.pointee.slots
        let local = unsafe slots.pointee.maxCapacity - slots.pointee.inUse + _Home.pendingReturns(home)
        let overflowRoom = unsafe pools.config.overflowMax - overflow.pointee.inUse.load(ordering: .relaxed)
        return local + max(0, overflowRoom)
    }

    /// This worker's own free buffers (not counting returns from other threads): two plain
    /// loads, no atomic, so a hot path can ask it first. Owner thread.
    @inlinable
    public var localAvailable: Int {
        let slots = unsafe home.pointee.slots
        return unsafe slots.pointee.maxCapacity &- slots.pointee.inUse
    }

    /// Buffers this worker can reach at most: its own and the overflow pool's maximum.
    public var reachable: Int {
        unsafe home.pointee.slots.pointee.maxCapacity + pools.config.overflowMax
    }

    /// Takes back the buffers other threads released, now (the pool also does it by itself
    /// when it runs out). Returns how many. Owner thread. The server (ServerCore's `Worker`)
    /// calls it from its buffer-wait retry timer while reads wait for a buffer, and once after
    /// its loop ends, before `retire()`: not on every loop iteration.
    @discardableResult
    public func drainReturns() -> Int {
        unsafe _Home.drainReturns(home)
    }

    /// Retires this pool: call it on the worker thread as its last act with buffers, once its
    /// loop has ended and every buffer it used has come back (it drains returns itself too).
    ///
    /// Why: a buffer released on the owner thread goes to the free list with no lock, and the
    /// owner is recognised by a thread-local address that a thread started after this one exits
    /// may get again. After `retire()` no thread is the owner: a buffer of this pool released
    /// later, on any thread, goes onto the return ring (lock-free, safe from anywhere) and counts
    /// as back in the statistics; its slot is not used again. Such a release is a bug (a buffer
    /// outlived its worker), so debug builds trap on it, and on `take()` after `retire()`.
    /// Overflow buffers are not affected: they go home to the overflow pool as always.
    /// Owner thread only (traps elsewhere); calling it again does nothing.
    public func retire() {
        unsafe _Home.retire(home)
    }

    /// Whether `retire()` was called. Any thread.
    public var isRetired: Bool {
        unsafe home.pointee.route.pointee.owner.load(ordering: .relaxed) == _Home.retired
    }
}

@available(*, unavailable, message: "a WorkerBufferPool belongs to the thread that made it")
extension WorkerBufferPool: Sendable {}
