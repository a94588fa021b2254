import Synchronization

/// A stack of slots that any thread pushes onto and one owner empties at once: how a slot
/// released on another thread goes home to the thread that owns its pool (packet buffers'
/// local pools). Written once against `_AtomicSteps`, for production (`_HardwareSteps`) and the
/// interleaving checker (docs/INTERLEAVINGS.md).
///
/// The cells: `head`, the first slot's address or 0; `pushed` and `drained`, the slots pushed
/// and taken back so far (statistics). The slots chain through a link word at `linkOffset`.
///
/// A Treiber-stack push (one compare-and-swap, retried while other pushers win) and a drain
/// that takes the whole stack with one exchange. Safe from ABA because nobody pops single
/// slots: a slot's link is written only by the thread that owns the slot, before the releasing
/// CAS publishes it, and read only by the owner after the acquiring exchange received it.
///
/// Counting: `pushed` grows before the slots are published, `drained` after they are taken,
/// with a releasing store that a reader's acquiring load pairs with; so a reader that loads
/// `drained` and then `pushed` (`counts`) always finds pushed >= drained. (Counting after the
/// CAS, as this code once did, let a reader see more drained than pushed: the interleaving
/// checker found it, `ReturnStackInterleavingTests`.)
@usableFromInline
package enum _ReturnStack {
    /// Pushes `count` slots chained first -> ... -> last through their link words (the caller
    /// wrote every link but the last one's, which is written here), from any thread. A single
    /// slot is a chain of one (`first == last`).
    ///
    /// The caller owns every slot of the chain until this returns; afterwards none of them.
    @inlinable @inline(__always)
    package static func push<Steps: _AtomicSteps>(
        first: UnsafeMutableRawPointer, last: UnsafeMutableRawPointer, count: Int, linkOffset: Int,
        onto head: borrowing Atomic<UInt>, pushed: borrowing Atomic<UInt>, steps: Steps
    ) {
        _ = steps.wrappingAdd(UInt(truncatingIfNeeded: count), to: pushed, ordering: .relaxed)
        var current = steps.load(head, ordering: .relaxed)
        // Safe: the caller owns the chain, so `last`'s link word (inside the slot) is ours
        // until the exchange below publishes the chain.
        let lastLink = unsafe last + linkOffset
        let desired = UInt(bitPattern: first)
        while true {
            unsafe steps.storeWord(current, at: lastLink)
            let (exchanged, original) = steps.weakCompareExchange(
                head, expected: current, desired: desired, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// Takes every slot off the stack and hands each to `put`, in stack order (the most recently
    /// pushed first); returns how many. The owner thread only (one drainer at a time).
    @inlinable @inline(__always)
    package static func drain<Steps: _AtomicSteps>(
        _ head: borrowing Atomic<UInt>, drained: borrowing Atomic<UInt>, linkOffset: Int, steps: Steps,
        put: (UnsafeMutableRawPointer) -> Void
    ) -> Int {
        guard steps.load(head, ordering: .relaxed) != 0 else { return 0 }
        var next = steps.exchange(head, with: 0, ordering: .acquiring)
        var count = 0
        while next != 0 {
            // Safe: the acquiring exchange received the chain, and with it the pushers' link
            // writes (their releasing CASes): every slot on it is now the caller's, its link
            // word read before `put` may reuse it.
            let slot = unsafe UnsafeMutableRawPointer(bitPattern: next).unsafelyUnwrapped
            next = unsafe steps.loadWord(at: slot + linkOffset)
            unsafe put(slot)
            count += 1
        }
        // Single writer (the owner); releasing so that a reader who sees this figure also sees
        // the pushes it counts (see the type).
        steps.store(steps.load(drained, ordering: .relaxed) &+ UInt(count), to: drained, ordering: .releasing)
        return count
    }

    /// The two counters from any thread: `drained` first, then `pushed`, so pushed >= drained.
    @inlinable
    package static func counts<Steps: _AtomicSteps>(
        pushed: borrowing Atomic<UInt>, drained: borrowing Atomic<UInt>, steps: Steps
    ) -> (pushed: UInt, drained: UInt) {
        let drainedSoFar = steps.load(drained, ordering: .acquiring)
        let pushedSoFar = steps.load(pushed, ordering: .acquiring)
        return (pushedSoFar, drainedSoFar)
    }

    /// Slots pushed and not drained yet (any thread): in flight or on the stack.
    @inlinable
    package static func pending<Steps: _AtomicSteps>(
        pushed: borrowing Atomic<UInt>, drained: borrowing Atomic<UInt>, steps: Steps
    ) -> Int {
        let (pushedSoFar, drainedSoFar) = counts(pushed: pushed, drained: drained, steps: steps)
        // Never below 0 (see `counts`); the guard is for the reader's peace of mind only.
        return pushedSoFar >= drainedSoFar ? Int(pushedSoFar - drainedSoFar) : 0
    }
}
