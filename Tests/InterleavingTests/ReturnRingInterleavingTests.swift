// The return ring (`_ReturnRing`, packet buffers' cross-thread returns): pushers and the
// owner's drain, every interleaving (or every one within a preemption bound); and broken
// variants the checker must catch.
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// The shared state: the ring's cells, its counters, the slots, and the owner's free list.
final class ReturnRingWorld {
    let capacity: Int
    let ring: UnsafeMutablePointer<Atomic<UInt>>
    let tail = Atomic<UInt>(0)
    let drained = Atomic<UInt>(0)
    /// Slot addresses (64 bytes each; word 0 is the free list's link, word 1 the buffer's
    /// bytes as its holder last wrote them), named A, B, C, ...
    let slots: [UnsafeMutableRawPointer]
    /// `pushes[thread]`: the slots that pusher returns, one push each, in order.
    let pushes: [[UnsafeMutableRawPointer]]
    /// The owner's free list (linked through word 0 of each slot), and how many slots the
    /// drains have put on it in all.
    var freeHead: UInt = 0
    var puts = 0
    /// Slots the owner pushed back itself (the cycle scenario).
    var repushed = 0

    /// `pushes[thread]`: how many slots that pusher returns; the ring has `capacity` cells
    /// (at least the number of slots, as `_Route` guarantees).
    init(_ execution: Execution, pushes: [Int], capacity: Int) {
        let total = pushes.reduce(0, +)
        precondition(capacity >= total && capacity & (capacity - 1) == 0)
        self.capacity = capacity
        ring = .allocate(capacity: capacity)
        for index in 0..<capacity { (ring + index).initialize(to: Atomic(0)) }
        let slots = (0..<total).map { index in
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            slot.initializeMemory(as: UInt.self, repeating: 0, count: 8)
            execution.name(slot, "slot " + String(UnicodeScalar(UInt8(65 + index))))
            return slot
        }
        self.slots = slots
        var next = 0
        self.pushes = pushes.map { count in
            defer { next += count }
            return Array(slots[next..<next + count])
        }
        for index in 0..<capacity { execution.name(cell: ring[index], "cell \(index)") }
        execution.name(cell: tail, "tail")
        execution.name(cell: drained, "drained")
    }

    deinit {
        for slot in slots { slot.deallocate() }
        ring.deinitialize(count: capacity)
        ring.deallocate()
    }

    /// The owner's `put`: link the slot into the free list (a plain write of its link word, as
    /// `_SlotCore.put` does) and reset the buffer (as the next `take` does to its length): both
    /// plain writes, which must come after the pusher's last write to the slot.
    func put(_ slot: UnsafeMutableRawPointer, _ steps: ModelSteps) {
        steps.storeWord(0, at: slot + 8)
        steps.storeWord(freeHead, at: slot)
        freeHead = UInt(bitPattern: slot)
        puts += 1
    }

    /// A release with the production code: the holder's last write to the buffer, then `push`.
    func push(_ slot: UnsafeMutableRawPointer, _ steps: ModelSteps) {
        steps.storeWord(UInt(steps.thread + 1), at: slot + 8)
        _ReturnRing.push(slot, ring: ring, mask: capacity - 1, tail: tail, steps: steps)
    }

    func drain(_ steps: ModelSteps) -> Int {
        _ReturnRing.drain(ring: ring, mask: capacity - 1, drained: drained, steps: steps) { put($0, steps) }
    }

    /// After an execution: every slot is on the free list or in a cell, exactly once; the
    /// counters add up.
    func checkConservation(_ execution: Execution) {
        let inRing = (0..<capacity).compactMap { UnsafeMutableRawPointer(bitPattern: ring[$0].load(ordering: .relaxed)) }
        var onFreeList: [UnsafeMutableRawPointer] = []
        var next = freeHead
        while next != 0, onFreeList.count <= slots.count {
            let slot = UnsafeMutableRawPointer(bitPattern: next)!
            onFreeList.append(slot)
            next = slot.load(as: UInt.self)
        }
        let found = onFreeList + inRing
        let pushedSlots = Array(pushes.joined())
        execution.expect(found.count == Set(found).count, "a slot handed out twice: free list \(onFreeList), ring \(inRing)")
        execution.expect(Set(found) == Set(pushedSlots), "a slot lost: \(pushedSlots.count) pushed, \(Set(found).count) found")
        let pushedCount = tail.load(ordering: .relaxed), drainedCount = drained.load(ordering: .relaxed)
        execution.expect(pushedCount == UInt(pushedSlots.count + repushed), "tail counts \(pushedCount), \(pushedSlots.count + repushed) pushes were made")
        execution.expect(drainedCount == UInt(puts), "drained counts \(drainedCount), \(puts) were put back")
        execution.expect(pushedCount &- drainedCount == UInt(inRing.count), "pushed - drained = \(Int(bitPattern: pushedCount &- drainedCount)), \(inRing.count) in the ring")
    }
}

/// Thread roles: pushers first, then the owner (drains), then a reader. With `cycle`, the owner
/// pushes back every slot its first drain took, then drains twice more: indices pass the ring's
/// capacity, so cells are reused while the other pushers push.
private func returnRingScenario(
    pushes: [Int], capacity: Int, drains: Int, cycle: Bool = false, reader: Bool,
    limits: ExplorationLimits = ExplorationLimits(),
    push: @escaping @Sendable (ReturnRingWorld, UnsafeMutableRawPointer, ModelSteps) -> Void = { $0.push($1, $2) },
    drain: @escaping @Sendable (ReturnRingWorld, ModelSteps) -> Int = { $0.drain($1) }
) -> ExplorationReport {
    let pushers = pushes.count
    let total = pushes.reduce(0, +)
    return explore(threads: pushers + 1 + (reader ? 1 : 0), limits: limits,
                   setup: { ReturnRingWorld($0, pushes: pushes, capacity: capacity) },
                   body: { world, steps in
        if steps.thread < pushers {
            for slot in world.pushes[steps.thread] { push(world, slot, steps) }
        } else if steps.thread == pushers {
            _ = drain(world, steps)
            if cycle {
                // Take every slot off the free list again and release it into the ring (as if
                // handed to this thread's own users and let go): plain reads of the links.
                var taken: [UnsafeMutableRawPointer] = []
                var next = world.freeHead
                while next != 0 {
                    let slot = UnsafeMutableRawPointer(bitPattern: next)!
                    next = steps.loadWord(at: slot)
                    taken.append(slot)
                }
                world.freeHead = 0
                for slot in taken {
                    world.repushed += 1
                    push(world, slot, steps)
                }
            }
            for _ in 1..<drains { _ = drain(world, steps) }
        } else {
            // Statistics from another thread, twice: pushed >= drained in every snapshot (what
            // `pendingReturns` relies on), and both only grow.
            let first = _ReturnRing.counts(tail: world.tail, drained: world.drained, steps: steps)
            let second = _ReturnRing.counts(tail: world.tail, drained: world.drained, steps: steps)
            for counts in [first, second] {
                steps.execution.expect(counts.pushed >= counts.drained, "a reader saw pushed \(counts.pushed) < drained \(counts.drained)")
                steps.execution.expect(counts.pushed <= UInt(2 * total), "a reader saw pushed \(counts.pushed)")
            }
            steps.execution.expect(second.pushed >= first.pushed && second.drained >= first.drained, "a counter went back")
        }
    }, check: { world, execution in world.checkConservation(execution) })
}

@Suite("Interleavings: the return ring")
struct ReturnRingInterleavingTests {
    // MARK: The production code

    @Test("2 pushers of 1 slot, the owner draining twice: no slot lost or doubled, counters add up")
    func twoPushersAndTwoDrains_everyInterleaving() {
        let report = returnRingScenario(pushes: [1, 1], capacity: 2, drains: 2, reader: false)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return ring, 2 pushers x 1 slot + owner x 2 drains: \(report)")
    }

    @Test("a pusher of 2 slots and a pusher of 1, ring of 4, the owner draining twice")
    func threeSlotsTwoPushers_everyInterleaving() {
        let report = returnRingScenario(pushes: [2, 1], capacity: 4, drains: 2, reader: false)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return ring, pushers of 2 and 1 slots + owner x 2 drains: \(report)")
    }

    @Test("a pusher, the owner draining twice, a statistics reader: pushed >= drained in every snapshot")
    func pusherDrainsAndReader_everyInterleaving() {
        let report = returnRingScenario(pushes: [1], capacity: 1, drains: 2, reader: true)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return ring, 1 pusher + owner x 2 drains + reader: \(report)")
    }

    @Test("cells reused: 2 slots in a ring of 2, the owner pushing back what it drained while the other pusher pushes (at most 3 preemptions)")
    func wrapAround_boundedPreemptions() {
        let report = returnRingScenario(pushes: [1, 1], capacity: 2, drains: 3, cycle: true, reader: false,
                                        limits: ExplorationLimits(preemptionBound: 3))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return ring, 2 slots in 2 cells, owner re-pushing, <= 3 preemptions: \(report)")
    }

    // MARK: Broken variants: each must be reported

    @Test("a push that takes its index with a load and a store (no fetch-and-add): a slot lost, reported")
    func loadThenStoreIndex_losesASlot() {
        let report = returnRingScenario(pushes: [1, 1], capacity: 2, drains: 2, reader: false, push: { world, slot, steps in
            steps.storeWord(UInt(steps.thread + 1), at: slot + 8)
            let index = steps.load(world.tail, ordering: .acquiring)
            steps.store(index &+ 1, to: world.tail, ordering: .releasing)  // two pushers can get one index
            steps.store(UInt(bitPattern: slot), to: world.ring[Int(index) & (world.capacity - 1)], ordering: .releasing)
        })
        let message = report.failure?.message ?? ""
        #expect(message.hasPrefix("a slot lost") || message.hasPrefix("tail counts"), "\(report)")
    }

    @Test("a push whose publishing store is relaxed (no release): reported")
    func relaxedPublish_isReported() {
        let report = returnRingScenario(pushes: [1], capacity: 1, drains: 1, reader: false, push: { world, slot, steps in
            steps.storeWord(UInt(steps.thread + 1), at: slot + 8)
            let index = steps.wrappingAdd(1, to: world.tail, ordering: .acquiringAndReleasing)
            steps.store(UInt(bitPattern: slot), to: world.ring[Int(index) & (world.capacity - 1)], ordering: .relaxed)
        })
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
    }

    @Test("a drain that does not clear the cells: a slot handed out twice, reported")
    func drainWithoutClearing_handsASlotOutTwice() {
        let report = returnRingScenario(pushes: [1], capacity: 1, drains: 2, reader: false, drain: { world, steps in
            let start = steps.load(world.drained, ordering: .relaxed)
            var next = start
            // Reads the cell but leaves it full: the next drain reads the same address again.
            let cell = world.ring + (Int(next) & (world.capacity - 1))
            let address = steps.load(cell.pointee, ordering: .acquiring)
            if address != 0 {
                world.put(UnsafeMutableRawPointer(bitPattern: address)!, steps)
                next &+= 1
            }
            if next != start { steps.store(next, to: world.drained, ordering: .releasing) }
            return Int(next &- start)
        })
        let message = report.failure?.message ?? ""
        #expect(message.hasPrefix("a slot handed out twice") || message.contains("drained counts"), "\(report)")
    }

    @Test("a drain that counts a slot before reading its cell: a reader sees drained > pushed, reported")
    func countingBeforeReading_isReported() {
        let report = returnRingScenario(pushes: [1], capacity: 1, drains: 1, reader: true, drain: { world, steps in
            let start = steps.load(world.drained, ordering: .relaxed)
            steps.store(start &+ 1, to: world.drained, ordering: .releasing)  // too early
            let cell = world.ring + (Int(start) & (world.capacity - 1))
            let address = steps.load(cell.pointee, ordering: .acquiring)
            guard address != 0 else { return 0 }
            steps.store(0, to: cell.pointee, ordering: .relaxed)
            world.put(UnsafeMutableRawPointer(bitPattern: address)!, steps)
            return 1
        })
        let message = report.failure?.message ?? ""
        #expect(message.hasPrefix("a reader saw pushed") || message.hasPrefix("drained counts"), "\(report)")
    }
}
