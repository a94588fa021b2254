import PacketBuffers
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A worker's pool outlived by its thread: `WorkerBufferPool.retire()`.
///
/// The owner of a local pool is recognised by a thread-local byte's address, and a thread that
/// starts after the owner exited may get the same address. Without retirement such a thread
/// would take the owner-only path (the free list, no lock) for the dead worker's buffers.
@Suite struct PacketBufferRetireTests {
    /// What a worker thread leaves behind: one buffer lent out (its address), and its identity.
    struct Leftover: Sendable {
        var address: UInt
        var identity: UInt
        var retired: Bool
    }

    /// A stack size no other thread of the test process asks for, and smaller than the default
    /// (8 MiB): glibc gives an ended thread's cached stack to a new thread asking for the same
    /// size first, and never to one that asks for more (the default-size threads of the other
    /// tests), so the probes below usually get the worker's at the first try.
    static let stackSize = (2 << 20) + 4096

    /// Runs a worker on its own thread that takes one buffer, lends it out, retires its pool and
    /// exits; returns (after the thread ended) the buffer's address and the worker's identity.
    static func workerThatLeavesABufferOut(_ pools: PacketBufferPools) -> Leftover {
        let leftover = Locked<Leftover?>(nil)
        let worker = ThreadHandle.start(stackSize: stackSize) {
            let pool = pools.makeWorkerPool()
            var buffer = pool.take()!
            buffer.length = 7
            let lent = buffer.unsafeLend()
            pool.retire()
            leftover.withLock {
                $0 = Leftover(address: UInt(bitPattern: lent.baseAddress), identity: _Home.currentThreadIdentity(),
                              retired: pool.isRetired)
            }
        }
        worker.join()
        return leftover.withLock { $0! }
    }

    @Test func retire_takesBackPendingReturns_andIsIdempotent() {
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 4))
        // Figures read on the worker thread, checked here: (pending, retired) before retire(),
        // after it, and after a second call.
        let seen = Locked<[(pending: Int, retired: Bool)]>([])
        onAnotherThread {
            let pool = pools.makeWorkerPool()
            let address = UInt(bitPattern: pool.take()!.unsafeLend().baseAddress)
            pool.take()!.release()
            onAnotherThread {
                PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
            }
            seen.withLock { $0.append((pools.statistics().workers[0].pendingReturns, pool.isRetired)) }
            pool.retire()
            seen.withLock { $0.append((pools.statistics().workers[0].pendingReturns, pool.isRetired)) }
            pool.retire()  // again: nothing happens
            seen.withLock { $0.append((pools.statistics().workers[0].pendingReturns, pool.isRetired)) }
        }
        let figures = seen.withLock { $0 }
        #expect(figures.map(\.pending) == [1, 0, 0])  // retire() drained the return stack
        #expect(figures.map(\.retired) == [false, true, true])
        let stats = pools.statistics().workers[0]
        #expect(stats.remoteReturns == 1)
        #expect(stats.inUse == 0)
        #expect(pools.statistics().totalInUse == 0)
    }

    @Test func overflowBuffer_releasedAfterRetire_goesToTheOverflowPool() {
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 1, overflowInitial: 2))
        let address = Locked<UInt>(0)
        onAnotherThread {
            let pool = pools.makeWorkerPool()
            let local = pool.take()!
            let overflow = pool.take()!  // the local pool is empty: from the overflow pool
            let lent = UInt(bitPattern: overflow.unsafeLend().baseAddress)
            address.withLock { $0 = lent }
            local.release()
            pool.retire()
        }
        #expect(pools.statistics().overflow.inUse == 1)
        // Not a buffer of the retired pool: debug builds do not trap, and it is simply back.
        PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address.withLock { $0 })!).release()
        let stats = pools.statistics()
        #expect(stats.overflow.inUse == 0)
        #expect(stats.workers[0].remoteReturns == 0)
        #expect(stats.totalInUse == 0)
    }

    static func now() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    #if !DEBUG
    /// The regression test: without retirement the release below takes the owner's path (the
    /// free list, no lock, `remoteReturns` stays 0) on a thread that is not the owner.
    @Test func releaseAfterRetire_onANewThreadWithTheOwnersIdentity_goesOntoTheReturnStack() throws {
        let pools = try PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 4))
        let leftover = Self.workerThatLeavesABufferOut(pools)
        #expect(leftover.retired)
        #expect(pools.statistics().workers[0].inUse == 1)
        // glibc hands a new thread the stack (and so the thread-local block) of one that ended,
        // of the same size first (see `stackSize`); other tests start threads too, so keep
        // trying, within a bound.
        var lengthSeen: Int?  // set by the thread that released it
        var tries = 0
        let deadline = Self.now() + 20_000_000_000
        while lengthSeen == nil && Self.now() < deadline {
            tries += 1
            let done = Locked<Int?>(nil)
            let probe = ThreadHandle.start(stackSize: Self.stackSize) {
                guard _Home.currentThreadIdentity() == leftover.identity else { return }
                let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: leftover.address)!)
                let length = buffer.length
                buffer.release()
                done.withLock { $0 = length }
            }
            probe.join()
            lengthSeen = done.withLock { $0 }
        }
        try #require(lengthSeen != nil, "no new thread got the retired worker's thread identity in \(tries) tries (20 s)")
        #expect(lengthSeen == 7)
        let stats = pools.statistics()
        #expect(stats.workers[0].remoteReturns == 1)  // the safe path, not the owner's
        #expect(stats.workers[0].pendingReturns == 1)
        #expect(stats.workers[0].inUse == 0)
        #expect(stats.totalInUse == 0)
    }

    @Test func releaseAfterRetire_onAnyThread_isCountedAsBack() {
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 4))
        let leftover = Self.workerThatLeavesABufferOut(pools)
        PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: leftover.address)!).release()
        let stats = pools.statistics()
        #expect(stats.workers[0].remoteReturns == 1)
        #expect(stats.workers[0].inUse == 0)
        #expect(stats.totalInUse == 0)
    }
    #endif
}

@Suite struct PacketBufferRetireTrapTests {
    private func expectMessage(_ result: ExitTest.Result?, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains(expected), "stderr: \(stderr.prefix(400))", sourceLocation: sourceLocation)
    }

    @Test func retireOnAnotherThread_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let pool = pools.makeWorkerPool()
            let box = Box(pool)  // a test-only escape from the pool's thread confinement
            onAnotherThread { box.value.retire() }
        }
        #if DEBUG  // optimised builds keep the check but not precondition's message
        expectMessage(result, "worker 0's pool belongs to another thread")
        #else
        _ = result
        #endif
    }

    #if DEBUG
    @Test func releaseAfterRetire_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let leftover = PacketBufferRetireTests.workerThatLeavesABufferOut(pools)
            PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: leftover.address)!).release()
        }
        expectMessage(result, "PacketBuffer released after worker 0's pool was retired: the buffer outlived its worker thread")
    }

    @Test func takeAfterRetire_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: 64, localBuffers: 2))
            let pool = pools.makeWorkerPool()
            pool.retire()
            _ = pool.take()
        }
        expectMessage(result, "WorkerBufferPool.take(): worker 0's pool is retired")
    }
    #endif
}
