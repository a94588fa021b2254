// The return stack (`_ReturnStack`, packet buffers' cross-thread returns): pushers and the
// owner's drain, every interleaving; and broken variants the checker must catch.
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// The shared state: the stack's cells, the slots, and the owner's free list.
final class ReturnStackWorld {
    let head = Atomic<UInt>(0)
    let pushed = Atomic<UInt>(0)
    let drained = Atomic<UInt>(0)
    /// Slot addresses (64 bytes each, the link word at offset 0), named A, B, C, ...
    let slots: [UnsafeMutableRawPointer]
    /// The slots each pusher returns: pusher `thread` pushes `chains[thread]`, each inner array
    /// one push (a chain of one or more slots).
    let chains: [[[UnsafeMutableRawPointer]]]
    /// The owner's free list, in the order the drains handed the slots over.
    var freeList: [UnsafeMutableRawPointer] = []
    var freeHead: UInt = 0

    /// `chains[thread]`: how many slots each push of that thread returns.
    init(_ execution: Execution, pushes: [[Int]]) {
        let total = pushes.joined().reduce(0, +)
        let slots = (0..<total).map { index in
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            slot.storeBytes(of: 0, as: UInt.self)
            execution.name(slot, "slot " + String(UnicodeScalar(UInt8(65 + index))))
            return slot
        }
        self.slots = slots
        var next = 0
        chains = pushes.map { sizes in
            sizes.map { size in
                defer { next += size }
                return Array(slots[next..<next + size])
            }
        }
        execution.name(cell: head, "head")
        execution.name(cell: pushed, "pushed")
        execution.name(cell: drained, "drained")
    }

    deinit { for slot in slots { slot.deallocate() } }

    /// The owner's `put`: link the slot into the free list (a plain write to its link word, as
    /// `_SlotCore.put` does), after the drain read it.
    func put(_ slot: UnsafeMutableRawPointer, _ steps: ModelSteps) {
        steps.storeWord(freeHead, at: slot)
        freeHead = UInt(bitPattern: slot)
        freeList.append(slot)
    }

    /// Pushes with the production code: the chain linked by its owner, then one `push`.
    func push(_ chain: [UnsafeMutableRawPointer], _ steps: ModelSteps) {
        for (slot, next) in zip(chain, chain.dropFirst()) { steps.storeWord(UInt(bitPattern: next), at: slot) }
        _ReturnStack.push(first: chain.first!, last: chain.last!, count: chain.count, linkOffset: 0,
                          onto: head, pushed: pushed, steps: steps)
    }

    func drain(_ steps: ModelSteps) -> Int {
        _ReturnStack.drain(head, drained: drained, linkOffset: 0, steps: steps) { put($0, steps) }
    }

    /// After an execution: every slot pushed is on the free list or still on the stack,
    /// exactly once; the counters add up.
    func checkConservation(_ execution: Execution, pushesDone: Bool = true) {
        var onStack: [UnsafeMutableRawPointer] = []
        var next = head.load(ordering: .relaxed)
        while next != 0, onStack.count <= slots.count {
            let slot = UnsafeMutableRawPointer(bitPattern: next)!
            onStack.append(slot)
            next = slot.load(as: UInt.self)
        }
        let found = freeList + onStack
        let pushedSlots = chains.joined().joined()
        execution.expect(found.count == Set(found).count, "a slot handed out twice: free list \(freeList), stack \(onStack)")
        execution.expect(Set(found) == Set(pushedSlots), "a slot lost: pushed \(pushedSlots.count), found \(Set(found).count)")
        let pushedCount = pushed.load(ordering: .relaxed), drainedCount = drained.load(ordering: .relaxed)
        execution.expect(pushedCount == UInt(pushedSlots.count), "pushed counts \(pushedCount), \(pushedSlots.count) slots were pushed")
        execution.expect(drainedCount == UInt(freeList.count), "drained counts \(drainedCount), the free list has \(freeList.count)")
        execution.expect(pushedCount - drainedCount == UInt(onStack.count), "pushed - drained = \(pushedCount - drainedCount), \(onStack.count) on the stack")
    }
}

/// Thread roles in these scenarios: pushers first, then the owner (drains), then a reader.
private func returnStackScenario(
    pushes: [[Int]], drains: Int, reader: Bool, limits: ExplorationLimits = ExplorationLimits(),
    push: @escaping @Sendable (ReturnStackWorld, [UnsafeMutableRawPointer], ModelSteps) -> Void = { $0.push($1, $2) },
    drain: @escaping @Sendable (ReturnStackWorld, ModelSteps) -> Int = { $0.drain($1) }
) -> ExplorationReport {
    let pushers = pushes.count
    let total = pushes.joined().reduce(0, +)
    return explore(threads: pushers + 1 + (reader ? 1 : 0), limits: limits,
                   setup: { ReturnStackWorld($0, pushes: pushes) },
                   body: { world, steps in
        if steps.thread < pushers {
            for chain in world.chains[steps.thread] { push(world, chain, steps) }
        } else if steps.thread == pushers {
            for _ in 0..<drains { _ = drain(world, steps) }
        } else {
            // Statistics from another thread, twice: pushed >= drained in every snapshot (what
            // `pendingReturns` relies on), neither more than the slots, and both only grow.
            let first = _ReturnStack.counts(pushed: world.pushed, drained: world.drained, steps: steps)
            let second = _ReturnStack.counts(pushed: world.pushed, drained: world.drained, steps: steps)
            for counts in [first, second] {
                steps.execution.expect(counts.pushed >= counts.drained, "a reader saw pushed \(counts.pushed) < drained \(counts.drained)")
                steps.execution.expect(counts.pushed <= UInt(total), "a reader saw pushed \(counts.pushed) of \(total)")
            }
            steps.execution.expect(second.pushed >= first.pushed && second.drained >= first.drained, "a counter went back")
        }
    }, check: { world, execution in world.checkConservation(execution) })
}

@Suite("Interleavings: the return stack")
struct ReturnStackInterleavingTests {
    // MARK: The production code, every interleaving

    @Test("2 pushers of 1 slot, the owner draining twice: no slot lost or doubled, counters add up")
    func twoPushersAndTwoDrains_everyInterleaving() {
        let report = returnStackScenario(pushes: [[1], [1]], drains: 2, reader: false)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return stack, 2 pushers x 1 slot + owner x 2 drains: \(report)")
    }

    @Test("a chain of 2 slots and a single slot pushed while the owner drains twice")
    func chainAndSinglePush_everyInterleaving() {
        let report = returnStackScenario(pushes: [[2], [1]], drains: 2, reader: false)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return stack, chain of 2 + 1 slot + owner x 2 drains: \(report)")
    }

    @Test("a pusher, the owner draining twice, a statistics reader: pushed >= drained in every snapshot")
    func pusherDrainsAndReader_everyInterleaving() {
        let report = returnStackScenario(pushes: [[1]], drains: 2, reader: true)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return stack, 1 pusher x 1 slot + owner x 2 drains + reader: \(report)")
    }

    @Test("a pusher of 2 slots, the owner draining twice, a statistics reader (at most 2 preemptions)")
    func pusherOfTwoDrainsAndReader_boundedPreemptions() {
        let report = returnStackScenario(pushes: [[1, 1]], drains: 2, reader: true, limits: ExplorationLimits(preemptionBound: 2))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return stack, 1 pusher x 2 slots + owner x 2 drains + reader, <= 2 preemptions: \(report)")
    }

    @Test("2 pushers of 2 slots each, the owner draining twice (at most 3 preemptions)")
    func twoPushersOfTwo_boundedPreemptions() {
        let report = returnStackScenario(pushes: [[1, 1], [1, 1]], drains: 2, reader: false,
                                         limits: ExplorationLimits(preemptionBound: 3))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("return stack, 2 pushers x 2 slots + owner x 2 drains, <= 3 preemptions: \(report)")
    }

    // MARK: Broken variants: each must be reported

    @Test("a push that publishes the slot before writing its link: reported")
    func publishBeforeLink_isReported() {
        let report = returnStackScenario(pushes: [[1], [1]], drains: 1, reader: false, push: { world, chain, steps in
            let slot = chain[0]
            var current = steps.load(world.head, ordering: .relaxed)
            while true {
                let (exchanged, original) = steps.weakCompareExchange(
                    world.head, expected: current, desired: UInt(bitPattern: slot), successOrdering: .releasing, failureOrdering: .relaxed)
                if exchanged { break }
                current = original
            }
            steps.storeWord(current, at: slot)  // too late: the slot is the owner's already
            _ = steps.wrappingAdd(1, to: world.pushed, ordering: .relaxed)
        })
        let message = report.failure?.message ?? ""
        #expect(message.contains("plain access to a word the thread does not own"), "\(report)")
    }

    @Test("a push whose compare-and-swap is relaxed (no release): reported")
    func relaxedPush_isReported() {
        let report = returnStackScenario(pushes: [[1], [1]], drains: 1, reader: false, push: { world, chain, steps in
            _ = steps.wrappingAdd(1, to: world.pushed, ordering: .relaxed)
            var current = steps.load(world.head, ordering: .relaxed)
            while true {
                steps.storeWord(current, at: chain[0])
                let (exchanged, original) = steps.weakCompareExchange(
                    world.head, expected: current, desired: UInt(bitPattern: chain[0]), successOrdering: .relaxed, failureOrdering: .relaxed)
                if exchanged { break }
                current = original
            }
        })
        #expect(report.failure?.message.contains("plain access to a word the thread does not own: t2 reads slot") == true, "\(report)")
    }

    @Test("a drain that loads the head and then stores 0 (no exchange): a slot lost, reported")
    func loadThenStoreDrain_losesASlot() {
        let report = returnStackScenario(pushes: [[1], [1]], drains: 1, reader: false, drain: { world, steps in
            var next = steps.load(world.head, ordering: .acquiring)
            steps.store(0, to: world.head, ordering: .relaxed)  // a push in between is lost
            var count = 0
            while next != 0 {
                let slot = UnsafeMutableRawPointer(bitPattern: next)!
                next = steps.loadWord(at: slot)
                world.put(slot, steps)
                count += 1
            }
            steps.store(steps.load(world.drained, ordering: .relaxed) &+ UInt(count), to: world.drained, ordering: .releasing)
            return count
        })
        #expect(report.failure?.message.hasPrefix("a slot lost") == true, "\(report)")
    }

    @Test("a drain whose exchange is relaxed (no acquire): reported")
    func relaxedDrain_isReported() {
        let report = returnStackScenario(pushes: [[1]], drains: 1, reader: false, drain: { world, steps in
            var next = steps.exchange(world.head, with: 0, ordering: .relaxed)
            var count = 0
            while next != 0 {
                let slot = UnsafeMutableRawPointer(bitPattern: next)!
                next = steps.loadWord(at: slot)
                world.put(slot, steps)
                count += 1
            }
            steps.store(steps.load(world.drained, ordering: .relaxed) &+ UInt(count), to: world.drained, ordering: .releasing)
            return count
        })
        #expect(report.failure?.message.contains("plain access to a word the thread does not own: t1 reads slot A") == true, "\(report)")
    }

    @Test("counting a push after publishing it (this code's old order): a reader sees drained > pushed, reported")
    func countAfterPublishing_letsAReaderSeeMoreDrainedThanPushed() {
        let report = returnStackScenario(pushes: [[1]], drains: 1, reader: true, push: { world, chain, steps in
            var current = steps.load(world.head, ordering: .relaxed)
            while true {
                steps.storeWord(current, at: chain[0])
                let (exchanged, original) = steps.weakCompareExchange(
                    world.head, expected: current, desired: UInt(bitPattern: chain[0]), successOrdering: .releasing, failureOrdering: .relaxed)
                if exchanged { break }
                current = original
            }
            _ = steps.wrappingAdd(1, to: world.pushed, ordering: .relaxed)  // after the slot could be drained
        })
        #expect(report.failure?.message == "a reader saw pushed 0 < drained 1", "\(report)")
    }
}
