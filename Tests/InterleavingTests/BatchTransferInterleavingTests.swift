// Batches of slots moved between a thread's private stack (a magazine) and a free list shared
// under the pools' lock: the pattern `ThreadSafePool`'s magazines refill and flush with. The
// algorithm below is written against `_AtomicSteps` and the production lock, generic over the
// steps, so that magazine code can take it (or be checked the same way) by writing its own
// refill and flush like this and a thread body that calls them (docs/INTERLEAVINGS.md).
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// A free list shared under a lock: its head and count are plain words that only the lock
/// holder touches; free slots chain through their link words.
struct SharedFreeList {
    let head: UnsafeMutableRawPointer
    let count: UnsafeMutableRawPointer
    let linkOffset: Int
}

/// Refill and flush, the two moves of a magazine, each under one lock acquisition.
enum BatchTransfer {
    /// Moves up to `wanted` slots from the shared list onto `magazine`; returns how many.
    static func refill<Steps: _AtomicSteps>(
        _ magazine: inout [UnsafeMutableRawPointer], wanted: Int, from shared: SharedFreeList,
        lock: _ContentionLock, steps: Steps
    ) -> Int {
        lock.lock(steps: steps, contended: { lock.waitContended(steps: steps) })
        var moved = 0
        var head = steps.loadWord(at: shared.head)
        while moved < wanted, head != 0 {
            let slot = UnsafeMutableRawPointer(bitPattern: head)!
            head = steps.loadWord(at: slot + shared.linkOffset)
            magazine.append(slot)
            moved += 1
        }
        steps.storeWord(head, at: shared.head)
        steps.storeWord(steps.loadWord(at: shared.count) - UInt(moved), at: shared.count)
        lock.unlock(steps: steps)
        return moved
    }

    /// Moves the top `count` slots of `magazine` to the shared list: chained outside the lock
    /// (they are the magazine's until then), spliced in under it.
    static func flush<Steps: _AtomicSteps>(
        _ magazine: inout [UnsafeMutableRawPointer], count: Int, to shared: SharedFreeList,
        lock: _ContentionLock, steps: Steps
    ) {
        guard count > 0 else { return }
        let batch = Array(magazine.suffix(count))
        magazine.removeLast(count)
        for (slot, next) in zip(batch, batch.dropFirst()) {
            steps.storeWord(UInt(bitPattern: next), at: slot + shared.linkOffset)
        }
        lock.lock(steps: steps, contended: { lock.waitContended(steps: steps) })
        steps.storeWord(steps.loadWord(at: shared.head), at: batch.last! + shared.linkOffset)
        steps.storeWord(UInt(bitPattern: batch.first!), at: shared.head)
        steps.storeWord(steps.loadWord(at: shared.count) + UInt(count), at: shared.count)
        lock.unlock(steps: steps)
    }
}

/// `slots` slots on the shared list at the start; each thread refills, uses what it got (a
/// write to each slot's value word), flushes, `rounds` times.
final class BatchWorld {
    let lock = _ContentionLock()
    let words = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    let shared: SharedFreeList
    let slots: [UnsafeMutableRawPointer]
    /// Each thread's magazine (touched by that thread only).
    var magazines: [[UnsafeMutableRawPointer]] = [[], [], []]
    /// Who holds each slot now (thread index), to catch a slot handed out twice.
    var holder: [UnsafeMutableRawPointer: Int] = [:]
    var criticalSections = 0

    init(_ execution: Execution, slots count: Int) {
        shared = SharedFreeList(head: words, count: words + 8, linkOffset: 0)
        slots = (0..<count).map { index in
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            execution.name(slot, "slot " + String(UnicodeScalar(UInt8(65 + index))))
            return slot
        }
        // The list A -> B -> ... before any thread starts.
        for (slot, next) in zip(slots, slots.dropFirst().map(Optional.some) + [nil]) {
            slot.storeBytes(of: next.map { UInt(bitPattern: $0) } ?? 0, as: UInt.self)
        }
        words.storeBytes(of: UInt(bitPattern: slots[0]), as: UInt.self)
        (words + 8).storeBytes(of: UInt(count), as: UInt.self)
        execution.name(words, "shared head")
        execution.name(words + 8, "shared count")
        execution.name(cell: lock.held.pointee, "held")
    }

    deinit {
        for slot in slots { slot.deallocate() }
        words.deallocate()
        unsafe lock.destroy()
    }

    /// One round of a thread: refill up to `batch`, use each slot, flush them all.
    func round(_ steps: ModelSteps, batch: Int,
               flush: (inout [UnsafeMutableRawPointer], Int, ModelSteps) -> Void) {
        let thread = steps.thread
        let got = BatchTransfer.refill(&magazines[thread], wanted: batch, from: shared, lock: lock, steps: steps)
        criticalSections += 1
        for slot in magazines[thread].suffix(got) {
            steps.execution.expect(holder[slot] == nil, "\(steps.execution.name(of: slot)) handed to t\(thread) while t\(holder[slot]!) holds it")
            holder[slot] = thread
            steps.storeWord(UInt(thread), at: slot + 8)  // the value: this thread's alone now
        }
        for slot in magazines[thread] { holder[slot] = nil }
        let count = magazines[thread].count
        flush(&magazines[thread], count, steps)
        if count > 0 { criticalSections += 1 }  // an empty flush takes no lock
    }

    /// After an execution: every slot back on the shared list exactly once, the count right,
    /// the magazines empty, one lock acquisition per critical section.
    func check(_ execution: Execution) {
        var onList: [UnsafeMutableRawPointer] = []
        var next = words.load(as: UInt.self)
        while next != 0, onList.count <= slots.count {
            let slot = UnsafeMutableRawPointer(bitPattern: next)!
            onList.append(slot)
            next = slot.load(as: UInt.self)
        }
        execution.expect(onList.count == Set(onList).count && Set(onList) == Set(slots),
                         "the shared list holds \(onList.count) slots (\(Set(onList).count) different) of \(slots.count)")
        execution.expect((words + 8).load(as: UInt.self) == UInt(slots.count), "the shared count reads \((words + 8).load(as: UInt.self)) of \(slots.count)")
        execution.expect(magazines.allSatisfy(\.isEmpty), "a magazine kept slots")
        let acquisitions = lock.statistics.acquisitions
        execution.expect(acquisitions == UInt64(criticalSections), "lock acquisitions \(acquisitions), critical sections \(criticalSections)")
    }
}

private func batchScenario(
    threads: Int, slots: Int, batch: Int, rounds: Int, limits: ExplorationLimits = ExplorationLimits(),
    flush: @escaping @Sendable (BatchWorld, inout [UnsafeMutableRawPointer], Int, ModelSteps) -> Void = { world, magazine, count, steps in
        BatchTransfer.flush(&magazine, count: count, to: world.shared, lock: world.lock, steps: steps)
    }
) -> ExplorationReport {
    explore(threads: threads, limits: limits, setup: { BatchWorld($0, slots: slots) }, body: { world, steps in
        for _ in 0..<rounds {
            world.round(steps, batch: batch) { magazine, count, steps in flush(world, &magazine, count, steps) }
        }
    }, check: { world, execution in world.check(execution) })
}

@Suite("Interleavings: batch refill and flush under the lock")
struct BatchTransferInterleavingTests {
    @Test("2 threads, batches of 2 from 3 shared slots: no slot lost or handed out twice")
    func twoThreads_everyInterleaving() {
        let report = batchScenario(threads: 2, slots: 3, batch: 2, rounds: 1)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("batch refill/flush, 2 threads x 1 round (3 slots, batch 2): \(report)")
    }

    @Test("3 threads, batches of 2 from 4 shared slots (at most 2 preemptions)")
    func threeThreads_boundedPreemptions() {
        let report = batchScenario(threads: 3, slots: 4, batch: 2, rounds: 1, limits: ExplorationLimits(preemptionBound: 2))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("batch refill/flush, 3 threads x 1 round (4 slots, batch 2), <= 2 preemptions: \(report)")
    }

    @Test("2 threads, 2 rounds each (at most 2 preemptions)")
    func twoThreadsTwoRounds_boundedPreemptions() {
        let report = batchScenario(threads: 2, slots: 3, batch: 2, rounds: 2, limits: ExplorationLimits(preemptionBound: 2))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("batch refill/flush, 2 threads x 2 rounds (3 slots, batch 2), <= 2 preemptions: \(report)")
    }

    @Test("a flush that splices its batch in before taking the lock: reported")
    func spliceOutsideTheLock_isReported() {
        let report = batchScenario(threads: 2, slots: 3, batch: 2, rounds: 1) { world, magazine, count, steps in
            let batch = Array(magazine.suffix(count))
            magazine.removeLast(count)
            guard let first = batch.first, let last = batch.last else { return }
            for (slot, next) in zip(batch, batch.dropFirst()) { steps.storeWord(UInt(bitPattern: next), at: slot) }
            steps.storeWord(steps.loadWord(at: world.shared.head), at: last)  // outside the lock
            steps.storeWord(UInt(bitPattern: first), at: world.shared.head)
            world.lock.lock(steps: steps, contended: { world.lock.waitContended(steps: steps) })
            steps.storeWord(steps.loadWord(at: world.shared.count) + UInt(count), at: world.shared.count)
            world.lock.unlock(steps: steps)
        }
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
    }
}
