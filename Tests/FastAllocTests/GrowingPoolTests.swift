import FastAlloc
import TestSupport
import Testing

@Suite struct GrowingPoolTests {
    /// Acquires one slot at a time until the pool fails, recording capacity after each growth.
    private func capacities<T>(_ pool: GrowingPool<T>, value: T) -> [Int] {
        var pointers: [UnsafeMutablePointer<T>] = []
        var seen = [pool.capacity]
        while let pointer = pool.unsafeAcquire(value) {
            pointers.append(pointer)
            if pool.capacity != seen.last { seen.append(pool.capacity) }
        }
        for pointer in pointers { pool.unsafeRelease(pointer) }
        return seen
    }

    @Test func linear_growsByStep_upToMaximum() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 4, growth: .linear(3), maxCapacity: 12))
        #expect(capacities(pool, value: 0) == [4, 7, 10, 12])
        let events = pool.growthEvents
        #expect(events.map(\.capacityBefore) == [4, 7, 10])
        #expect(events.map(\.capacityAfter) == [7, 10, 12])
        #expect(pool.statistics.growthEvents == 3)
        #expect(pool.statistics.failedAcquisitions == 1)
    }

    @Test func exponential_multipliesByFactor_upToMaximum() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 2, growth: .exponential(2), maxCapacity: 20))
        #expect(capacities(pool, value: 0) == [2, 4, 8, 16, 20])
        let pool15 = try GrowingPool<Int>(config: PoolConfig(capacity: 2, growth: .exponential(1.5), maxCapacity: 10))
        #expect(capacities(pool15, value: 0) == [2, 3, 5, 8, 10])
    }

    @Test func growthEvents_haveMonotonicTimes() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 1, growth: .linear(1), maxCapacity: 6))
        _ = capacities(pool, value: 0)
        let times = pool.growthEvents.map(\.monotonicNanoseconds)
        #expect(times.count == 5)
        #expect(times == times.sorted())
        #expect(times.allSatisfy { $0 > 0 })
    }

    @Test func addresses_stayStableAcrossGrowth() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 2, growth: .exponential(2), maxCapacity: 1024))
        var pointers: [UnsafeMutablePointer<Int>] = []
        for index in 0..<1000 {
            let pointer = pool.unsafeAcquire(index)!
            pointers.append(pointer)
        }
        #expect(pool.chunkCount == 10)
        // Every value is still where it was put, though the pool grew nine times meanwhile.
        for (index, pointer) in pointers.enumerated() { #expect(pointer.pointee == index) }
        #expect(Set(pointers).count == 1000)
        for pointer in pointers { pool.unsafeRelease(pointer) }
    }

    @Test func neverShrinks() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 1, growth: .linear(1), maxCapacity: 8))
        do {
            let batch = pool.acquire(count: 8) { $0 }
            #expect(batch.count == 8)
        }
        #expect(pool.statistics.inUse == 0)
        #expect(pool.capacity == 8)
        #expect(pool.statistics.highWater == 8)
    }

    @Test func batch_isAllOrNothing() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 4, growth: .linear(4), maxCapacity: 10))
        let held = pool.acquire(count: 3) { $0 }
        let exhausted = pool.tryAcquire(count: 8) { $0 } == nil
        #expect(exhausted, "only 7 obtainable")
        #expect(pool.statistics.inUse == 3)
        #expect(pool.capacity == 4, "a failed batch takes and grows nothing")
        var batch = pool.tryAcquire(count: 7) { $0 * 10 }!
        #expect(pool.capacity == 10)
        var sum = 0
        batch.forEach { sum += $0 }
        #expect(sum == 210)
        let first = batch.popFirst()!
        #expect(batch.count == 6)
        hold(held); hold(first)
    }

    @Test func lowestFirst_spansChunks() throws {
        let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 3, growth: .linear(70), order: .lowestFirst))
        let pointers = (0..<100).map { pool.unsafeAcquire($0)! }
        pool.unsafeRelease(pointers[80])
        pool.unsafeRelease(pointers[1])
        pool.unsafeRelease(pointers[40])
        #expect(pool.unsafeAcquire(0) == pointers[1])
        #expect(pool.unsafeAcquire(0) == pointers[40])
        #expect(pool.unsafeAcquire(0) == pointers[80])
        for pointer in pointers { pool.unsafeRelease(pointer) }
        #expect(pool.statistics.inUse == 0)
    }
}
