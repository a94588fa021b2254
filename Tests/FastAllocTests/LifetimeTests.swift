import FastAlloc
import TestSupport
import Testing

@Suite struct LifetimeTests {
    @Test(arguments: [AllocationOrder.lifo, .lowestFirst])
    func everyValue_initialisedAndDeinitialisedExactlyOnce(_ order: AllocationOrder) throws {
        let tracker = LifetimeTracker()
        do {
            let pool = try GrowingPool<Tracked>(config: PoolConfig(capacity: 4, growth: .exponential(2), order: order))
            for round in 0..<10 {
                var batch = pool.acquire(count: 5 + round) { _ in tracker.make() }
                let single = pool.acquire(tracker.make())
                _ = batch.popFirst()
                _ = single
            }
            // Released values stay in their slots for reuse: alive until reuse or pool death.
            #expect(tracker.live > 0)
        }
        #expect(tracker.made.load(ordering: .relaxed) == 10 * 6 + (0..<10).reduce(0, +))
        #expect(tracker.live == 0, "the pool deinitialised every value it still held")
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }

    @Test func replacingRetainedValue_deinitialisesOldOne() throws {
        let tracker = LifetimeTracker()
        let pool = try FixedPool<Tracked>(capacity: 1)
        pool.acquire(tracker.make()).release()
        #expect(tracker.live == 1, "kept for reuse")
        pool.acquire(tracker.make()).release()
        #expect(tracker.live == 1, "the new value replaced the old")
        #expect(tracker.destroyed.load(ordering: .relaxed) == 1)
    }

    @Test func threadSafePool_destroysEverything() throws {
        let tracker = LifetimeTracker()
        do {
            let pool = try ThreadSafePool<Tracked>(config: PoolConfig(capacity: 2, growth: .linear(2)))
            let batch = pool.acquire(count: 5) { _ in tracker.make() }
            let one = pool.acquire(tracker.make())
            hold(batch); hold(one)
        }
        #expect(tracker.made.load(ordering: .relaxed) == 6)
        #expect(tracker.live == 0)
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }
}

@Suite struct PoolableTests {
    struct Scratch: Poolable {
        var bytes: [UInt8] = []
        var acquired = 0
        var released = 0
        mutating func onAcquire() {
            acquired += 1
            bytes.removeAll(keepingCapacity: true)
        }
        mutating func onRelease() { released += 1 }
    }

    @Test func hooks_runOnAcquireAndRelease_andValueIsReused() throws {
        let pool = try FixedPool<Scratch>(config: PoolConfig(capacity: 1, initialize: { Scratch() }))
        var first = pool.acquire()
        first.withValue { $0.bytes.append(contentsOf: [1, 2, 3]); $0.bytes.reserveCapacity(1000) }
        let capacity = first.value.bytes.capacity
        first.release()
        let second = pool.acquire()
        #expect(second.value.bytes.isEmpty, "onAcquire reset it")
        #expect(second.value.bytes.capacity == capacity, "the storage was reused")
        #expect(second.value.acquired == 2)
        #expect(second.value.released == 1)
    }

    @Test func configHooks_runAfterTypeHooks_forTypesYouDontOwn() throws {
        let pool = try GrowingPool<[Int]>(config: PoolConfig(
            capacity: 1, growth: .linear(1), initialize: { [7] },
            onAcquire: { $0.append(1) }, onRelease: { $0.removeAll() }))
        var handle = pool.acquire()
        #expect(handle.value == [7, 1])
        handle.withValue { $0.append(5) }
        handle.release()
        #expect(pool.acquire().value == [1], "released, reset to [], then acquired")
    }

    @Test func acquireWithValue_runsHooksToo() throws {
        let pool = try FixedPool<Scratch>(capacity: 2)
        let handle = pool.acquire(Scratch(bytes: [9]))
        #expect(handle.value.acquired == 1)
        #expect(handle.value.bytes.isEmpty)
    }
}

#if !DEBUG
/// Release builds only (`make test-release`): a pool destroyed while a handle is out keeps its
/// storage until that handle comes back, then frees it and deinitialises every value.
@Suite struct OrphanTests {
    @Test func poolDestroyedWithHandleOut_lastHandleFreesEverything() throws {
        let tracker = LifetimeTracker()
        var pool: GrowingPool<Tracked>? = try GrowingPool<Tracked>(config: PoolConfig(capacity: 2, growth: .linear(2)))
        let survivor = pool!.acquire(tracker.make())
        pool!.acquire(tracker.make()).release()
        pool = nil
        #expect(tracker.live == 2, "storage kept while a handle is out")
        survivor.release()
        #expect(tracker.live == 0, "the last handle freed the storage and its values")
    }

    @Test func threadSafePoolDestroyedWithHandleOut_lastHandleFreesEverything() throws {
        let tracker = LifetimeTracker()
        var pool: ThreadSafePool<Tracked>? = try ThreadSafePool<Tracked>(config: PoolConfig(capacity: 2))
        let survivor = pool!.acquire(tracker.make())
        pool = nil
        #expect(tracker.live == 1)
        survivor.release()
        #expect(tracker.live == 0)
    }

    /// With magazines: the pool dies while this thread's magazine caches a slot and another
    /// thread holds a handle and caches slots too. Magazines stop serving; the last handle back,
    /// on the other thread, frees everything (cached values included).
    @Test func threadSafePoolWithMagazinesDestroyedWithHandlesOut_lastHandleFreesEverything() throws {
        let tracker = LifetimeTracker()
        var pool: ThreadSafePool<Tracked>? = try ThreadSafePool<Tracked>(config: PoolConfig(capacity: 8, magazineSize: 4))
        let mine = pool!.acquire(tracker.make())
        let cached = pool!.acquire(tracker.make())
        let box = TrackedHandleBox(pool!.acquire(tracker.make()))
        cached.release()  // into this thread's magazine, its value kept for reuse
        pool = nil
        #expect(tracker.live == 3, "storage kept while handles are out")
        mine.release()
        #expect(tracker.live == 3, "one handle is still out")
        onAnotherThread { box.release() }
        #expect(tracker.live == 0, "the last handle freed the storage and every value")
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }
}
#endif

@Suite struct ZeroSizedTests {
    @Test func voidElements_getDistinctSlots() throws {
        let pool = try FixedPool<Void>(capacity: 3)
        var batch = pool.acquire(count: 3) { _ in () }
        var addresses = Set<UInt>()
        while let handle = batch.popFirst() { addresses.insert(handle.address) }
        #expect(addresses.count == 3)
        #expect(pool.slotStride == 8, "just the link word")
    }
}
