// Model steps with one deliberate defect, so that a broken variant of a production algorithm
// can be checked without copying its source: the code under test stays the package's own, and
// only one of its steps is weakened.
import FastAlloc
import Synchronization

/// `ModelSteps` with one step weakened, on one cell.
package struct DefectiveSteps: _AtomicSteps {
    package enum Defect: Sendable {
        /// None: the model's own steps (for a scenario run both ways).
        case none
        /// Every store to the cell at this address is relaxed, whatever the code asked for.
        case relaxedStores(toCellAt: UInt)
        /// The lock whose `held` cell is at this address is never taken or let go: its exchange
        /// reads 0 (free) and writes nothing, its unlocking store writes nothing. Each stays a
        /// scheduling point, so other threads can run where the lock would have kept them out.
        case noLock(heldCellAt: UInt)
    }

    package let base: ModelSteps
    package let defect: Defect

    package init(_ base: ModelSteps, _ defect: Defect) {
        self.base = base
        self.defect = defect
    }

    /// A cell's address, its identity in the model (compared, never dereferenced).
    package static func address(of cell: borrowing Atomic<UInt>) -> UInt {
        withUnsafePointer(to: cell) { UInt(bitPattern: $0) }
    }

    private func isLockCell(_ cell: borrowing Atomic<UInt>) -> Bool {
        if case .noLock(let address) = defect { return Self.address(of: cell) == address }
        return false
    }

    package func load(_ cell: borrowing Atomic<UInt>, ordering: _LoadOrdering) -> UInt {
        base.load(cell, ordering: ordering)
    }

    package func store(_ value: UInt, to cell: borrowing Atomic<UInt>, ordering: _StoreOrdering) {
        if isLockCell(cell) { return base.yieldPoint() }
        if case .relaxedStores(let address) = defect, Self.address(of: cell) == address {
            return base.store(value, to: cell, ordering: .relaxed)
        }
        base.store(value, to: cell, ordering: ordering)
    }

    package func exchange(_ cell: borrowing Atomic<UInt>, with value: UInt, ordering: _UpdateOrdering) -> UInt {
        if isLockCell(cell) {
            base.yieldPoint()
            return 0
        }
        return base.exchange(cell, with: value, ordering: ordering)
    }

    package func compareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        base.compareExchange(cell, expected: expected, desired: desired, successOrdering: successOrdering, failureOrdering: failureOrdering)
    }

    package func weakCompareExchange(
        _ cell: borrowing Atomic<UInt>, expected: UInt, desired: UInt,
        successOrdering: _UpdateOrdering, failureOrdering: _LoadOrdering
    ) -> (exchanged: Bool, original: UInt) {
        base.weakCompareExchange(cell, expected: expected, desired: desired, successOrdering: successOrdering, failureOrdering: failureOrdering)
    }

    package func wrappingAdd(_ amount: UInt, to cell: borrowing Atomic<UInt>, ordering: _UpdateOrdering) -> UInt {
        base.wrappingAdd(amount, to: cell, ordering: ordering)
    }

    package func spinWhile(_ cell: borrowing Atomic<UInt>, equals value: UInt, looks: inout Int) {
        base.spinWhile(cell, equals: value, looks: &looks)
    }

    package func loadWord(at address: UnsafeMutableRawPointer) -> UInt { base.loadWord(at: address) }

    package func storeWord(_ value: UInt, at address: UnsafeMutableRawPointer) { base.storeWord(value, at: address) }

    package func nanoseconds() -> UInt64 { base.nanoseconds() }
}
