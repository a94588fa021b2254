// `ThreadSafePool`'s magazines (Sources/FastAlloc/Internal/_Magazines.swift): the production
// fast paths (`_pop`, `_push`) and slow paths (`_takeSlow`, `_putSlow`, with their refill,
// flush and flush requests) run unchanged on the model's steps, against a model of the pool's
// shared free list. Every interleaving within a preemption bound; and broken variants made by
// weakening one step of the production code (`DefectiveSteps`), which the checker must catch.
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// The pool's shared free list as the magazines see it (`_MagazineSource`): a LIFO chained
/// through word 0 of each free slot, its head and count plain words that only the pool lock's
/// holder may touch (the checker flags any other access). Counts what it served, host-side.
struct ModelFreeList<Steps: _AtomicSteps>: _MagazineSource {
    let world: MagazineWorld
    let steps: Steps

    func takeReused() -> UnsafeMutableRawPointer? {
        let head = steps.loadWord(at: world.head)
        guard let slot = UnsafeMutableRawPointer(bitPattern: head) else { return nil }
        steps.storeWord(steps.loadWord(at: slot), at: world.head)
        steps.storeWord(steps.loadWord(at: world.freeCount) &- 1, at: world.freeCount)
        world.reusedTakes += 1
        return slot
    }

    /// A model pool does not grow: a take is a reused slot or nothing.
    func take() -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        guard let slot = takeReused() else { return nil }
        world.reusedTakes -= 1
        world.directTakes += 1
        return (slot, false)
    }

    func put(_ slot: UnsafeMutableRawPointer) {
        steps.storeWord(steps.loadWord(at: world.head), at: slot)
        steps.storeWord(UInt(bitPattern: slot), at: world.head)
        steps.storeWord(steps.loadWord(at: world.freeCount) &+ 1, at: world.freeCount)
        world.puts += 1
    }
}

/// A depot with one magazine per thread, `slots` slots on the shared list at the start. Host
/// fields (holders, tallies) are touched between steps, by the one thread that runs.
final class MagazineWorld {
    let execution: Execution
    let lock = _ContentionLock()
    let depot: UnsafeMutablePointer<_Depot>
    let magazines: [UnsafeMutablePointer<_Magazine>]
    /// Word 0: the shared list's head; word 1: its count.
    let words = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
    var head: UnsafeMutableRawPointer { words }
    var freeCount: UnsafeMutableRawPointer { words + 8 }
    /// 64 bytes each: word 0 the free list's link, word 1 the value its holder wrote.
    let slots: [UnsafeMutableRawPointer]
    /// Who holds each slot now (a thread index): a second holder is a slot handed out twice.
    var holder: [UnsafeMutableRawPointer: Int] = [:]
    /// A cell for handing a slot from one thread to another (0: empty).
    let mailbox = Atomic<UInt>(0)

    // Tallies of what the threads did and what the source served.
    var acquisitions = 0
    var releases = 0
    var failedAcquisitions = 0
    var slowPaths = 0
    var reusedTakes = 0
    var directTakes = 0
    var puts = 0

    init(_ execution: Execution, threads: Int, slots count: Int, magazineSize: Int) {
        self.execution = execution
        let depot = UnsafeMutablePointer<_Depot>.allocate(capacity: 1)
        depot.initialize(to: _Depot(forModelWith: lock, magazineSize: magazineSize))
        self.depot = depot
        magazines = (0..<threads).map { _ in
            let magazine = UnsafeMutablePointer<_Magazine>.allocate(capacity: 1)
            magazine.initialize(to: _Magazine(depot: depot, rack: nil, capacity: magazineSize, seen: 0))
            return magazine
        }
        slots = (0..<count).map { index in
            let slot = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            slot.initializeMemory(as: UInt.self, repeating: 0, count: 8)
            execution.name(slot, "slot " + String(UnicodeScalar(UInt8(65 + index))))
            execution.name(slot + 8, "slot " + String(UnicodeScalar(UInt8(65 + index))) + " value")
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
        execution.name(cell: lock.held.pointee, "lock")
        execution.name(cell: depot.pointee.generation, "generation")
        execution.name(cell: depot.pointee.refilled, "refilled")
        execution.name(cell: depot.pointee.flushRequests, "flush requests")
        execution.name(cell: mailbox, "mailbox")
        for (thread, magazine) in magazines.enumerated() {
            execution.name(cell: magazine.pointee.count, "t\(thread) count")
            execution.name(cell: magazine.pointee.seen, "t\(thread) seen")
            execution.name(cell: magazine.pointee.hits, "t\(thread) hits")
            execution.name(cell: magazine.pointee.absorbed, "t\(thread) absorbed")
            for position in 0..<UInt(magazineSize) { execution.name(magazine.pointee.entry(position), "t\(thread) entry \(position)") }
        }
    }

    deinit {
        for magazine in magazines {
            magazine.pointee.slots.deallocate()
            magazine.deinitialize(count: 1)
            magazine.deallocate()
        }
        depot.deinitialize(count: 1)
        depot.deallocate()
        for slot in slots { slot.deallocate() }
        words.deallocate()
        unsafe lock.destroy()
    }

    var lockCell: UInt { DefectiveSteps.address(of: lock.held.pointee) }

    /// Before any thread runs (host-side): `thread` holds the list's first slot, as if it had
    /// taken it directly.
    func handOutFirst(to thread: Int) -> UnsafeMutableRawPointer {
        let slot = UnsafeMutableRawPointer(bitPattern: head.load(as: UInt.self))!
        head.storeBytes(of: slot.load(as: UInt.self), as: UInt.self)
        freeCount.storeBytes(of: freeCount.load(as: UInt.self) - 1, as: UInt.self)
        holder[slot] = thread
        acquisitions += 1
        directTakes += 1
        return slot
    }

    /// `ThreadSafePool`'s acquire with magazines: the fast path, else the slow one; then the
    /// holder writes the slot's value (a plain write: the checker flags it unless every earlier
    /// access by another thread happened before).
    func acquire<Steps: _AtomicSteps>(_ thread: Int, _ steps: Steps) -> UnsafeMutableRawPointer? {
        let magazine = magazines[thread]
        let slot: UnsafeMutableRawPointer
        if let popped = _Depot._pop(magazine, of: depot, steps: steps) {
            slot = popped
        } else {
            slowPaths += 1
            guard let taken = _Depot._takeSlow(magazine, of: depot, from: ModelFreeList(world: self, steps: steps), steps: steps) else {
                failedAcquisitions += 1
                return nil
            }
            slot = taken.slot
        }
        if let other = holder[slot] {
            execution.fail("\(execution.name(of: slot)) handed to t\(thread) while t\(other) holds it")
            return nil
        }
        holder[slot] = thread
        acquisitions += 1
        steps.storeWord(UInt(thread + 1), at: slot + 8)
        return slot
    }

    /// `ThreadSafePool`'s release with magazines; the holder reads the value it wrote last.
    func release<Steps: _AtomicSteps>(_ slot: UnsafeMutableRawPointer, _ thread: Int, _ steps: Steps) {
        _ = steps.loadWord(at: slot + 8)
        holder[slot] = nil
        releases += 1
        let magazine = magazines[thread]
        if _Depot._push(slot, magazine, of: depot, steps: steps) { return }
        slowPaths += 1
        let taken = _Depot._putSlow(slot, magazine, of: depot, to: ModelFreeList(world: self, steps: steps), steps: steps)
        execution.expect(taken, "a live pool's magazine refused a slot")
    }

    /// Hands `slot` to the thread that calls `receive` (a releasing store, as any channel that
    /// carries a `Sendable` handle between threads has).
    func send<Steps: _AtomicSteps>(_ slot: UnsafeMutableRawPointer, _ thread: Int, _ steps: Steps) {
        holder[slot] = nil
        steps.store(UInt(bitPattern: slot), to: mailbox, ordering: .releasing)
    }

    func receive<Steps: _AtomicSteps>(_ thread: Int, _ steps: Steps) -> UnsafeMutableRawPointer? {
        var looks = 0
        steps.spinWhile(mailbox, equals: 0, looks: &looks)
        guard let slot = UnsafeMutableRawPointer(bitPattern: steps.load(mailbox, ordering: .acquiring)) else { return nil }
        if let other = holder[slot] { execution.fail("\(execution.name(of: slot)) received by t\(thread) while t\(other) holds it") }
        holder[slot] = thread
        return slot
    }

    /// After an execution in which every thread gave back what it took: every slot is on the
    /// shared list or in one magazine, exactly once; the list's count is right; and the figures
    /// `_Depot.statistics` sums add up (magazine hits plus direct takes are the acquisitions,
    /// magazine releases the releases, the depot's refill count what the list handed to
    /// refills, one flush request per failed acquisition, one lock acquisition per slow path).
    func check(_ execution: Execution) {
        var onList: [UnsafeMutableRawPointer] = []
        var next = words.load(as: UInt.self)
        while next != 0, onList.count <= slots.count {
            let slot = UnsafeMutableRawPointer(bitPattern: next)!
            onList.append(slot)
            next = slot.load(as: UInt.self)
        }
        var cached: [UnsafeMutableRawPointer] = []
        for magazine in magazines {
            let count = magazine.pointee.count.load(ordering: .relaxed)
            execution.expect(count <= UInt(magazine.pointee.capacity), "a magazine holds \(count), over its capacity")
            for position in 0..<min(count, UInt(magazine.pointee.capacity)) {
                guard let slot = UnsafeMutableRawPointer(bitPattern: magazine.pointee.entry(position).load(as: UInt.self)) else {
                    execution.fail("a magazine's entry \(position) of \(count) holds no slot")
                    return
                }
                cached.append(slot)
            }
        }
        let everywhere = onList + cached
        execution.expect(everywhere.count == slots.count && Set(everywhere) == Set(slots),
                         "\(onList.count) slots on the list and \(cached.count) in magazines (\(Set(everywhere).count) different) of \(slots.count)")
        execution.expect(holder.isEmpty, "slots still held: \(holder.keys.map { execution.name(of: $0) })")
        execution.expect(freeCount.load(as: UInt.self) == UInt(onList.count), "the shared count reads \(freeCount.load(as: UInt.self)), the list holds \(onList.count)")
        let hits = magazines.reduce(0) { $0 + Int($1.pointee.hits.load(ordering: .relaxed)) }
        let absorbed = magazines.reduce(0) { $0 + Int($1.pointee.absorbed.load(ordering: .relaxed)) }
        execution.expect(hits + directTakes == acquisitions, "magazine hits \(hits) + direct takes \(directTakes) != acquisitions \(acquisitions)")
        execution.expect(absorbed == releases, "magazine releases \(absorbed) != releases \(releases)")
        execution.expect(Int(depot.pointee.refilled.load(ordering: .relaxed)) == reusedTakes, "refilled \(depot.pointee.refilled.load(ordering: .relaxed)), the list gave refills \(reusedTakes)")
        execution.expect(Int(depot.pointee.flushRequests.load(ordering: .relaxed)) == failedAcquisitions, "flush requests \(depot.pointee.flushRequests.load(ordering: .relaxed)), failed acquisitions \(failedAcquisitions)")
        // The list took back what it gave, less what magazines still cache.
        execution.expect(reusedTakes + directTakes - puts == cached.count, "the list gave \(reusedTakes + directTakes), took back \(puts), magazines cache \(cached.count)")
        let lockAcquisitions = Int(lock.statistics.acquisitions)
        execution.expect(lockAcquisitions == slowPaths, "lock acquisitions \(lockAcquisitions), slow paths \(slowPaths)")
    }
}

/// Explores `body` on a world of `threads` magazines of `magazineSize` and `slots` slots.
private func magazineScenario(
    threads: Int, slots: Int, magazineSize: Int, limits: ExplorationLimits,
    body: @escaping @Sendable (MagazineWorld, ModelSteps) -> Void
) -> ExplorationReport {
    explore(threads: threads, limits: limits,
            setup: { MagazineWorld($0, threads: threads, slots: slots, magazineSize: magazineSize) },
            body: body, check: { world, execution in world.check(execution) })
}

/// Each thread: two acquires (a refill, then the fast path or another slow path), both
/// released (the fast path until the magazine is full, then a flush of its older half).
private func acquireTwiceReleaseTwice<Steps: _AtomicSteps>(_ world: MagazineWorld, _ thread: Int, _ steps: Steps) {
    let first = world.acquire(thread, steps)
    let second = world.acquire(thread, steps)
    if let first { world.release(first, thread, steps) }
    if let second { world.release(second, thread, steps) }
}

@Suite("Interleavings: ThreadSafePool's magazines (refill, flush, flush requests)")
struct MagazineInterleavingTests {
    @Test("2 threads x (2 acquires, 2 releases), magazines of 1, 3 slots (<= 2 preemptions)")
    func twoThreads_refillAndFlush() {
        let report = magazineScenario(threads: 2, slots: 3, magazineSize: 1, limits: ExplorationLimits(preemptionBound: 2)) { world, steps in
            acquireTwiceReleaseTwice(world, steps.thread, steps)
        }
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("magazines, 2 threads x (2 acquires + 2 releases), 3 slots, magazines of 1, <= 2 preemptions: \(report)")
    }

    @Test("3 threads x (2 acquires, 2 releases), magazines of 1, 4 slots (<= 1 preemption)")
    func threeThreads_refillAndFlush() {
        let report = magazineScenario(threads: 3, slots: 4, magazineSize: 1, limits: ExplorationLimits(preemptionBound: 1)) { world, steps in
            acquireTwiceReleaseTwice(world, steps.thread, steps)
        }
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("magazines, 3 threads x (2 acquires + 2 releases), 4 slots, magazines of 1, <= 1 preemption: \(report)")
    }

    /// Magazines of 2: three releases in a row fill thread 0's magazine, and the third flushes
    /// its older half (`keeping` 1) to the shared list while thread 1 refills from it.
    @Test("a full magazine flushes its older half while another thread refills (<= 2 preemptions)")
    func fullMagazine_flushesHalf() {
        let report = magazineScenario(threads: 2, slots: 4, magazineSize: 2, limits: ExplorationLimits(preemptionBound: 2)) { world, steps in
            let rounds = steps.thread == 0 ? 3 : 1
            var held: [UnsafeMutableRawPointer] = []
            for _ in 0..<rounds {
                guard let slot = world.acquire(steps.thread, steps) else {
                    return steps.execution.fail("t\(steps.thread): an acquisition failed with 4 slots for 4 acquisitions")
                }
                held.append(slot)
            }
            for slot in held { world.release(slot, steps.thread, steps) }
            // Thread 0's third release found its magazine full and flushed the older half.
            if steps.thread == 0 { steps.execution.expect(world.puts >= 1, "the full magazine flushed nothing") }
        }
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("magazines, a full magazine of 2 flushing half (3 + 1 acquires and releases, 4 slots), <= 2 preemptions: \(report)")
    }

    /// A slot acquired on one thread is released on another, into that thread's magazine, and
    /// acquired there again: the value its first holder wrote must be ordered before.
    @Test("a slot handed to another thread, released and reused there (<= 3 preemptions)")
    func crossThreadRelease() {
        let report = magazineScenario(threads: 2, slots: 2, magazineSize: 2, limits: ExplorationLimits(preemptionBound: 3)) { world, steps in
            if steps.thread == 0 {
                guard let first = world.acquire(0, steps), let second = world.acquire(0, steps) else { return }
                world.send(second, 0, steps)
                world.release(first, 0, steps)
            } else {
                guard let received = world.receive(1, steps) else { return }
                world.release(received, 1, steps)
                if let again = world.acquire(1, steps) { world.release(again, 1, steps) }
            }
        }
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("magazines, a slot released and reused on another thread, <= 3 preemptions: \(report)")
    }

    /// 2 slots and magazines of 2: one thread's magazine can hold a slot the other needs. A
    /// failed acquisition asks for a flush; the cacher flushes at its next use.
    @Test("exhaustion: a failed acquisition asks for a flush, the other magazine gives back (<= 2 preemptions)")
    func exhaustion_flushRequest() {
        /// Across executions: that the paths the scenario is about ran at all.
        final class Tally {
            var withAFailure = 0
            var withACatchUp = 0
        }
        let tally = Tally()
        let report = explore(threads: 2, limits: ExplorationLimits(preemptionBound: 2),
                             setup: { MagazineWorld($0, threads: 2, slots: 2, magazineSize: 2) }, body: { world, steps in
            if steps.thread == 0 {
                for _ in 0..<2 {
                    if let slot = world.acquire(0, steps) { world.release(slot, 0, steps) }
                }
            } else {
                var held: [UnsafeMutableRawPointer] = []
                for _ in 0..<3 {
                    if let slot = world.acquire(1, steps) { held.append(slot) }
                }
                for slot in held { world.release(slot, 1, steps) }
            }
        }, check: { world, execution in
            world.check(execution)
            if world.failedAcquisitions > 0 { tally.withAFailure += 1 }
            // Thread 0's magazine caught up with thread 1's request (it agrees with a generation
            // past 0): the other magazine gave back.
            if world.magazines[0].pointee.seen.load(ordering: .relaxed) > 0 { tally.withACatchUp += 1 }
        })
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        #expect(tally.withAFailure > 0 && tally.withACatchUp > 0, "failures in \(tally.withAFailure) executions, catch-ups in \(tally.withACatchUp)")
        print("magazines, exhaustion and flush requests (2 slots, magazines of 2), <= 2 preemptions: \(report); executions with a failed acquisition \(tally.withAFailure), with thread 0's magazine catching up \(tally.withACatchUp)")
    }

    /// The asked-for flush, deterministically: thread 0 caches both slots; thread 1 fails,
    /// which asks; thread 0's next acquire gives everything back and takes one; thread 1's
    /// retry then gets the other.
    @Test("a flush request is honoured at the cacher's next use")
    func flushRequest_isHonoured() {
        // One model thread plays both threads' parts in turn, with magazine 0 and magazine 1.
        let report = explore(threads: 1, setup: { MagazineWorld($0, threads: 2, slots: 2, magazineSize: 4) }, body: { world, steps in
            guard let a = world.acquire(0, steps), let b = world.acquire(0, steps) else {
                return steps.execution.fail("2 slots, 2 acquisitions: one failed")
            }
            world.release(a, 0, steps)
            world.release(b, 0, steps)
            steps.execution.expect(world.magazines[0].pointee.count.load(ordering: .relaxed) == 2, "both slots cached")
            steps.execution.expect(world.acquire(1, steps) == nil, "nothing on the list: the acquisition fails")
            let kept = world.acquire(0, steps)
            steps.execution.expect(kept != nil && world.magazines[0].pointee.count.load(ordering: .relaxed) == 0,
                                   "asked to flush: the magazine gave everything back and took one slot")
            let other = world.acquire(1, steps)
            steps.execution.expect(other != nil, "the retry gets the slot given back")
            if let kept { world.release(kept, 0, steps) }
            if let other { world.release(other, 1, steps) }
        }, check: { world, execution in world.check(execution) })
        #expect(report.failure == nil, "\(report)")
        #expect(report.executions == 1)
    }

    /// The pool's death (or "the last slot is back") empties every magazine on the deciding
    /// thread, under the pool lock, while an owner's lock-free release may still be finishing.
    /// `_push` stores the count last, releasing; `_flush` loads it acquiring, so the entries it
    /// reads are written.
    @Test("a magazine emptied on another thread while its owner's release lands (every interleaving)")
    func flushByAnotherThread_whileAReleaseLands() {
        let report = lateFlushScenario(defect: false)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("magazines, emptied by another thread while a release lands: \(report)")
    }

    // MARK: Broken variants: the production code with one step weakened

    @Test("the magazines with their pool lock removed: reported")
    func noLock_isReported() {
        let report = magazineScenario(threads: 2, slots: 3, magazineSize: 2, limits: ExplorationLimits(preemptionBound: 2)) { world, steps in
            acquireTwiceReleaseTwice(world, steps.thread, DefectiveSteps(steps, .noLock(heldCellAt: world.lockCell)))
        }
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
        print("magazines without their lock: \(report.failure.map { "reported after \(report.executions) executions: \($0.message)" } ?? "not reported")")
    }

    @Test("a release that publishes its count relaxed: reported")
    func relaxedCountPublish_isReported() {
        let report = lateFlushScenario(defect: true)
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
    }
}

/// Thread 0 holds a slot and releases it into its magazine (the lock-free fast path);
/// thread 1, under the pool lock, flushes thread 0's magazine into the shared list, as teardown
/// does. With `defect`, thread 0's stores to its count are relaxed.
private func lateFlushScenario(defect: Bool) -> ExplorationReport {
    final class World {
        let world: MagazineWorld
        let held: UnsafeMutableRawPointer
        init(_ execution: Execution) {
            world = MagazineWorld(execution, threads: 2, slots: 2, magazineSize: 2)
            held = world.handOutFirst(to: 0)
        }
    }
    return explore(threads: 2, setup: World.init, body: { box, steps in
        let world = box.world
        if steps.thread == 0 {
            let cell = DefectiveSteps.address(of: world.magazines[0].pointee.count)
            world.release(box.held, 0, DefectiveSteps(steps, defect ? .relaxedStores(toCellAt: cell) : .none))
        } else {
            world.lock.lock(steps: steps, contended: { world.lock.waitContended(steps: steps) })
            world.slowPaths += 1
            _Depot._flush(world.magazines[0], keeping: 0, to: ModelFreeList(world: world, steps: steps), steps: steps)
            world.lock.unlock(steps: steps)
        }
    }, check: { box, execution in box.world.check(execution) })
}
