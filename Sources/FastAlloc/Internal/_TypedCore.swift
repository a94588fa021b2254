/// The header of a pool of `Element` values: where its slots are, its hooks, and (for a
/// `ThreadSafePool`) its lock. Every pool owns one, allocated by `make` at a fixed address that
/// its handles point to.
///
/// The header never changes after `make`: threads read it without a lock. What changes (the
/// slot bookkeeping, the lock's counters) lives in separate allocations it points to, so a
/// read of the header never overlaps a write made under the lock.
///
/// Value invariant: a fresh slot is uninitialised; an in-use slot and a free slot that was used
/// before both hold an initialised `Element` (a released value stays for reuse until the pool
/// hands the slot out again or is destroyed).
///
/// Memory safety: `@safe`, a header of immutable fields. Everything that touches slots takes or
/// returns pointers, so callers mark it; the `unsafe` inside rests on the value invariant above
/// and on the core outliving every slot it handed out (`retire` and `destroyIfOrphanedAndEmpty`).
@safe @usableFromInline
struct _TypedCore<Element> {
    /// The slot bookkeeping: used by one thread, or under `lock`.
    @usableFromInline let slots: UnsafeMutablePointer<_SlotCore>
    @usableFromInline let hooks: _Hooks<Element>
    /// The lock of a `ThreadSafePool`; nil for unsynchronised pools.
    @usableFromInline let lock: _ContentionLock?
    /// The magazines of a `ThreadSafePool` with `magazineSize > 0`; nil otherwise.
    @usableFromInline let depot: UnsafeMutablePointer<_Depot>?

    /// Allocates and initialises a header and its slots for a validated configuration.
    static func make(_ config: PoolConfig<Element>, locked: Bool) -> UnsafeMutablePointer<_TypedCore<Element>> {
        // Safe: both allocations are new, one value each, initialised once here.
        let slots = UnsafeMutablePointer<_SlotCore>.allocate(capacity: 1)
        unsafe slots.initialize(to: _SlotCore(
            valueSize: MemoryLayout<Element>.size, alignment: config.alignment, linkAfterValue: true,
            capacity: config.capacity, maxCapacity: config.maxCapacity, growth: config.growth,
            order: config.order, name: config.name))
        let core = UnsafeMutablePointer<_TypedCore<Element>>.allocate(capacity: 1)
        let lock = locked ? _ContentionLock() : nil
        let depot = unsafe locked && config.magazineSize > 0
            ? _Depot.make(magazineSize: config.magazineSize, slots: slots, lock: lock!) : nil
        unsafe core.initialize(to: _TypedCore(slots: slots, hooks: _Hooks(config), lock: lock, depot: depot))
        return unsafe core
    }

    /// Puts `value` in a slot just taken: initialises a fresh slot, replaces the old value of a
    /// reused one. Then runs the acquire hooks.
    ///
    /// Static over the core's address, reading only the immutable `hooks`: a thread-safe pool
    /// calls it outside its lock while another thread may be changing `slots`.
    @inlinable @inline(__always)
    static func place(
        _ value: consuming Element, in slot: UnsafeMutableRawPointer, fresh: Bool,
        of core: UnsafeMutablePointer<_TypedCore<Element>>
    ) -> UnsafeMutablePointer<Element> {
        let pointer: UnsafeMutablePointer<Element>
        if fresh {
            // Safe: a fresh slot is uninitialised memory inside a live chunk, aligned for Element.
            unsafe pointer = slot.initializeMemory(as: Element.self, to: value)
        } else {
            // Safe: a reused slot holds an initialised Element (the value invariant above).
            unsafe pointer = slot.assumingMemoryBound(to: Element.self)
            unsafe pointer.pointee = value
        }
        // Safe: `core` is live while a slot of it is taken; the hooks get the initialised slot.
        unsafe core.pointee.hooks.onAcquire?(pointer)
        return unsafe pointer
    }

    /// Hands out a slot's retained value, or a new one from the configured initialiser for a
    /// fresh slot. Then runs the acquire hooks.
    @inlinable @inline(__always)
    static func reuse(
        _ slot: UnsafeMutableRawPointer, fresh: Bool, of core: UnsafeMutablePointer<_TypedCore<Element>>
    ) -> UnsafeMutablePointer<Element> {
        let pointer: UnsafeMutablePointer<Element>
        if fresh {
            // Safe: a fresh slot is uninitialised memory inside a live chunk, aligned for Element;
            // pools check that an initialiser exists before taking a slot for `acquire()`.
            unsafe pointer = slot.initializeMemory(as: Element.self, to: core.pointee.hooks.initialize.unsafelyUnwrapped())
        } else {
            // Safe: a reused slot holds an initialised Element (the value invariant above).
            unsafe pointer = slot.assumingMemoryBound(to: Element.self)
        }
        // Safe: as in `place`.
        unsafe core.pointee.hooks.onAcquire?(pointer)
        return unsafe pointer
    }

    /// Runs the release hooks; the caller then puts the slot back.
    @inlinable @inline(__always)
    static func prepareRelease(_ pointer: UnsafeMutablePointer<Element>, of core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: the caller owns the in-use slot at `pointer`, so `core` is live and the slot
        // holds an initialised Element.
        unsafe core.pointee.hooks.onRelease?(pointer)
    }

    /// Destroys the core: deinitialises every retained value and frees all storage. Only when
    /// no slot is in use (a core with magazines: after `_Depot.tearDown`).
    @usableFromInline
    static func destroy(_ core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: free slots that were used hold initialised Elements (the value invariant); fresh
        // slots hold nothing, and no slot is in use. Each allocation is freed once, here, and
        // nothing reaches the core afterwards (its pool is gone or going, no handle is out).
        let slots = unsafe core.pointee.slots
        unsafe slots.pointee.forEachFreeUsedSlot { unsafe $0.assumingMemoryBound(to: Element.self).deinitialize(count: 1) }
        unsafe slots.pointee.freeStorage()
        unsafe slots.deinitialize(count: 1)
        unsafe slots.deallocate()
        unsafe core.pointee.lock?.destroy()
        unsafe core.deinitialize(count: 1)
        unsafe core.deallocate()
    }

    /// Called when the pool object dies. With no slot in use the storage goes at once; otherwise
    /// debug builds trap (a handle outlived its pool) and release builds leave the storage to the
    /// last handle, which frees it when it comes back.
    static func retire(_ core: UnsafeMutablePointer<_TypedCore<Element>>, kind: String) {
        // Safe: the dying pool's core is live; destroyed only when no handle can reach it.
        let inUse = unsafe core.pointee.slots.pointee.inUse
        if inUse == 0 {
            unsafe destroy(core)
            return
        }
        #if DEBUG
        fatalError(unsafe "FastAlloc: \(kind) '\(core.pointee.slots.pointee.name)' was destroyed while \(inUse) handle(s) still hold slots: a handle outlived its pool")
        #else
        unsafe core.pointee.slots.pointee.orphaned = true
        #endif
    }

    /// After a release: frees an orphaned core once its last slot is back.
    @inlinable @inline(__always)
    static func destroyIfOrphanedAndEmpty(_ core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: called by the owner of a slot just given back, so the core is still live; an
        // orphaned core with nothing in use has nobody left to reach it.
        if unsafe _slowPath(core.pointee.slots.pointee.orphaned) && core.pointee.slots.pointee.inUse == 0 {
            unsafe destroy(core)
        }
    }
}
