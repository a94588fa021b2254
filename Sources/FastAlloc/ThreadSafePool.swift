extension _TypedCore {
    /// The lock of a thread-safe pool's header.
    @inlinable @inline(__always)
    static func lock(of core: UnsafeMutablePointer<_TypedCore<Element>>) -> _ContentionLock {
        // Safe: only ThreadSafePool makes headers with a lock, and only it (and its handles and
        // batches) calls this, so `unsafelyUnwrapped` never meets nil.
        unsafe core.pointee.lock.unsafelyUnwrapped
    }

    /// Gives back a slot whose release hooks have run, under the lock; frees everything if the
    /// pool is gone and this was its last slot.
    @inlinable @inline(__always)
    static func lockedPut(_ slot: UnsafeMutableRawPointer, into core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: the caller owns the in-use slot, so the core is live; the slot bookkeeping is
        // touched under the lock only, and the core is destroyed after it by the last slot back.
        let lock = unsafe lock(of: core)
        let slots = unsafe core.pointee.slots
        lock.lock()
        unsafe slots.pointee.put(slot)
        let last = unsafe _slowPath(slots.pointee.orphaned) && slots.pointee.inUse == 0
        lock.unlock()
        if last { unsafe destroy(core) }
    }

    /// Gives back a slot whose release hooks have run: into this thread's magazine when the
    /// pool has magazines (no lock while it has room), else under the lock.
    @inlinable @inline(__always)
    static func sharedPut(_ slot: UnsafeMutableRawPointer, into core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: the caller owns the in-use slot, so the core (and its depot) is live.
        if let depot = unsafe core.pointee.depot {
            if unsafe _Depot.putCached(slot, depot) { return }
            unsafe orphanAwarePut(slot, into: core, depot)
            return
        }
        unsafe lockedPut(slot, into: core)
    }

    /// A magazine release that the fast path could not take: the slow path, or (the pool
    /// object is gone, release builds) the slot goes to the core, and the last one back frees
    /// everything.
    @usableFromInline
    static func orphanAwarePut(_ slot: UnsafeMutableRawPointer, into core: UnsafeMutablePointer<_TypedCore<Element>>,
                               _ depot: UnsafeMutablePointer<_Depot>) {
        // Safe: as in `sharedPut`; the registry lock, then the pool lock, decide who is last.
        if unsafe _Depot.putSlow(slot, depot) { return }
        unsafe putAll([slot], into: core)
    }

    /// Gives slots back to the core of a pool with magazines under the registry lock and the
    /// pool lock, so that whoever brings back the last slot of a pool that is gone knows it:
    /// slots cached in magazines do not count as out.
    static func putAll(_ slots: [UnsafeMutableRawPointer], into core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: the caller owns the in-use slots, so the core and its depot are live until the
        // decision below, taken under both locks; only the one who makes it zero destroys.
        let depot = unsafe core.pointee.depot.unsafelyUnwrapped
        let registry = _MagazineRegistry.shared
        let lock = unsafe lock(of: core)
        registry.lock.lock()
        lock.lock()
        for unsafe slot in unsafe slots { unsafe core.pointee.slots.pointee.put(slot) }
        let last = unsafe core.pointee.slots.pointee.orphaned
            && core.pointee.slots.pointee.inUse - _Depot.cached(depot) == 0
        lock.unlock()
        if last { unsafe _Depot.tearDown(depot) }
        registry.lock.unlock()
        if last { unsafe destroy(core) }
    }
}

/// A growing pool shared by many threads behind one lock, which counts its own contention.
///
/// The pool, its handles and its batches are `Sendable`: a handle acquired on one thread may be
/// released on any other. Only the slot bookkeeping happens under the lock; values are placed
/// and the hooks run outside it, on the slot the caller now owns alone.
///
/// ```swift
/// let pool = try ThreadSafePool<Request>(config: .init(capacity: 64, growth: .linear(64)))
/// inbox.handle.withLock { $0 = pool.acquire(Request()) }   // inbox: a Mutex<SharedPoolHandle?> in a shared class
/// // ... on any other thread:
/// inbox.handle.withLock { $0 = nil }                         // released there: fine
/// ```
///
/// Memory safety: `@safe`; every `unsafe` in it, its handles and batches rests on this: `_shared`
/// is allocated in `init` and lives until the pool dies with no slot out, or (release builds)
/// until the last slot comes back; its header is immutable, and the slot bookkeeping it points
/// to is touched only under its lock; a slot taken under the lock is then its taker's alone.
@safe
public final class ThreadSafePool<Element: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: all mutable state lives behind `_shared.lock`; hooks are @Sendable.
    @usableFromInline let _shared: UnsafeMutablePointer<_TypedCore<Element>>

    public init(config: PoolConfig<Element>) throws(PoolConfigError) {
        try config.validate()
        // Safe: the pool owns the new core (with a lock) until deinit.
        unsafe _shared = _TypedCore.make(config, locked: true)
    }

    deinit {
        if let depot = unsafe _shared.pointee.depot {
            unsafe _retire(depot)
            return
        }
        // Safe: the core is live; it is destroyed here only with no slot out, under no lock.
        let lock = unsafe _TypedCore.lock(of: _shared)
        let slots = unsafe _shared.pointee.slots
        lock.lock()
        let inUse = unsafe slots.pointee.inUse
        if inUse > 0 {
            #if DEBUG
            fatalError(unsafe "FastAlloc: ThreadSafePool '\(slots.pointee.name)' was destroyed while \(inUse) handle(s) still hold slots: a handle outlived its pool")
            #else
            unsafe slots.pointee.orphaned = true
            lock.unlock()
            return
            #endif
        }
        lock.unlock()
        unsafe _TypedCore.destroy(_shared)
    }

    /// deinit with magazines: slots cached in magazines are free, not out.
    private func _retire(_ depot: UnsafeMutablePointer<_Depot>) {
        // Safe: the core is live; under the registry lock and the pool lock nobody refills,
        // flushes or leaves; with no slot out nobody can use a magazine of this pool any more.
        let registry = _MagazineRegistry.shared
        let lock = unsafe _TypedCore.lock(of: _shared)
        let slots = unsafe _shared.pointee.slots
        registry.lock.lock()
        lock.lock()
        let out = unsafe slots.pointee.inUse - _Depot.cached(depot)
        if out > 0 {
            #if DEBUG
            fatalError(unsafe "FastAlloc: ThreadSafePool '\(slots.pointee.name)' was destroyed while \(out) handle(s) still hold slots: a handle outlived its pool")
            #else
            // Magazines stop serving; the last slot back frees everything (`putAll`).
            unsafe slots.pointee.orphaned = true
            unsafe depot.pointee.generation.store(depot.pointee.generation.load(ordering: .relaxed) | 1, ordering: .relaxed)
            lock.unlock()
            registry.lock.unlock()
            return
            #endif
        }
        lock.unlock()
        unsafe _Depot.tearDown(depot)
        registry.lock.unlock()
        unsafe _TypedCore.destroy(_shared)
    }

    public typealias Handle = SharedPoolHandle<Element>

    /// Puts `value` in a free slot (growing if allowed) and returns its handle. Traps, naming
    /// the pool, when it is exhausted and cannot grow; see `tryAcquire(_:)`.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public func acquire(_ value: consuming Element) -> SharedPoolHandle<Element> {
        guard let handle = tryAcquire(value) else { _exhausted() }
        return handle
    }

    /// Like `acquire(_:)`, but returns nil (and counts a failed acquisition) when exhausted.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public func tryAcquire(_ value: consuming Element) -> SharedPoolHandle<Element>? {
        // Safe: the core is live (type comment); the slot just taken goes to the new handle.
        // `self` is used again after the take (`_shared`), so the pool lives until the slot is
        // counted out, even when the caller's reference to it is a temporary.
        let core = unsafe _shared
        guard let taken = unsafe ThreadSafePool._take(core) else { return nil }
        // Outside the lock: the slot is now owned by this caller alone.
        return unsafe SharedPoolHandle(shared: _shared, pointer: _TypedCore.place(value, in: taken.slot, fresh: taken.fresh, of: core))
    }

    /// Hands out a retained value (reset by the hooks) or a new one from `initialize`.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public func acquire() -> SharedPoolHandle<Element> {
        guard let handle = tryAcquire() else { _exhausted() }
        return handle
    }

    /// Like `acquire()`, but returns nil when exhausted.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public func tryAcquire() -> SharedPoolHandle<Element>? {
        // Safe: as in `tryAcquire(_:)`; `reuse` needs the initializer checked here first.
        let core = unsafe _shared
        if unsafe core.pointee.hooks.initialize == nil { _noInitializer() }
        guard let taken = unsafe ThreadSafePool._take(core) else { return nil }
        return unsafe SharedPoolHandle(shared: _shared, pointer: _TypedCore.reuse(taken.slot, fresh: taken.fresh, of: core))
    }

    @inlinable @inline(__always)
    static func _take(_ core: UnsafeMutablePointer<_TypedCore<Element>>) -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        // Safe: the core is live; its slot bookkeeping is touched under the lock only; a
        // magazine's slots are its thread's alone and all hold values (never fresh).
        if let depot = unsafe core.pointee.depot {
            if let slot = unsafe _Depot.takeCached(depot) { return unsafe (slot, false) }
            return unsafe _Depot.takeSlow(depot)
        }
        let lock = unsafe _TypedCore.lock(of: core)
        let slots = unsafe core.pointee.slots
        lock.lock()
        let taken = unsafe slots.pointee.take()
        lock.unlock()
        return unsafe taken
    }

    /// Acquires `count` slots under one lock acquisition, all or nothing; nil when the pool,
    /// grown to its maximum, could not supply them all (nothing is taken then).
    public func tryAcquire(count: Int, _ value: (Int) -> Element) -> SharedPoolBatch<Element>? {
        precondition(count >= 0, "FastAlloc: acquire(count:) needs count >= 0")
        // Safe: the core is live; bookkeeping under the lock; the slots taken are ours alone.
        let lock = unsafe _TypedCore.lock(of: _shared)
        let core = unsafe _shared
        lock.lock()
        guard unsafe core.pointee.slots.pointee.obtainable >= count else {
            unsafe core.pointee.slots.pointee.failedAcquisitions &+= 1
            if let depot = unsafe core.pointee.depot {
                // Magazines may cache free slots: ask them all to flush, as `tryAcquire` does.
                unsafe _Depot.requestFlush(depot)
            }
            lock.unlock()
            return nil
        }
        // Under the lock only the bookkeeping: chain the slots through their link words, each
        // link tagged in bit 0 with whether its own slot is fresh (slots are 8-byte aligned).
        let linkOffset = unsafe core.pointee.slots.pointee.linkOffset
        var head: UnsafeMutableRawPointer?
        for _ in 0..<count {
            let taken = unsafe core.pointee.slots.pointee.take()!  // obtainable >= count was checked under the lock
            let tagged = unsafe UInt(bitPattern: head) | (taken.fresh ? 1 : 0)
            // Safe: the slot is in use and owned by this batch, so its link word is ours.
            unsafe (taken.slot + linkOffset).storeBytes(of: tagged, as: UInt.self)
            unsafe head = taken.slot
        }
        lock.unlock()
        // Outside the lock: place the values and clear the tags; the slots are ours alone.
        var next = unsafe head
        for index in 0..<count {
            let slot = unsafe next!
            let tagged = unsafe (slot + linkOffset).load(as: UInt.self)
            unsafe next = UnsafeMutableRawPointer(bitPattern: tagged & ~1)
            unsafe (slot + linkOffset).storeBytes(of: next, as: UnsafeMutableRawPointer?.self)
            _ = unsafe _TypedCore.place(value(index), in: slot, fresh: tagged & 1 == 1, of: core)
        }
        return unsafe SharedPoolBatch(shared: _shared, head: head, count: count)
    }

    /// Like `tryAcquire(count:_:)`, but traps when the slots are not all available.
    public func acquire(count: Int, _ value: (Int) -> Element) -> SharedPoolBatch<Element> {
        guard let batch = tryAcquire(count: count, value) else { _exhausted(wanted: count) }
        return batch
    }

    /// A snapshot of the pool's counters (taken under the lock). With magazines, what they
    /// hold and served is summed in (under the registry lock too): exact whenever no acquire
    /// or release is running, each figure within the operations running otherwise.
    public var statistics: PoolStatistics {
        guard let depot = unsafe _shared.pointee.depot else { return _withLock { $0.statistics } }
        let registry = _MagazineRegistry.shared
        registry.lock.lock()
        defer { registry.lock.unlock() }
        // Safe: the depot lives as long as the pool; both locks are held inside.
        return _withLock { unsafe _Depot.statistics(depot, core: $0.statistics) }
    }

    /// Every growth so far, oldest first.
    public var growthEvents: [GrowthEvent] { _withLock { $0.events } }

    /// The lock's counters: acquisitions, contended acquisitions, total wait. Read without
    /// taking the lock, so a monitor never adds contention.
    public var lockStatistics: LockStatistics {
        // Safe: the core and its lock are live while the pool is.
        unsafe _TypedCore.lock(of: _shared).statistics
    }

    private func _withLock<R>(_ body: (inout _SlotCore) -> R) -> R {
        // Safe: the core is live; the bookkeeping is reached under the lock only.
        let lock = unsafe _TypedCore.lock(of: _shared)
        lock.lock()
        defer { lock.unlock() }
        return unsafe body(&_shared.pointee.slots.pointee)
    }

    @usableFromInline
    func _exhausted(wanted: Int = 1) -> Never {
        let stats = statistics
        let cached = stats.cachedInMagazines > 0 ? " (\(stats.cachedInMagazines) more cached free in other threads' magazines, asked to flush)" : ""
        fatalError("FastAlloc: ThreadSafePool '\(stats.name)' is exhausted: \(stats.inUse) of \(stats.capacity) slots in use\(cached) (maximum \(stats.maxCapacity)), \(wanted) wanted; use tryAcquire to handle exhaustion")
    }

    @usableFromInline
    func _noInitializer() -> Never {
        fatalError("FastAlloc: ThreadSafePool '\(statistics.name)' has no initializer: give PoolConfig an `initialize` closure, or call acquire(_:) with a value")
    }
}

/// Owns one slot of a `ThreadSafePool`; `Sendable`, so it may be released on any thread.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: `_unsafePointer` is an in-use
/// slot of the core at `_shared`, owned by this handle alone (it is noncopyable), holding an
/// initialised Element; the core outlives the handle (see `ThreadSafePool`).
@safe
public struct SharedPoolHandle<Element: Sendable>: ~Copyable, PoolSlotHandle, @unchecked Sendable {
    // @unchecked Sendable: the handle owns its slot alone; returning it takes the pool's lock.
    // The slot pointer comes first on purpose: ThreadSanitizer reports a `mutating` access to a
    // noncopyable struct at the address its first word holds, and the slot is this handle's
    // alone, while the header is read by every thread.
    public let _unsafePointer: UnsafeMutablePointer<Element>
    @usableFromInline let _shared: UnsafeMutablePointer<_TypedCore<Element>>

    @inlinable
    init(shared: UnsafeMutablePointer<_TypedCore<Element>>, pointer: UnsafeMutablePointer<Element>) {
        // Safe: the pool hands over an in-use slot holding an initialised Element (see the type).
        unsafe _shared = shared
        unsafe _unsafePointer = pointer
    }

    @inlinable
    deinit {
        // Safe: this handle owns the in-use slot at `_unsafePointer`; hooks run outside the lock on
        // the value only this handle can reach, then the slot goes back under the lock.
        unsafe _TypedCore.prepareRelease(_unsafePointer, of: _shared)
        unsafe _TypedCore.sharedPut(UnsafeMutableRawPointer(_unsafePointer), into: _shared)
    }

    /// Returns the slot to its pool now, from any thread.
    @inlinable
    public consuming func release() {}
}

/// Slots acquired together from a `ThreadSafePool`; returned together under one lock.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: the slots chained from `_head`
/// are in use, owned by this batch alone (it is noncopyable), hold initialised Elements, and
/// their link words hold the chain; the core outlives them (see `ThreadSafePool`).
@safe
public struct SharedPoolBatch<Element: Sendable>: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: the batch owns its slots alone; returning them takes the pool's lock.
    // `_head` first, for ThreadSanitizer's sake: see SharedPoolHandle.
    var _head: UnsafeMutableRawPointer?
    let _shared: UnsafeMutablePointer<_TypedCore<Element>>
    /// Slots still in the batch.
    public private(set) var count: Int

    init(shared: UnsafeMutablePointer<_TypedCore<Element>>, head: UnsafeMutableRawPointer?, count: Int) {
        // Safe: the pool hands over `count` in-use slots chained from `head` (see the type).
        unsafe _shared = shared
        unsafe _head = head
        self.count = count
    }

    deinit {
        // Safe: see the type; the slots go back under the lock, and the core is destroyed after
        // it only if its pool is gone and these were its last slots.
        guard unsafe _head != nil else { return }
        let core = unsafe _shared
        let slots = unsafe core.pointee.slots
        let linkOffset = unsafe slots.pointee.linkOffset
        var next = unsafe _head
        while let slot = unsafe next {  // hooks outside the lock
            // Safe: batch slots are owned by the batch; their link word holds the next one.
            unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            unsafe _TypedCore.prepareRelease(slot.assumingMemoryBound(to: Element.self), of: core)
        }
        if unsafe core.pointee.depot != nil {
            // With magazines, under the registry lock too (see `putAll`): a rare, bulk path.
            var all: [UnsafeMutableRawPointer] = unsafe []
            unsafe all.reserveCapacity(count)
            unsafe next = _head
            while let slot = unsafe next {
                unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
                unsafe all.append(slot)
            }
            unsafe _TypedCore.putAll(all, into: core)
            return
        }
        let lock = unsafe _TypedCore.lock(of: core)
        lock.lock()
        unsafe next = _head
        while let slot = unsafe next {
            unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            unsafe slots.pointee.put(slot)
        }
        let last = unsafe slots.pointee.orphaned && slots.pointee.inUse == 0
        lock.unlock()
        if last { unsafe _TypedCore.destroy(core) }
    }

    /// Returns every slot still in the batch now.
    public consuming func release() {}

    public var isEmpty: Bool { count == 0 }

    /// Moves the first slot out of the batch into its own handle.
    public mutating func popFirst() -> SharedPoolHandle<Element>? {
        guard let slot = unsafe _head else { return nil }
        // Safe: batch slots are in use and owned by this batch; their link word holds the next one.
        unsafe _head = (slot + _shared.pointee.slots.pointee.linkOffset).load(as: UnsafeMutableRawPointer?.self)
        count -= 1
        return unsafe SharedPoolHandle(shared: _shared, pointer: slot.assumingMemoryBound(to: Element.self))
    }

    /// Calls `body` with each value in place, first to last.
    public mutating func forEach<Failure: Error>(_ body: (inout Element) throws(Failure) -> Void) throws(Failure) {
        let linkOffset = unsafe _shared.pointee.slots.pointee.linkOffset
        var next = unsafe _head
        while let slot = unsafe next {
            // Safe: as in popFirst; the slots stay owned by the batch during the walk.
            unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            try unsafe body(&slot.assumingMemoryBound(to: Element.self).pointee)
        }
    }
}
