#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

// The package's concurrent algorithms (the pools' lock, the packet buffers' return stack, the
// batch moves that magazines will make) are written once against `_AtomicSteps`, the few
// steps they take on shared memory. Production runs them with `_HardwareSteps`, which
// specialises to the very instructions the code had before it was generic (each method is one
// `Synchronization.Atomic` call or one plain load or store, inlined, its ordering folded). The
// interleaving checker (Tests/Interleavings, docs/INTERLEAVINGS.md) runs the same source with
// its own steps: every atomic step a scheduling point, every plain access checked against
// happens-before.

/// The ordering of an atomic load (Synchronization's `AtomicLoadOrdering`, as a value that a
/// model can inspect; `_HardwareSteps` folds it to the constant the `Atomic` call needs).
@usableFromInline
package enum _LoadOrdering: Sendable {
    case relaxed, acquiring, sequentiallyConsistent
}

/// The ordering of an atomic store (Synchronization's `AtomicStoreOrdering`).
@usableFromInline
package enum _StoreOrdering: Sendable {
    case relaxed, releasing, sequentiallyConsistent
}

/// The ordering of an atomic read-modify-write (Synchronization's `AtomicUpdateOrdering`).
@usableFromInline
package enum _UpdateOrdering: Sendable {
    case relaxed, acquiring, releasing, acquiringAndReleasing, sequentiallyConsistent
}

/// The steps a concurrent algorithm of this package takes on memory other threads see: atomic
/// operations on word-sized cells (`Atomic<UInt>`), and plain loads and stores of words in
/// slots (link words) that the calling thread owns at that moment.
///
/// The contract an algorithm keeps so that a model can check it: every access to shared memory
/// goes through these steps (nothing else is shared); a plain access (`loadWord`,
/// `storeWord`) touches a word no other thread may touch concurrently, which means: every
/// earlier access to it by another thread happens before this one, through the orderings of the
/// atomic steps. The model reports a plain access that breaks this (a data race: the word was
/// read after its slot was given away, or written before it was received).
///
/// Words are `UInt`: slot addresses and counters on the 64-bit platforms the package builds for.
@usableFromInline
package protocol _AtomicSteps {
    func load(_ cell: borrowing Atomic<UInt>, ordering: _LoadOrdering) -> UInt
    func store(_ value: UInt, to cell: borrowing Atomic<UInt>, ordering: _StoreOrdering)
    func exchange(_ cell: borrowing Atomic<UInt>, with value: UInt, ordering: _UpdateOrdering) -> UInt
    /// A strong compare-and-swap: fails only when the cell does not hold `expected`.
    func compareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering) -> (exchanged: Bool, original: UInt)
    /// A compare-and-swap that may also fail spuriously (callers retry in a loop).
    func weakCompareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering) -> (exchanged: Bool, original: UInt)
    /// Adds with wraparound; returns the value before.
    func wrappingAdd(_ amount: UInt, to cell: borrowing Atomic<UInt>, ordering: _UpdateOrdering) -> UInt
    /// Waits, with relaxed loads, while `cell` holds `value` (a spin-wait). `looks` counts the
    /// loads across calls, for a back-off policy. A model treats this as one blocking step: the
    /// thread cannot run until another thread changes the cell.
    func spinWhile(_ cell: borrowing Atomic<UInt>, equals value: UInt, looks: inout Int)
    /// A plain (non-atomic) load of the word at `address`, which the caller owns.
    func loadWord(at address: UnsafeMutableRawPointer) -> UInt
    /// A plain (non-atomic) store of the word at `address`, which the caller owns.
    func storeWord(_ value: UInt, at address: UnsafeMutableRawPointer)
    /// A monotonic clock in nanoseconds (a model returns a logical clock).
    func nanoseconds() -> UInt64
}

extension _AtomicSteps {
    /// A single-writer increment: a relaxed load and a relaxed store, no read-modify-write (plain
    /// moves on x86-64). Sound only while one thread at a time writes the cell (the lock holder,
    /// or the owner thread); readers on other threads see each figure exactly, a little late.
    @inlinable @inline(__always)
    package func addSingleWriter(_ amount: UInt, to cell: borrowing Atomic<UInt>) {
        store(load(cell, ordering: .relaxed) &+ amount, to: cell, ordering: .relaxed)
    }
}

/// The machine's own atomics: each step is the one `Synchronization.Atomic` operation (or one
/// plain load or store) it names. Every method is `@inline(__always)` and switches on a
/// constant ordering, so a generic algorithm specialised for this type compiles to exactly the
/// instructions it would with the `Atomic` calls written out (checked in Benchmarks/).
@usableFromInline
package struct _HardwareSteps: _AtomicSteps {
    @inlinable @inline(__always)
    package init() {}

    @inlinable @inline(__always)
    package func load(_ cell: borrowing Atomic<UInt>, ordering: _LoadOrdering) -> UInt {
        switch ordering {
        case .relaxed: cell.load(ordering: .relaxed)
        case .acquiring: cell.load(ordering: .acquiring)
        case .sequentiallyConsistent: cell.load(ordering: .sequentiallyConsistent)
        }
    }

    @inlinable @inline(__always)
    package func store(_ value: UInt, to cell: borrowing Atomic<UInt>, ordering: _StoreOrdering) {
        switch ordering {
        case .relaxed: cell.store(value, ordering: .relaxed)
        case .releasing: cell.store(value, ordering: .releasing)
        case .sequentiallyConsistent: cell.store(value, ordering: .sequentiallyConsistent)
        }
    }

    @inlinable @inline(__always)
    package func exchange(_ cell: borrowing Atomic<UInt>, with value: UInt, ordering: _UpdateOrdering) -> UInt {
        switch ordering {
        case .relaxed: cell.exchange(value, ordering: .relaxed)
        case .acquiring: cell.exchange(value, ordering: .acquiring)
        case .releasing: cell.exchange(value, ordering: .releasing)
        case .acquiringAndReleasing: cell.exchange(value, ordering: .acquiringAndReleasing)
        case .sequentiallyConsistent: cell.exchange(value, ordering: .sequentiallyConsistent)
        }
    }

    @inlinable @inline(__always)
    package func compareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        // The failure ordering may not be stronger than the success ordering's load part; the
        // pairs below are the ones Synchronization accepts. Folded away for constant arguments.
        switch (successOrdering, failureOrdering) {
        case (.relaxed, .relaxed):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .relaxed, failureOrdering: .relaxed)
        case (.acquiring, .relaxed):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .acquiring, failureOrdering: .relaxed)
        case (.acquiring, _):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .acquiring, failureOrdering: .acquiring)
        case (.releasing, _):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .releasing, failureOrdering: .relaxed)
        case (.acquiringAndReleasing, .relaxed):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .acquiringAndReleasing, failureOrdering: .relaxed)
        case (.acquiringAndReleasing, _):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
        case (.sequentiallyConsistent, _):
            cell.compareExchange(expected: expected, desired: desired, successOrdering: .sequentiallyConsistent, failureOrdering: .sequentiallyConsistent)
        case (.relaxed, _):
            preconditionFailure("compareExchange: a failure ordering stronger than a relaxed success ordering")
        }
    }

    @inlinable @inline(__always)
    package func weakCompareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        switch (successOrdering, failureOrdering) {
        case (.relaxed, .relaxed):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .relaxed, failureOrdering: .relaxed)
        case (.acquiring, .relaxed):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .acquiring, failureOrdering: .relaxed)
        case (.acquiring, _):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .acquiring, failureOrdering: .acquiring)
        case (.releasing, _):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .releasing, failureOrdering: .relaxed)
        case (.acquiringAndReleasing, .relaxed):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .acquiringAndReleasing, failureOrdering: .relaxed)
        case (.acquiringAndReleasing, _):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .acquiringAndReleasing, failureOrdering: .acquiring)
        case (.sequentiallyConsistent, _):
            cell.weakCompareExchange(expected: expected, desired: desired, successOrdering: .sequentiallyConsistent, failureOrdering: .sequentiallyConsistent)
        case (.relaxed, _):
            preconditionFailure("weakCompareExchange: a failure ordering stronger than a relaxed success ordering")
        }
    }

    @inlinable @inline(__always)
    package func wrappingAdd(_ amount: UInt, to cell: borrowing Atomic<UInt>, ordering: _UpdateOrdering) -> UInt {
        switch ordering {
        case .relaxed: cell.wrappingAdd(amount, ordering: .relaxed).oldValue
        case .acquiring: cell.wrappingAdd(amount, ordering: .acquiring).oldValue
        case .releasing: cell.wrappingAdd(amount, ordering: .releasing).oldValue
        case .acquiringAndReleasing: cell.wrappingAdd(amount, ordering: .acquiringAndReleasing).oldValue
        case .sequentiallyConsistent: cell.wrappingAdd(amount, ordering: .sequentiallyConsistent).oldValue
        }
    }

    /// Spins on a relaxed load (no cache-line ping-pong while the holder works) for 64 looks,
    /// then yields the CPU (`sched_yield`) between looks.
    @inlinable
    package func spinWhile(_ cell: borrowing Atomic<UInt>, equals value: UInt, looks: inout Int) {
        while cell.load(ordering: .relaxed) == value {
            looks += 1
            if looks > 64 { sched_yield() }
        }
    }

    @inlinable @inline(__always)
    package func loadWord(at address: UnsafeMutableRawPointer) -> UInt {
        // Safe: the protocol's contract: the caller owns the aligned word at `address`.
        unsafe address.load(as: UInt.self)
    }

    @inlinable @inline(__always)
    package func storeWord(_ value: UInt, at address: UnsafeMutableRawPointer) {
        // Safe: as in `loadWord`.
        unsafe address.storeBytes(of: value, as: UInt.self)
    }

    @inlinable @inline(__always)
    package func nanoseconds() -> UInt64 { _monotonicNanoseconds() }
}
