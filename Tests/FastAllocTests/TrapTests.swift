import FastAlloc
import TestSupport
import Threads
import Testing

/// Each trap, in its own child process, and the message it prints. Debug-only checks are
/// tested only in debug builds.
@Suite struct TrapTests {
    /// Runs the exit test's result through: it failed, and stderr says `expected`.
    private func expectMessage(_ result: ExitTest.Result?, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains(expected), "stderr: \(stderr.prefix(400))", sourceLocation: sourceLocation)
    }

    @Test func acquire_whenExhausted_trapsNamingThePool() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! FixedPool<Int>(config: PoolConfig(capacity: 1, name: "frames"))
            let held = pool.acquire(1)
            let second = pool.acquire(2)
            hold(held); hold(second)
        }
        expectMessage(result, "FixedPool 'frames' is exhausted: 1 of 1 slots in use (maximum 1)")
    }

    @Test func threadSafeAcquire_whenExhausted_trapsNamingThePool() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 1, name: "shared-frames"))
            let held = pool.acquire(1)
            let second = pool.acquire(2)
            hold(held); hold(second)
        }
        expectMessage(result, "ThreadSafePool 'shared-frames' is exhausted")
    }

    @Test func batchAcquire_beyondMaximum_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! GrowingPool<Int>(config: PoolConfig(capacity: 1, growth: .linear(1), maxCapacity: 3, name: "g"))
            _ = pool.acquire(count: 4) { $0 }
        }
        expectMessage(result, "GrowingPool 'g' is exhausted: 0 of 1 slots in use (maximum 3), 4 wanted")
    }

    @Test func acquireWithoutInitializer_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! FixedPool<Int>(config: PoolConfig(capacity: 1, name: "plain"))
            _ = pool.acquire()
        }
        expectMessage(result, "FixedPool 'plain' has no initializer")
    }

    #if DEBUG
    @Test func doubleRelease_throughUnsafeAPI_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! FixedPool<Int>(config: PoolConfig(capacity: 2, name: "twice"))
            let pointer = pool.unsafeAcquire(1)!
            pool.unsafeRelease(pointer)
            pool.unsafeRelease(pointer)
        }
        expectMessage(result, "pool 'twice': double release of slot 0")
    }

    @Test func foreignPointer_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! FixedPool<Int>(config: PoolConfig(capacity: 2, name: "mine"))
            let other = try! FixedPool<Int>(capacity: 2)
            let pointer = other.unsafeAcquire(1)!
            pool.unsafeRelease(pointer)
        }
        expectMessage(result, "which is not one of its slots (out of range or misaligned)")
    }

    @Test func misalignedPointer_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! FixedPool<Int>(config: PoolConfig(capacity: 2, name: "mine"))
            let pointer = pool.unsafeAcquire(1)!
            pool.unsafeRelease(pointer + 1)  // inside the slab, not at a slot's start
        }
        expectMessage(result, "pool 'mine': released")
    }

    @Test func handleOutlivingThreadSafePoolWithMagazines_traps_cachedSlotsNotCounted() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var pool: ThreadSafePool<Int>? = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 8, name: "mags", magazineSize: 4))
            pool!.acquire(0).release()
            pool!.acquire(0).release()  // one slot cached in this thread's magazine: not out
            let handle = pool!.acquire(1)
            pool = nil
            handle.release()
        }
        expectMessage(result, "ThreadSafePool 'mags' was destroyed while 1 handle(s) still hold slots: a handle outlived its pool")
    }

    @Test func threadSafeAcquire_whenExhausted_namesSlotsCachedInMagazines() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 2, name: "cached", magazineSize: 2))
            let first = pool.acquire(0), second = pool.acquire(1)
            first.release(); second.release()  // both cached in this thread's magazine
            ThreadHandle.start { _ = pool.acquire(2) }.join()  // another thread: traps
        }
        expectMessage(result, "ThreadSafePool 'cached' is exhausted: 0 of 2 slots in use (2 more cached free in other threads' magazines, asked to flush)")
    }

    @Test func handleOutlivingPool_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var pool: FixedPool<Int>? = try! FixedPool<Int>(config: PoolConfig(capacity: 2, name: "short"))
            let handle = pool!.acquire(1)
            pool = nil
            handle.release()
        }
        expectMessage(result, "FixedPool 'short' was destroyed while 1 handle(s) still hold slots: a handle outlived its pool")
    }

    @Test func threadSafeHandleOutlivingPool_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            var pool: ThreadSafePool<Int>? = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 2, name: "short"))
            let handle = pool!.acquire(1)
            pool = nil
            handle.release()
        }
        expectMessage(result, "ThreadSafePool 'short' was destroyed while 1 handle(s) still hold slots")
    }

    @Test func threadLocalPool_usedFromAnotherThread_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let pool = try! ThreadLocalPool<Int>(config: PoolConfig(capacity: 2, name: "worker-1"))
            let raw = UInt(bitPattern: Unmanaged.passRetained(pool).toOpaque())
            onAnotherThread {
                // Smuggled past the compiler's Sendable check on purpose: the debug check must catch it.
                let smuggled = Unmanaged<ThreadLocalPool<Int>>.fromOpaque(UnsafeRawPointer(bitPattern: raw)!).takeUnretainedValue()
                _ = smuggled.unsafeAcquire(1)
            }
        }
        expectMessage(result, "pool 'worker-1' belongs to another thread")
    }
    #endif
}
