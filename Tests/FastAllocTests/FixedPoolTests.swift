import FastAlloc
import TestSupport
import Testing

@Suite struct FixedPoolTests {
    @Test func acquire_returnsValue_andReleaseFreesSlot() throws {
        let pool = try FixedPool<Int>(capacity: 2)
        var handle = pool.acquire(42)
        #expect(handle.value == 42)
        handle.withValue { $0 += 1 }
        #expect(handle.value == 43)
        #expect(pool.statistics.inUse == 1)
        handle.release()
        #expect(pool.statistics.inUse == 0)
        #expect(pool.statistics.releases == 1)
    }

    @Test func deinit_returnsSlot() throws {
        let pool = try FixedPool<Int>(capacity: 1)
        do {
            let handle = pool.acquire(1)
            #expect(pool.available == 0)
            _ = handle
        }
        #expect(pool.available == 1)
    }

    @Test func exhaustion_tryAcquireReturnsNil_andCounts() throws {
        let pool = try FixedPool<Int>(capacity: 3)
        let a = pool.acquire(1), b = pool.acquire(2), c = pool.acquire(3)
        let exhausted = pool.tryAcquire(4) == nil
        #expect(exhausted)
        let stillExhausted = pool.tryAcquire(5) == nil
        #expect(stillExhausted)
        let stats = pool.statistics
        #expect(stats.failedAcquisitions == 2)
        #expect(stats.inUse == 3)
        #expect(stats.capacity == 3)
        hold(a); hold(b); hold(c)
        #expect(pool.capacity == 3, "a FixedPool never grows")
    }

    @Test func lifo_reusesMostRecentlyReleasedSlot() throws {
        let pool = try FixedPool<Int>(capacity: 4)
        let a = pool.acquire(1)
        let b = pool.acquire(2)
        let addressB = b.address
        b.release()
        let c = pool.acquire(3)
        #expect(c.address == addressB)
        hold(a); hold(c)
    }

    @Test func lowestFirst_handsOutLowestFreeSlot_acrossBitmapWords() throws {
        let pool = try FixedPool<Int>(config: PoolConfig(capacity: 200, order: .lowestFirst))
        let pointers = (0..<200).map { pool.unsafeAcquire($0)! }
        // Fresh slots come out in address order.
        for index in 1..<200 { #expect(pointers[index] - pointers[index - 1] == pool.slotStride / MemoryLayout<Int>.stride) }
        #expect(pool.unsafeAcquire(0) == nil)
        for index in [129, 3, 70, 199] { pool.unsafeRelease(pointers[index]) }
        let again = (0..<4).map { _ in pool.unsafeAcquire(-1)! }
        #expect(again == [pointers[3], pointers[70], pointers[129], pointers[199]])
        for pointer in pointers { pool.unsafeRelease(pointer) }
        #expect(pool.statistics.inUse == 0)
    }

    @Test func lifo_order_isReverseOfRelease() throws {
        let pool = try FixedPool<Int>(capacity: 8)
        let pointers = (0..<8).map { pool.unsafeAcquire($0)! }
        for index in [1, 5, 2] { pool.unsafeRelease(pointers[index]) }
        let again = (0..<3).map { _ in pool.unsafeAcquire(-1)! }
        #expect(again == [pointers[2], pointers[5], pointers[1]])
        for pointer in pointers { pool.unsafeRelease(pointer) }
    }

    @Test func slab_neverMoves_andSlotsAreContiguous() throws {
        let pool = try FixedPool<Int>(capacity: 8)
        let slab = pool.slabAddress
        var addresses: [UInt] = []
        for _ in 0..<3 {
            let batch = pool.acquire(count: 8) { $0 }
            _ = batch
            #expect(pool.slabAddress == slab)
        }
        let h = pool.acquire(1)
        addresses.append(h.address)
        #expect(h.address >= slab && h.address < slab + UInt(8 * pool.slotStride))
    }

    @Test(arguments: [8, 16, 32, 64, 128, 4096])
    func everySlot_honoursAlignment(_ alignment: Int) throws {
        let pool = try FixedPool<Int>(config: PoolConfig(capacity: 33, alignment: alignment))
        var batch = pool.acquire(count: 33) { $0 }
        var seen = Set<UInt>()
        while let handle = batch.popFirst() {
            let aligned = handle.isAligned(to: alignment)
            #expect(aligned)
            seen.insert(handle.address)
        }
        #expect(seen.count == 33)
        #expect(pool.slotStride % alignment == 0)
    }

    @Test func statistics_countEverything() throws {
        let pool = try FixedPool<Int>(capacity: 4)
        for round in 0..<5 {
            let batch = pool.acquire(count: 3) { $0 + round }
            _ = batch
        }
        let one = pool.acquire(9)
        let stats = pool.statistics
        #expect(stats.acquisitions == 16)
        #expect(stats.releases == 15)
        #expect(stats.inUse == 1)
        #expect(stats.highWater == 3)
        #expect(stats.growthEvents == 0)
        #expect(stats.utilisation == 0.25)
        _ = one
    }

    @Test func largeElements_2KiB() throws {
        struct Block { var bytes: (InlineArray<256, UInt64>) = .init(repeating: 0) }
        let pool = try FixedPool<Block>(capacity: 4)
        var handle = pool.acquire(Block())
        handle.withUnsafeMutableBytes { bytes in
            #expect(bytes.count == 2048)
            bytes.storeBytes(of: 0xABCD, toByteOffset: 2040, as: UInt64.self)
        }
        #expect(handle.value.bytes[255] == 0xABCD)
    }
}
