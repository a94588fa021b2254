/// Slots acquired together from an unsynchronised pool, all or nothing.
///
/// The batch chains its slots through their link words, so it needs no storage of its own: no
/// allocation however many slots it holds. Take handles out with `popFirst()`, or work on all
/// values in place with `forEach`; whatever is still in the batch when it dies goes back.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: the slots chained from `_head`
/// are in use, owned by this batch alone (it is noncopyable and not `Sendable`), hold
/// initialised Elements, and their link words hold the chain; the core outlives them.
@safe
public struct PoolBatch<Element>: ~Copyable {
    @usableFromInline var _head: UnsafeMutableRawPointer?  // first: see PoolHandle
    @usableFromInline let _core: UnsafeMutablePointer<_TypedCore<Element>>
    /// Slots still in the batch.
    public private(set) var count: Int

    init(core: UnsafeMutablePointer<_TypedCore<Element>>, head: UnsafeMutableRawPointer?, count: Int) {
        // Safe: the pool hands over `count` in-use slots chained from `head` (see the type).
        unsafe _core = core
        unsafe _head = head
        self.count = count
    }

    deinit {
        // An empty batch owns nothing and must not touch the core: its pool may be gone.
        guard unsafe _head != nil else { return }
        let linkOffset = unsafe _core.pointee.slots.pointee.linkOffset
        var next = unsafe _head
        while let slot = unsafe next {
            // Safe: batch slots are in use and owned by this batch; their link word holds the
            // next one, read before the slot is given back.
            unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            unsafe _TypedCore.prepareRelease(slot.assumingMemoryBound(to: Element.self), of: _core)
            unsafe _core.pointee.slots.pointee.put(slot)
        }
        unsafe _TypedCore.destroyIfOrphanedAndEmpty(_core)
    }

    /// Returns every slot still in the batch now.
    public consuming func release() {}

    /// Whether the batch is empty.
    public var isEmpty: Bool { count == 0 }

    /// Moves the first slot out of the batch into its own handle.
    public mutating func popFirst() -> PoolHandle<Element>? {
        guard let slot = unsafe _head else { return nil }
        // Safe: batch slots are in use and owned by this batch; their link word holds the next one.
        unsafe _head = (slot + _core.pointee.slots.pointee.linkOffset).load(as: UnsafeMutableRawPointer?.self)
        count -= 1
        // Safe: an in-use slot holds an initialised Element.
        return unsafe PoolHandle(core: _core, pointer: slot.assumingMemoryBound(to: Element.self))
    }

    /// Calls `body` with each value in place, first to last.
    public mutating func forEach<Failure: Error>(_ body: (inout Element) throws(Failure) -> Void) throws(Failure) {
        var next = unsafe _head
        while let slot = unsafe next {
            // Safe: as in popFirst; the slots stay owned by the batch during the walk.
            unsafe next = (slot + _core.pointee.slots.pointee.linkOffset).load(as: UnsafeMutableRawPointer?.self)
            try unsafe body(&slot.assumingMemoryBound(to: Element.self).pointee)
        }
    }
}

@available(*, unavailable, message: "a PoolBatch must be released on its pool's thread")
extension PoolBatch: Sendable {}
