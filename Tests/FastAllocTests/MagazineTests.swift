import FastAlloc
import TestSupport
import Threads
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ThreadSafePool` with per-thread magazines (`PoolConfig.magazineSize > 0`).
@Suite struct MagazineTests {
    @Test func config_rejectsBadMagazineSizes_namingTheField() {
        #expect(throws: PoolConfigError(field: "magazineSize", value: "-1", expected: "0...1024")) {
            try PoolConfig<Int>(capacity: 4, magazineSize: -1)
        }
        #expect(throws: PoolConfigError(field: "magazineSize", value: "1025", expected: "0...1024")) {
            try PoolConfig<Int>(capacity: 4, magazineSize: 1025)
        }
        #expect(throws: PoolConfigError.self) {
            try PoolConfig<Int>(capacity: 4, order: .lowestFirst, magazineSize: 8)
        }
        var config = try! PoolConfig<Int>(capacity: 4, magazineSize: 8)
        config.magazineSize = 2000
        #expect(throws: PoolConfigError.self) { try ThreadSafePool<Int>(config: config) }
    }

    @Test func oneThread_pairsAreServedByTheMagazine_withoutTheLock() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 64, magazineSize: 32))
        let pairs = 10_000
        for i in 0..<pairs {
            let handle = pool.acquire(i)
            #expect(handle.value == i)
        }
        let stats = pool.statistics
        #expect(stats.inUse == 0)
        #expect(stats.acquisitions == UInt64(pairs))
        #expect(stats.releases == UInt64(pairs))
        // The first acquire takes a fresh slot under the lock and its release fills the
        // magazine: every later pair is a magazine hit.
        #expect(stats.magazineAcquisitions == UInt64(pairs - 1))
        #expect(stats.magazineReleases == UInt64(pairs))
        #expect(stats.cachedInMagazines == 1)
        #expect(stats.magazines == 1)
        #expect(pool.lockStatistics.acquisitions <= 3, "the lock is taken by the first acquire and the registration only")
    }

    @Test func refillAndFlush_moveHalfAMagazine_underTheLock() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 64, magazineSize: 8))
        // 20 out, 20 back: the magazine takes 8, flushes 4 when full, takes 4 more, ...
        let batch = (0..<20).map { _ in SlotBox(pool.acquire(0)) }
        #expect(pool.statistics.inUse == 20)
        for box in batch { box.release() }
        var stats = pool.statistics
        #expect(stats.inUse == 0)
        #expect(stats.cachedInMagazines <= 8 && stats.cachedInMagazines >= 4)
        #expect(stats.magazineReleases == 20)
        // Taking 20 again: the magazine serves what it holds, then refills 4 at a time.
        let again = (0..<20).map { _ in SlotBox(pool.acquire(1)) }
        stats = pool.statistics
        #expect(stats.inUse == 20)
        #expect(stats.acquisitions == 40)
        #expect(stats.magazineAcquisitions >= 16, "only fresh slots miss (a refill hand-out counts as served)")
        for box in again { box.release() }
        #expect(pool.statistics.inUse == 0)
        #expect(pool.statistics.capacity == 64, "no growth: capacity was enough")
    }

    /// Hostile scale: 8 threads, each with its own magazine, handing handles to one another,
    /// on a small growing pool (refills, flushes and growth all happen). Every figure must add up.
    @Test func stress_eightThreadsHandingOff_statisticsExact_valuesDestroyedOnce() throws {
        let threads = 8
        let iterations = 20_000
        let tracker = LifetimeTracker()
        let failures = Atomic<Int>(0)
        do {
            let pool = try ThreadSafePool<Tracked>(config: PoolConfig(
                capacity: 8, growth: .linear(8), maxCapacity: 128, magazineSize: 16))
            let handoff = Handoff()
            let reading = Atomic<Bool>(true)
            let badSnapshots = Atomic<Int>(0)
            let reader = ThreadHandle.start {  // statistics read while everything runs
                while reading.load(ordering: .relaxed) {
                    let stats = pool.statistics
                    if stats.inUse < 0 || stats.inUse > stats.capacity || stats.magazineAcquisitions > stats.acquisitions
                        || stats.cachedInMagazines > 16 * (threads + 1) {
                        badSnapshots.add(1, ordering: .relaxed)
                    }
                }
            }
            onThreadsTogether(threads) { thread in
                for i in 0..<iterations {
                    if var handle = pool.tryAcquire(tracker.make()) {
                        handle.withValue { $0.payload = thread * iterations + i }
                        if handle.value.payload != thread * iterations + i { failures.add(1, ordering: .relaxed) }
                        if i % 3 == 0 { handoff.put(handle) }
                    }
                    if i % 5 == 0 { handoff.takeAndRelease() }
                }
            }
            reading.store(false, ordering: .relaxed)
            reader.join()
            handoff.drain()
            let stats = pool.statistics
            #expect(badSnapshots.load(ordering: .relaxed) == 0, "every snapshot taken meanwhile was within bounds")
            #expect(failures.load(ordering: .relaxed) == 0, "nobody else wrote a slot we held")
            #expect(stats.inUse == 0)
            #expect(stats.acquisitions == stats.releases)
            #expect(stats.acquisitions + stats.failedAcquisitions == UInt64(threads * iterations))
            #expect(stats.capacity <= 128)
            // The eight exited (and flushed); this thread drained the hand-off into its own.
            #expect(stats.magazines == 1)
            #expect(stats.cachedInMagazines <= 16)
            #expect(stats.magazineAcquisitions > 0 && stats.magazineReleases > 0)
            #expect(stats.magazineAcquisitions <= stats.acquisitions)
        }
        #expect(tracker.live == 0, "the pool deinitialised every value, cached ones included")
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }

    @Test func threadExit_returnsItsMagazine() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 32, magazineSize: 16))
        onThreadsTogether(4) { thread in
            let handles = (0..<6).map { SlotBox(pool.acquire(thread * 10 + $0)) }
            for box in handles { box.release() }
        }
        let stats = pool.statistics
        #expect(stats.magazines == 0)
        #expect(stats.cachedInMagazines == 0)
        #expect(stats.inUse == 0)
        #expect(stats.acquisitions == 24 && stats.releases == 24)
        #expect(stats.magazineReleases == 24, "counters of exited threads' magazines are kept")
        // Everything is back in the shared core: one thread can take all 32.
        let all = pool.tryAcquire(count: 32) { $0 }
        #expect(pool.statistics.inUse == 32)
        hold(all)
    }

    /// A fixed pool whose free slots all sit in one thread's magazine: another thread's
    /// tryAcquire fails once and asks for a flush; the owner's next use gives them back.
    @Test func exhaustion_asksMagazinesToFlush() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 4, magazineSize: 4))
        let four = (0..<4).map { SlotBox(pool.acquire($0)) }
        for box in four { box.release() }
        #expect(pool.statistics.cachedInMagazines == 4)

        let gotOne = Atomic<Bool>(true)
        onAnotherThread { gotOne.store(pool.tryAcquire(9) != nil, ordering: .relaxed) }
        #expect(gotOne.load(ordering: .relaxed) == false, "all four are cached on this thread")
        var stats = pool.statistics
        #expect(stats.failedAcquisitions == 1)
        #expect(stats.magazineFlushRequests == 1)
        #expect(stats.inUse == 0)

        // This thread's next use flushes everything and takes one without refilling.
        let mine = pool.acquire(5)
        #expect(pool.statistics.cachedInMagazines == 0)
        let took = Atomic<Int>(0)
        onAnotherThread {
            var three: [SlotBox] = []
            for i in 0..<3 {
                if let handle = pool.tryAcquire(i) { three.append(SlotBox(handle)) }
            }
            took.store(three.count, ordering: .relaxed)
        }
        #expect(took.load(ordering: .relaxed) == 3)
        mine.release()
        stats = pool.statistics
        #expect(stats.inUse == 0)
        #expect(stats.acquisitions == 8 && stats.releases == 8)
    }

    /// The pool dies while another live thread's magazine caches slots: teardown empties it and
    /// clears that thread's entry, so its exit later touches nothing freed.
    @Test func poolDeath_withAMagazineOnALiveThread() throws {
        let tracker = LifetimeTracker()
        let cached = Semaphore()
        let poolGone = Semaphore()
        let worker: ThreadHandle
        do {
            let pool = try ThreadSafePool<Tracked>(config: PoolConfig(capacity: 8, magazineSize: 8))
            let lent = Locked<ThreadSafePool<Tracked>?>(pool)  // the worker lets go of it
            worker = ThreadHandle.start {
                do {
                    let pool = lent.withLock { $0.take()! }
                    let handles = (0..<5).map { _ in TrackedHandleBox(pool.acquire(tracker.make())) }
                    for box in handles { box.release() }
                }
                cached.signal()
                poolGone.wait()
                // Another pool, likely at the same index: this thread registers afresh.
                let next = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 2, magazineSize: 2))
                next.acquire(1).release()
                precondition(next.statistics.cachedInMagazines == 1)
            }
            cached.wait()
            #expect(pool.statistics.cachedInMagazines == 5)
            #expect(tracker.live == 5, "released values stay in their slots for reuse")
        }
        #expect(tracker.live == 0, "the values cached in the live thread's magazine were destroyed")
        poolGone.signal()
        worker.join()
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }

    @Test func hooksRun_onMagazinePaths() throws {
        let acquired = Atomic<Int>(0)
        let released = Atomic<Int>(0)
        let pool = try ThreadSafePool<Int>(config: PoolConfig(
            capacity: 4, initialize: { 0 },
            onAcquire: { _ in acquired.add(1, ordering: .relaxed) },
            onRelease: { $0 = -1; released.add(1, ordering: .relaxed) }, magazineSize: 4))
        for _ in 0..<10 {
            let handle = pool.acquire()
            #expect(handle.value == 0 || handle.value == -1)
        }
        #expect(acquired.load(ordering: .relaxed) == 10)
        #expect(released.load(ordering: .relaxed) == 10)
        #expect(pool.statistics.magazineAcquisitions == 9)
    }

    @Test func batches_bypassMagazines_andCountExactly() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 16, magazineSize: 8))
        pool.acquire(1).release()  // one slot cached
        var batch = pool.acquire(count: 10) { $0 }
        #expect(pool.statistics.inUse == 10)
        let first = batch.popFirst()
        #expect(batch.count == 9)
        batch.release()
        first?.release()
        let stats = pool.statistics
        #expect(stats.inUse == 0)
        #expect(stats.acquisitions == 11 && stats.releases == 11)
    }

    /// Pools come and go (tests, per-request pools): indices are reused, nothing leaks.
    @Test func manyPools_createdAndDestroyed() throws {
        for round in 0..<2_000 {
            let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 2, magazineSize: 2))
            pool.acquire(round).release()
            #expect(pool.statistics.cachedInMagazines == 1)
        }
    }
}

/// Holds a handle so that an array of them can be released in order.
final class SlotBox: @unchecked Sendable {
    // @unchecked: used by one thread at a time (the tests hand boxes over via thread joins).
    private var handle: SharedPoolHandle<Int>?
    init(_ handle: consuming SharedPoolHandle<Int>) { self.handle = consume handle }
    func release() { handle.take()?.release() }
}

final class TrackedHandleBox: @unchecked Sendable {
    // @unchecked: used by one thread at a time (handed over by thread start and join).
    private var handle: SharedPoolHandle<Tracked>?
    init(_ handle: consuming SharedPoolHandle<Tracked>) { self.handle = consume handle }
    func release() { handle.take()?.release() }
}

/// A counting semaphore on a pthread mutex and condition (visible to ThreadSanitizer).
final class Semaphore: @unchecked Sendable {
    // @unchecked: `count` is touched with `mutex` held only.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var count = 0
    init() { pthread_mutex_init(mutex, nil); pthread_cond_init(condition, nil) }
    deinit {
        pthread_cond_destroy(condition); pthread_mutex_destroy(mutex)
        condition.deallocate(); mutex.deallocate()
    }
    func signal() {
        pthread_mutex_lock(mutex); count += 1; pthread_cond_signal(condition); pthread_mutex_unlock(mutex)
    }
    func wait() {
        pthread_mutex_lock(mutex)
        while count == 0 { pthread_cond_wait(condition, mutex) }
        count -= 1
        pthread_mutex_unlock(mutex)
    }
}
