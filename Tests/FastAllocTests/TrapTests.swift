import FastAlloc
import Testing

/// Each trap, in its own child process. Debug-only checks are tested only in debug builds.
@Suite struct TrapTests {
    @Test func acquire_whenExhausted_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! FixedPool<Int>(capacity: 1)
            let held = pool.acquire(1)
            let second = pool.acquire(2)
            hold(held); hold(second)
        }
    }

    @Test func threadSafeAcquire_whenExhausted_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 1))
            let held = pool.acquire(1)
            let second = pool.acquire(2)
            hold(held); hold(second)
        }
    }

    @Test func batchAcquire_beyondMaximum_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! GrowingPool<Int>(config: PoolConfig(capacity: 1, growth: .linear(1), maxCapacity: 3))
            _ = pool.acquire(count: 4) { $0 }
        }
    }

    @Test func acquireWithoutInitializer_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! FixedPool<Int>(capacity: 1)
            _ = pool.acquire()
        }
    }

    #if DEBUG
    @Test func doubleRelease_throughUnsafeAPI_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! FixedPool<Int>(capacity: 2)
            let pointer = pool.unsafeAcquire(1)!
            pool.unsafeRelease(pointer)
            pool.unsafeRelease(pointer)
        }
    }

    @Test func foreignPointer_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! FixedPool<Int>(capacity: 2)
            let other = try! FixedPool<Int>(capacity: 2)
            let pointer = other.unsafeAcquire(1)!
            pool.unsafeRelease(pointer)
        }
    }

    @Test func misalignedPointer_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! FixedPool<Int>(capacity: 2)
            let pointer = pool.unsafeAcquire(1)!
            pool.unsafeRelease(pointer + 1)  // inside the slab, not at a slot's start
        }
    }

    @Test func handleOutlivingPool_traps() async {
        await #expect(processExitsWith: .failure) {
            var pool: FixedPool<Int>? = try! FixedPool<Int>(capacity: 2)
            let handle = pool!.acquire(1)
            pool = nil
            handle.release()
        }
    }

    @Test func threadSafeHandleOutlivingPool_traps() async {
        await #expect(processExitsWith: .failure) {
            var pool: ThreadSafePool<Int>? = try! ThreadSafePool<Int>(config: PoolConfig(capacity: 2))
            let handle = pool!.acquire(1)
            pool = nil
            handle.release()
        }
    }

    @Test func threadLocalPool_usedFromAnotherThread_traps() async {
        await #expect(processExitsWith: .failure) {
            let pool = try! ThreadLocalPool<Int>(config: PoolConfig(capacity: 2))
            let raw = UInt(bitPattern: Unmanaged.passRetained(pool).toOpaque())
            onAnotherThread {
                // Smuggled past the compiler's Sendable check on purpose: the debug check must catch it.
                let smuggled = Unmanaged<ThreadLocalPool<Int>>.fromOpaque(UnsafeRawPointer(bitPattern: raw)!).takeUnretainedValue()
                _ = smuggled.unsafeAcquire(1)
            }
        }
    }
    #endif
}
