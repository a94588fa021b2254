import Synchronization

/// A bounded multi-producer, single-consumer ring of slot addresses: how a slot released on
/// another thread goes home to the thread that owns its pool (packet buffers' local pools, whose
/// `_Route` holds the cells and explains why the ring never overflows). Written once against
/// `_AtomicSteps`, for production (`_HardwareSteps`) and the interleaving checker
/// (docs/INTERLEAVINGS.md, `ReturnRingInterleavingTests`).
///
/// The cells: `ring`, `mask + 1` cells of slot addresses (0: empty); `tail`, the pushes so far
/// (the next push's index); `drained`, the slots the owner took back so far (the next cell it
/// reads).
///
/// A push takes its index with one fetch-and-add on `tail` (counting itself before it
/// publishes, so a reader never sees more drained than pushed) and publishes the address with
/// a releasing store into its cell. The drain reads cells in order with acquiring loads, clears
/// each, and stops at the first empty one (a pusher between its fetch-and-add and its store is
/// taken by a later drain); it publishes its count with a releasing store that a reader's
/// acquiring load pairs with.
@usableFromInline
package enum _ReturnRing {
    /// Pushes `slot`, from any thread. The caller owns the slot until this returns; afterwards
    /// the owner of the ring does.
    @inlinable @inline(__always)
    package static func push<Steps: _AtomicSteps>(
        _ slot: UnsafeMutableRawPointer, ring: UnsafeMutablePointer<Atomic<UInt>>, mask: Int,
        tail: borrowing Atomic<UInt>, steps: Steps
    ) {
        let index = steps.wrappingAdd(1, to: tail, ordering: .acquiringAndReleasing)
        // Safe: `ring` holds `mask + 1` cells; the cell at this index is empty (see `_Route`).
        let cell = unsafe ring + (Int(truncatingIfNeeded: index) & mask)
        unsafe steps.store(UInt(bitPattern: slot), to: cell.pointee, ordering: .releasing)
    }

    /// Takes back every slot whose push is complete, in push order, handing each to `put`;
    /// returns how many. The owner thread only (one drainer at a time).
    @inlinable @inline(__always)
    package static func drain<Steps: _AtomicSteps>(
        ring: UnsafeMutablePointer<Atomic<UInt>>, mask: Int, drained: borrowing Atomic<UInt>, steps: Steps,
        put: (UnsafeMutableRawPointer) -> Void
    ) -> Int {
        let start = steps.load(drained, ordering: .relaxed)  // single writer: this thread
        var next = start
        while true {
            // Safe: `ring` holds `mask + 1` cells.
            let cell = unsafe ring + (Int(truncatingIfNeeded: next) & mask)
            let address = unsafe steps.load(cell.pointee, ordering: .acquiring)
            if address == 0 { break }
            // Cleared before the slot is put back: the cell is empty before the slot can be
            // taken, handed on and pushed again (see `_Route`).
            unsafe steps.store(0, to: cell.pointee, ordering: .relaxed)
            // Safe: the acquiring load received the address the pusher published; the slot is
            // the owner's now.
            unsafe put(UnsafeMutableRawPointer(bitPattern: address).unsafelyUnwrapped)
            next &+= 1
        }
        guard next != start else { return 0 }
        steps.store(next, to: drained, ordering: .releasing)
        return Int(next &- start)
    }

    /// The two counters from any thread: `drained` first, then `tail`, so pushed >= drained.
    @inlinable
    package static func counts<Steps: _AtomicSteps>(
        tail: borrowing Atomic<UInt>, drained: borrowing Atomic<UInt>, steps: Steps
    ) -> (pushed: UInt, drained: UInt) {
        let drainedSoFar = steps.load(drained, ordering: .acquiring)
        let pushedSoFar = steps.load(tail, ordering: .acquiring)
        return (pushedSoFar, drainedSoFar)
    }
}
