import FastAlloc
import TestSupport
import Synchronization
import Testing

@Suite struct ThreadSafePoolTests {
    @Test func acquireAndRelease_countLockAcquisitions() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 4))
        let before = pool.lockStatistics.acquisitions
        let handle = pool.acquire(1)
        handle.release()
        let after = pool.lockStatistics
        // one for acquire, one for release (reading the statistics takes no lock)
        #expect(after.acquisitions - before == 2)
        #expect(after.contended <= after.acquisitions)
        #expect(pool.statistics.inUse == 0)
    }

    @Test func exhaustion_tryAcquireReturnsNil() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 2, growth: .linear(1), maxCapacity: 3))
        let batch = pool.acquire(count: 3) { $0 }
        let failed = pool.tryAcquire(4) == nil
        #expect(failed)
        #expect(pool.statistics.failedAcquisitions == 1)
        #expect(pool.growthEvents.count == 1)
        _ = batch
    }

    @Test func releaseOnOtherThread_returnsToHomePool() throws {
        let pool = try ThreadSafePool<Int>(config: PoolConfig(capacity: 8))
        let handle = pool.acquire(5)
        #expect(pool.statistics.inUse == 1)
        let box = HandleBox(handle)
        onAnotherThread { box.take().release() }
        #expect(pool.statistics.inUse == 0)
        #expect(pool.statistics.releases == 1)
    }

    @Test func stress_threadsReleasedTogether_endWithZeroInUse() throws {
        let threads = 4
        let iterations = 20_000
        let tracker = LifetimeTracker()
        let pool = try ThreadSafePool<Tracked>(config: PoolConfig(capacity: 8, growth: .linear(8), maxCapacity: 64))
        let handoff = Handoff()
        onThreadsTogether(threads) { thread in
            for i in 0..<iterations {
                if var handle = pool.tryAcquire(tracker.make()) {
                    handle.withValue { $0.payload = thread * iterations + i }
                    #expect(handle.value.payload == thread * iterations + i, "nobody else wrote our slot")
                    if i % 3 == 0 {
                        handoff.put(handle)  // someone else (maybe another thread) releases it
                    }
                }
                if i % 5 == 0 { handoff.takeAndRelease() }
            }
        }
        handoff.drain()
        let stats = pool.statistics
        #expect(stats.inUse == 0)
        #expect(stats.acquisitions == stats.releases)
        #expect(stats.acquisitions + stats.failedAcquisitions == UInt64(threads * iterations))
        #expect(stats.capacity <= 64)
        let lock = pool.lockStatistics
        #expect(lock.acquisitions >= 2 * stats.acquisitions)
        #expect((lock.contended == 0) == (lock.waitNanoseconds == 0))
        #expect(tracker.doubleDestroys.load(ordering: .relaxed) == 0)
    }
}

/// Moves a noncopyable handle into a closure that runs on another thread.
final class HandleBox: @unchecked Sendable {
    // @unchecked: taken exactly once, after the creating thread handed it over (pthread_create
    // orders the accesses).
    private var handle: SharedPoolHandle<Int>?
    init(_ handle: consuming SharedPoolHandle<Int>) { self.handle = consume handle }
    func take() -> SharedPoolHandle<Int> { handle.take()! }
}

/// A locked stack of handles that threads pass to one another.
final class Handoff: Sendable {
    private let handles = Locked<[UInt]>([])  // retained TrackedBox addresses

    func put(_ handle: consuming SharedPoolHandle<Tracked>) {
        let box = UInt(bitPattern: Unmanaged.passRetained(TrackedBox(handle)).toOpaque())
        handles.withLock { $0.append(box) }
    }

    func takeAndRelease() {
        guard let raw = handles.withLock({ $0.popLast() }) else { return }
        // Safe: every address in `handles` is a TrackedBox retained by put(_:), popped exactly once.
        Unmanaged<TrackedBox>.fromOpaque(UnsafeRawPointer(bitPattern: raw)!).takeRetainedValue().take().release()
    }

    func drain() {
        while handles.withLock({ !$0.isEmpty }) { takeAndRelease() }
    }
}

final class TrackedBox {
    private var handle: SharedPoolHandle<Tracked>?
    init(_ handle: consuming SharedPoolHandle<Tracked>) { self.handle = consume handle }
    func take() -> SharedPoolHandle<Tracked> { handle.take()! }
}

@Suite struct ThreadLocalPoolTests {
    @Test func growsAndReuses_onItsThread() throws {
        let pool = try ThreadLocalPool<Int>(config: PoolConfig(capacity: 2, growth: .linear(2), maxCapacity: 6))
        let batch = pool.acquire(count: 6) { $0 }
        #expect(pool.growthEvents.count == 2)
        let exhausted = pool.tryAcquire(0) == nil
        #expect(exhausted)
        #expect(pool.statistics.inUse == 6)
        batch.release()
        #expect(pool.statistics.inUse == 0)
    }

    @Test func onePoolPerThread_noSharing() {
        let totals = Locked<[Int]>([])
        onThreadsTogether(2) { thread in
            let pool = try! ThreadLocalPool<Int>(config: PoolConfig(capacity: 4, growth: .exponential(2)))
            var sum = 0
            for i in 0..<10_000 {
                let handle = pool.acquire(i)
                sum &+= handle.value
            }
            #expect(pool.statistics.inUse == 0)
            #expect(pool.capacity == 4, "one at a time never needs growth")
            totals.withLock { $0.append(sum) }
        }
        #expect(totals.withLock { $0 } == [49_995_000, 49_995_000])
    }
}
