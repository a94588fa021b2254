// The model's `_AtomicSteps`: the package's algorithms run on it unchanged, one thread at a
// time, every atomic step a scheduling point.
import FastAlloc
import Synchronization

/// One thread's steps in one execution. Each atomic step first yields to the scheduler (which
/// may run other threads' steps before it), then acts on the real `Atomic` (one thread runs at
/// a time, so the model is sequentially consistent) and records happens-before from its
/// ordering. Plain word accesses are not scheduling points (a race-free access cannot tell when
/// it ran between two steps); each is checked against happens-before instead.
///
/// Not modelled: weak-memory outcomes (a relaxed load that returns an older value, as loom
/// explores; here a missing ordering shows up only as a plain access without happens-before),
/// and spurious failures of `weakCompareExchange` (the loops that use it retry either way).
package struct ModelSteps: _AtomicSteps {
    package let execution: Execution
    /// This thread's index, 0 to threads - 1.
    package let thread: Int

    package func load(_ cell: borrowing Atomic<UInt>, ordering: _LoadOrdering) -> UInt {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread) else { return 0 }
        let value = cell.load(ordering: .sequentiallyConsistent)
        execution.atomicStep(thread, cell: address, .load(value, ordering.name),
                             acquiring: ordering != .relaxed, releasing: false, writes: false, readModifyWrite: false)
        return value
    }

    package func store(_ value: UInt, to cell: borrowing Atomic<UInt>, ordering: _StoreOrdering) {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread) else { return }
        cell.store(value, ordering: .sequentiallyConsistent)
        execution.atomicStep(thread, cell: address, .store(value, ordering.name),
                             acquiring: false, releasing: ordering != .relaxed, writes: true, readModifyWrite: false)
    }

    package func exchange(_ cell: borrowing Atomic<UInt>, with value: UInt, ordering: _UpdateOrdering) -> UInt {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread) else { return 0 }
        let old = cell.exchange(value, ordering: .sequentiallyConsistent)
        execution.atomicStep(thread, cell: address, .exchange(value, old: old, ordering.name),
                             acquiring: ordering.acquires, releasing: ordering.releases, writes: true, readModifyWrite: true)
        return old
    }

    package func compareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread) else { return (true, expected) }
        let result = cell.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent)
        if result.exchanged {
            execution.atomicStep(thread, cell: address,
                                 .compareExchange(expected: expected, desired: desired, found: expected, successOrdering.name),
                                 acquiring: successOrdering.acquires, releasing: successOrdering.releases,
                                 writes: true, readModifyWrite: true)
        } else {
            execution.atomicStep(thread, cell: address,
                                 .compareExchange(expected: expected, desired: desired, found: result.original, failureOrdering.name),
                                 acquiring: failureOrdering != .relaxed, releasing: false, writes: false, readModifyWrite: false)
        }
        return result
    }

    /// As strong: spurious failures are not explored.
    package func weakCompareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        compareExchange(cell, expected: expected, desired: desired, successOrdering: successOrdering, failureOrdering: failureOrdering)
    }

    package func wrappingAdd(_ amount: UInt, to cell: borrowing Atomic<UInt>, ordering: _UpdateOrdering) -> UInt {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread) else { return 0 }
        let old = cell.wrappingAdd(amount, ordering: .sequentiallyConsistent).oldValue
        execution.atomicStep(thread, cell: address, .wrappingAdd(amount, old: old, ordering.name),
                             acquiring: ordering.acquires, releasing: ordering.releases, writes: true, readModifyWrite: true)
        return old
    }

    /// One blocking step: the thread is not runnable while the cell holds `value`; when it
    /// runs, it takes the relaxed load that sees another value. (The loads that saw `value`
    /// change nothing, so leaving them out loses no behaviour and keeps the state space finite.)
    package func spinWhile(_ cell: borrowing Atomic<UInt>, equals value: UInt, looks: inout Int) {
        let address = Execution.address(of: cell)
        guard execution.beginAtomicStep(thread, blockedOn: (address, value)) else { return }
        let seen = cell.load(ordering: .sequentiallyConsistent)
        precondition(seen != value, "the scheduler ran a thread whose spin-wait cannot end")
        looks += 1
        execution.atomicStep(thread, cell: address, .spinWhile(equals: value, saw: seen),
                             acquiring: false, releasing: false, writes: false, readModifyWrite: false)
    }

    package func loadWord(at address: UnsafeMutableRawPointer) -> UInt {
        // Safe: the world's slots are alive for the whole execution, and a link word holds 0 or
        // another slot's address, so even a racy load reads live memory; the model then checks
        // that this thread owns the word (happens-before).
        let value = address.load(as: UInt.self)
        guard execution.plainAccess(thread, word: UInt(bitPattern: address), write: false, value: value) else { return 0 }
        return value
    }

    package func storeWord(_ value: UInt, at address: UnsafeMutableRawPointer) {
        // Safe: only after the model checked that this thread owns the word; the world's slots
        // are alive for the whole execution.
        guard execution.plainAccess(thread, word: UInt(bitPattern: address), write: true, value: value) else { return }
        address.storeBytes(of: value, as: UInt.self)
    }

    package func nanoseconds() -> UInt64 { execution.logicalTime }

    /// A scheduling point with no effect: scenarios put one inside a critical section so that
    /// other threads may run there (and show whether they get in too).
    package func yieldPoint() {
        guard execution.beginAtomicStep(thread) else { return }
        execution.atomicStep(thread, cell: 0, .yield,
                             acquiring: false, releasing: false, writes: false, readModifyWrite: false)
    }
}

extension _LoadOrdering {
    var name: StaticString {
        switch self {
        case .relaxed: "relaxed"
        case .acquiring: "acquiring"
        case .sequentiallyConsistent: "sequentiallyConsistent"
        }
    }
}

extension _StoreOrdering {
    var name: StaticString {
        switch self {
        case .relaxed: "relaxed"
        case .releasing: "releasing"
        case .sequentiallyConsistent: "sequentiallyConsistent"
        }
    }
}

extension _UpdateOrdering {
    var name: StaticString {
        switch self {
        case .relaxed: "relaxed"
        case .acquiring: "acquiring"
        case .releasing: "releasing"
        case .acquiringAndReleasing: "acquiringAndReleasing"
        case .sequentiallyConsistent: "sequentiallyConsistent"
        }
    }
    var acquires: Bool {
        switch self {
        case .acquiring, .acquiringAndReleasing, .sequentiallyConsistent: true
        case .relaxed, .releasing: false
        }
    }
    var releases: Bool {
        switch self {
        case .releasing, .acquiringAndReleasing, .sequentiallyConsistent: true
        case .relaxed, .acquiring: false
        }
    }
}
