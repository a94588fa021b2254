/// A `_SlotCore` holding `Element` values, with the pool's hooks. Every pool owns one, allocated
/// by `make` at a fixed address that its handles point to.
///
/// Value invariant: a fresh slot is uninitialised; an in-use slot and a free slot that was used
/// before both hold an initialised `Element` (a released value stays for reuse until the pool
/// hands the slot out again or is destroyed).
@usableFromInline
struct _TypedCore<Element> {
    @usableFromInline var slots: _SlotCore
    @usableFromInline let hooks: _Hooks<Element>

    /// Allocates and initialises a core for a validated configuration.
    static func make(_ config: PoolConfig<Element>) -> UnsafeMutablePointer<_TypedCore<Element>> {
        let core = UnsafeMutablePointer<_TypedCore<Element>>.allocate(capacity: 1)
        core.initialize(to: _TypedCore(
            slots: _SlotCore(
                valueSize: MemoryLayout<Element>.size, alignment: config.alignment, linkAfterValue: true,
                capacity: config.capacity, maxCapacity: config.maxCapacity, growth: config.growth,
                order: config.order, name: config.name),
            hooks: _Hooks(config)))
        return core
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
            pointer = slot.initializeMemory(as: Element.self, to: value)
        } else {
            // Safe: a reused slot holds an initialised Element (the value invariant above).
            pointer = slot.assumingMemoryBound(to: Element.self)
            pointer.pointee = value
        }
        core.pointee.hooks.onAcquire?(pointer)
        return pointer
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
            pointer = slot.initializeMemory(as: Element.self, to: core.pointee.hooks.initialize.unsafelyUnwrapped())
        } else {
            // Safe: a reused slot holds an initialised Element (the value invariant above).
            pointer = slot.assumingMemoryBound(to: Element.self)
        }
        core.pointee.hooks.onAcquire?(pointer)
        return pointer
    }

    /// Runs the release hooks; the caller then puts the slot back.
    @inlinable @inline(__always)
    static func prepareRelease(_ pointer: UnsafeMutablePointer<Element>, of core: UnsafeMutablePointer<_TypedCore<Element>>) {
        core.pointee.hooks.onRelease?(pointer)
    }

    /// Destroys the core: deinitialises every retained value and frees all storage. Only when
    /// no slot is in use.
    @usableFromInline
    static func destroy(_ core: UnsafeMutablePointer<_TypedCore<Element>>) {
        // Safe: free slots that were used hold initialised Elements (the value invariant); fresh
        // slots hold nothing, and no slot is in use.
        core.pointee.slots.forEachFreeUsedSlot { $0.assumingMemoryBound(to: Element.self).deinitialize(count: 1) }
        core.pointee.slots.freeStorage()
        core.deinitialize(count: 1)
        core.deallocate()
    }

    /// Called when the pool object dies. With no slot in use the storage goes at once; otherwise
    /// debug builds trap (a handle outlived its pool) and release builds leave the storage to the
    /// last handle, which frees it when it comes back.
    static func retire(_ core: UnsafeMutablePointer<_TypedCore<Element>>, kind: String) {
        let inUse = core.pointee.slots.inUse
        if inUse == 0 {
            destroy(core)
            return
        }
        #if DEBUG
        fatalError("FastAlloc: \(kind) '\(core.pointee.slots.name)' was destroyed while \(inUse) handle(s) still hold slots: a handle outlived its pool")
        #else
        core.pointee.slots.orphaned = true
        #endif
    }

    /// After a release: frees an orphaned core once its last slot is back.
    @inlinable @inline(__always)
    static func destroyIfOrphanedAndEmpty(_ core: UnsafeMutablePointer<_TypedCore<Element>>) {
        if _slowPath(core.pointee.slots.orphaned) && core.pointee.slots.inUse == 0 {
            destroy(core)
        }
    }
}
