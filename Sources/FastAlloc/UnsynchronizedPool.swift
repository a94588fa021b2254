/// What `FixedPool`, `GrowingPool` and `ThreadLocalPool` share: a pool used from one thread at a
/// time with no locks and no atomics. Each counter has one writer, the owning thread.
///
/// Pools keep a released value in its slot for the next user (see `Poolable`); it is
/// deinitialised when the slot is reused with a new value or when the pool is destroyed.
///
/// Memory safety: `@safe`; its unsafe storage is its core, and every `unsafe` in it rests on
/// this: `_core` is allocated in `init` and lives until the pool dies (or, in release builds,
/// until the last slot comes back: `_TypedCore.retire`), and it is used on one thread at a time
/// (the pool is not `Sendable`). The raw-slot API (`unsafeAcquire`, `unsafeRelease`) has unsafe
/// types, so its callers mark it.
@safe
public class UnsynchronizedPool<Element> {
    @usableFromInline let _core: UnsafeMutablePointer<_TypedCore<Element>>
    let kind: String

    init(validated config: PoolConfig<Element>, kind: String) {
        // Safe: the pool owns the new core until deinit retires it.
        unsafe _core = _TypedCore.make(config, locked: false)
        self.kind = kind
    }

    deinit {
        // Safe: the core is live; `retire` frees it only when no slot is out.
        unsafe _TypedCore.retire(_core, kind: kind)
    }

    /// A handle to one slot of this pool.
    public typealias Handle = PoolHandle<Element>

    // MARK: One slot

    /// Puts `value` in a free slot (growing if the strategy allows) and returns its handle.
    /// Traps, naming the pool, when it is exhausted and cannot grow; see `tryAcquire(_:)`.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public final func acquire(_ value: consuming Element) -> PoolHandle<Element> {
        // Safe: the core is live (type comment); the slot just taken is handed to the new handle.
        guard let taken = unsafe _core.pointee.slots.pointee.take() else { _exhausted() }
        return unsafe PoolHandle(core: _core, pointer: _TypedCore.place(value, in: taken.slot, fresh: taken.fresh, of: _core))
    }

    /// Like `acquire(_:)`, but returns nil (and counts a failed acquisition) when exhausted.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public final func tryAcquire(_ value: consuming Element) -> PoolHandle<Element>? {
        // Safe: as in `acquire(_:)`.
        guard let taken = unsafe _core.pointee.slots.pointee.take() else { return nil }
        return unsafe PoolHandle(core: _core, pointer: _TypedCore.place(value, in: taken.slot, fresh: taken.fresh, of: _core))
    }

    /// Hands out a slot's retained value (reset by the acquire hooks), or a new value from the
    /// configured `initialize` closure for a slot never used. Traps without an initialiser.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public final func acquire() -> PoolHandle<Element> {
        guard let handle = tryAcquire() else { _exhausted() }
        return handle
    }

    /// Like `acquire()`, but returns nil when exhausted.
    @inlinable @inline(__always)  // the hot path: measured, inlining matters (Benchmarks/)
    public final func tryAcquire() -> PoolHandle<Element>? {
        // Safe: as in `acquire(_:)`; `reuse` needs the initializer checked here first.
        if unsafe _core.pointee.hooks.initialize == nil { _noInitializer() }
        guard let taken = unsafe _core.pointee.slots.pointee.take() else { return nil }
        return unsafe PoolHandle(core: _core, pointer: _TypedCore.reuse(taken.slot, fresh: taken.fresh, of: _core))
    }

    // MARK: Batches

    /// Acquires `count` slots at once, all or nothing, with `value(i)` in the i-th. Traps when
    /// the pool cannot supply them all.
    public final func acquire(count: Int, _ value: (Int) -> Element) -> PoolBatch<Element> {
        guard let batch = tryAcquire(count: count, value) else { _exhausted(wanted: count) }
        return batch
    }

    /// Acquires `count` slots at once, all or nothing; nil (one failed acquisition counted) when
    /// the pool, grown to its maximum, could not supply them all. Nothing is taken then.
    public final func tryAcquire(count: Int, _ value: (Int) -> Element) -> PoolBatch<Element>? {
        precondition(count >= 0, "FastAlloc: acquire(count:) needs count >= 0")
        // Safe: the core is live (type comment); each slot taken is chained into the new batch.
        guard unsafe _core.pointee.slots.pointee.obtainable >= count else {
            unsafe _core.pointee.slots.pointee.failedAcquisitions &+= 1
            return nil
        }
        let linkOffset = unsafe _core.pointee.slots.pointee.linkOffset
        var head: UnsafeMutableRawPointer?
        var tail: UnsafeMutableRawPointer?
        for index in 0..<count {
            guard let taken = unsafe _core.pointee.slots.pointee.take() else {
                fatalError(unsafe "FastAlloc: pool '\(_core.pointee.slots.pointee.name)': internal error, batch slot \(index) missing")
            }
            _ = unsafe _TypedCore.place(value(index), in: taken.slot, fresh: taken.fresh, of: _core)
            // Safe: the slot is in use and owned by the batch being built, so its link word is ours.
            unsafe (taken.slot + linkOffset).storeBytes(of: nil, as: UnsafeMutableRawPointer?.self)
            if let tail = unsafe tail {
                unsafe (tail + linkOffset).storeBytes(of: taken.slot, as: UnsafeMutableRawPointer?.self)
            } else {
                unsafe head = taken.slot
            }
            unsafe tail = taken.slot
        }
        return unsafe PoolBatch(core: _core, head: head, count: count)
    }

    // MARK: Raw slots

    /// Takes a slot holding `value` and returns its address, for code that must hand an address
    /// to C and take it back later; nil when exhausted.
    ///
    /// Rules: pass the pointer to `unsafeRelease(_:)` exactly once, on this pool's thread, and
    /// do not use it afterwards. Debug builds trap on a double release or a foreign pointer;
    /// release builds do not check. Prefer `acquire(_:)`, whose handle enforces all this.
    @inlinable
    public final func unsafeAcquire(_ value: consuming Element) -> UnsafeMutablePointer<Element>? {
        // Safe here: the core is live; what happens to the pointer is the caller's (the rules).
        guard let taken = unsafe _core.pointee.slots.pointee.take() else { return nil }
        return unsafe _TypedCore.place(value, in: taken.slot, fresh: taken.fresh, of: _core)
    }

    /// Returns a slot taken with `unsafeAcquire(_:)`. See its rules.
    @inlinable
    public final func unsafeRelease(_ pointer: UnsafeMutablePointer<Element>) {
        // Safe only under the rules above: `pointer` is an in-use slot of this pool, given back once.
        unsafe _TypedCore.prepareRelease(pointer, of: _core)
        unsafe _core.pointee.slots.pointee.put(UnsafeMutableRawPointer(pointer))
    }

    // MARK: Statistics
    // Safe (all): reads of the live core's bookkeeping, on the pool's one thread.

    /// A snapshot of the counters.
    public final var statistics: PoolStatistics { unsafe _core.pointee.slots.pointee.statistics }

    /// Slots the pool holds now.
    public final var capacity: Int { unsafe _core.pointee.slots.pointee.capacity }

    /// Slots free now without growing.
    public final var available: Int { unsafe _core.pointee.slots.pointee.capacity - _core.pointee.slots.pointee.inUse }

    /// The pool's name, as traps and statistics give it.
    public final var name: String { unsafe _core.pointee.slots.pointee.name }

    /// Bytes from one slot to the next (value, link word and alignment padding).
    public final var slotStride: Int { unsafe _core.pointee.slots.pointee.stride }

    // MARK: Traps
    // Safe (both): reads of the live core's bookkeeping (a copy, read only, in `_exhausted`).

    @usableFromInline
    final func _exhausted(wanted: Int = 1) -> Never {
        let slots = unsafe _core.pointee.slots.pointee
        fatalError("FastAlloc: \(kind) '\(slots.name)' is exhausted: \(slots.inUse) of \(slots.capacity) slots in use (maximum \(slots.maxCapacity)), \(wanted) wanted; use tryAcquire to handle exhaustion")
    }

    @usableFromInline
    final func _noInitializer() -> Never {
        fatalError(unsafe "FastAlloc: \(kind) '\(_core.pointee.slots.pointee.name)' has no initializer: give PoolConfig an `initialize` closure, or call acquire(_:) with a value")
    }
}

@available(*, unavailable, message: "an unsynchronised pool belongs to one thread; use ThreadSafePool to share one")
extension UnsynchronizedPool: Sendable {}
