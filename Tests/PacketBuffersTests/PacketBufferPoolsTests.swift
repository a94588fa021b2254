import FastAlloc
import PacketBuffers
import TestSupport
import Testing

@Suite struct PacketBufferPoolsTests {
    func makePools(size: Int = 1024, local: Int = 4, overflow: Int = 2, growth: GrowthStrategy = .linear(2),
                   max: Int = 6, recent: Int = 16) throws -> PacketBufferPools {
        try PacketBufferPools(config: PacketBufferConfig(
            bufferSize: size, localBuffers: local, overflowInitial: overflow, overflowGrowth: growth,
            overflowMax: max, recentGrowthEventLimit: recent))
    }

    @Test func take_givesEmptyAlignedBufferOfTheConfiguredSize() throws {
        let pools = try makePools(size: 1500)
        let pool = pools.makeWorkerPool()
        var buffer = pool.take()!
        #expect(buffer.capacity == 1500)
        #expect(buffer.length == 0)
        #expect(buffer.address % 64 == 0)
        let written = buffer.withUnsafeMutableBytes { bytes in
            bytes.initializeMemory(as: UInt8.self, repeating: 0xAB)
            return bytes.count
        }
        #expect(written == 1500)
        buffer.length = 3
        buffer.withUnsafeBytes { #expect(Array($0) == [0xAB, 0xAB, 0xAB]) }
        buffer.release()
        #expect(pools.statistics().workers[0].inUse == 0)
    }

    @Test func buffers_doNotOverlap() throws {
        let pools = try makePools(size: 256, local: 3, overflow: 1, max: 1)
        let pool = pools.makeWorkerPool()
        var a = pool.take()!, b = pool.take()!, c = pool.take()!, d = pool.take()!  // d: overflow
        for (index, address) in [a.address, b.address, c.address, d.address].enumerated() {
            #expect(address % 64 == 0, "buffer \(index)")
        }
        _ = a.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 1) }
        _ = b.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 2) }
        _ = c.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 3) }
        _ = d.withUnsafeMutableBytes { $0.initializeMemory(as: UInt8.self, repeating: 4) }
        a.length = 256; b.length = 256; c.length = 256; d.length = 256
        a.withUnsafeBytes { #expect($0.allSatisfy { $0 == 1 }) }
        b.withUnsafeBytes { #expect($0.allSatisfy { $0 == 2 }) }
        c.withUnsafeBytes { #expect($0.allSatisfy { $0 == 3 }) }
        d.withUnsafeBytes { #expect($0.allSatisfy { $0 == 4 }) }
        hold(a); hold(b); hold(c); hold(d)
    }

    @Test func append_fillsUpToCapacity() throws {
        let pools = try makePools(size: 64)
        let pool = pools.makeWorkerPool()
        var buffer = pool.take()!
        let bytes = [UInt8](repeating: 7, count: 100)
        let copied = bytes.withUnsafeBytes { buffer.append(contentsOf: $0) }
        #expect(copied == 64)
        #expect(buffer.length == 64)
        let more = bytes.withUnsafeBytes { buffer.append(contentsOf: $0) }
        #expect(more == 0)
    }

    @Test func localEmpty_drawsOverflow_growsToMaximum_thenNilAndCounts() throws {
        let pools = try makePools(local: 2, overflow: 2, growth: .linear(2), max: 6, recent: 1)
        let pool = pools.makeWorkerPool()
        var held: [UnsafeMutableRawBufferPointer] = []
        while let buffer = pool.take() { held.append(buffer.unsafeLend()) }
        #expect(held.count == 8, "2 local + 6 overflow")
        let exhausted = pool.take() == nil
        #expect(exhausted)
        let stats = pools.statistics()
        #expect(stats.workers[0].takes == 2)
        #expect(stats.workers[0].overflowDraws == 6)
        #expect(stats.workers[0].failedDraws == 2)
        #expect(stats.workers[0].highWater == 2)
        #expect(stats.overflow.capacity == 6)
        #expect(stats.overflow.inUse == 6)
        #expect(stats.overflow.highWater == 6)
        #expect(stats.overflow.draws == 6)
        #expect(stats.overflow.failedDraws == 2)
        #expect(stats.overflow.growthEvents == 2)
        #expect(stats.overflow.recentGrowthEvents.map(\.capacityAfter) == [6], "bounded to the latest 1")
        #expect(stats.totalInUse == 8)
        // Backpressure lifts as soon as one comes back.
        PacketBuffer.unsafeReclaim(held.removeLast().baseAddress!).release()
        let again = pool.take()
        let gotOne = again != nil
        #expect(gotOne)
        again?.release()
        for lent in held { PacketBuffer.unsafeReclaim(lent.baseAddress!).release() }
        let after = pools.statistics()
        #expect(after.totalInUse == 0)
        #expect(after.overflow.capacity == 6, "the overflow pool never shrinks")
    }

    @Test func lendAndReclaim_byAddress_keepsLength_andGoesHomeToTheRightPool() throws {
        let pools = try makePools(local: 1, overflow: 1, max: 1)
        let pool = pools.makeWorkerPool()
        var local = pool.take()!
        var spill = pool.take()!
        local.length = 10
        spill.length = 20
        let lentLocal = local.unsafeLend()
        let lentSpill = spill.unsafeLend()
        #expect(lentLocal.count == 1024)
        let backLocal = PacketBuffer.unsafeReclaim(lentLocal.baseAddress!)
        let backSpill = PacketBuffer.unsafeReclaim(lentSpill.baseAddress!)
        #expect(backLocal.length == 10)
        #expect(backSpill.length == 20)
        backSpill.release()
        #expect(pools.statistics().overflow.inUse == 0)
        #expect(pools.statistics().workers[0].inUse == 1)
        backLocal.release()
        #expect(pools.statistics().workers[0].inUse == 0)
    }

    @Test func releaseOnOtherThread_returnsToHomePool() throws {
        let pools = try makePools(local: 2, overflow: 1, max: 1)
        let pool = pools.makeWorkerPool()
        let local = pool.take()!.unsafeLend()
        let address = UInt(bitPattern: local.baseAddress)
        onAnotherThread {
            PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
        }
        var stats = pools.statistics().workers[0]
        #expect(stats.remoteReturns == 1)
        #expect(stats.pendingReturns == 1)
        #expect(stats.inUse == 0, "a pending return counts as back")
        #expect(pool.drainReturns() == 1)
        stats = pools.statistics().workers[0]
        #expect(stats.pendingReturns == 0)
        #expect(stats.inUse == 0)
        // The returned buffer is reused first (LIFO), by address.
        let reused = pool.take()!
        #expect(reused.address == address)
    }

    @Test func emptyLocalPool_drainsReturnsBeforeDrawingOverflow() throws {
        let pools = try makePools(local: 1, overflow: 1, max: 1)
        let pool = pools.makeWorkerPool()
        let address = UInt(bitPattern: pool.take()!.unsafeLend().baseAddress)
        onAnotherThread {
            PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
        }
        let next = pool.take()!
        #expect(next.address == address)
        #expect(pools.statistics().workers[0].overflowDraws == 0)
    }

    @Test func overflowBufferReleasedOnOtherThread_goesBackUnderTheLock() throws {
        let pools = try makePools(local: 1, overflow: 1, max: 1)
        let pool = pools.makeWorkerPool()
        let first = pool.take()!
        let spill = pool.take()!.unsafeLend()
        let address = UInt(bitPattern: spill.baseAddress)
        onAnotherThread {
            PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
        }
        #expect(pools.statistics().overflow.inUse == 0)
        hold(first)
    }

    @Test func takeShared_servesThreadsWithoutALocalPool() throws {
        let pools = try makePools(overflow: 1, max: 1)
        let buffer = pools.takeShared()
        let gotOne = buffer != nil
        let exhausted = pools.takeShared() == nil
        #expect(gotOne && exhausted)
        #expect(pools.statistics().overflow.failedDraws == 1)
        buffer?.release()
    }
}
