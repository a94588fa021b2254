#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The lock of a `ThreadSafePool`, which counts its own contention: every lock tries once;
/// only when the lock is busy does it time a wait, spinning briefly, then yielding the CPU
/// (`sched_yield`) until the holder lets go.
///
/// Why not `pthread_mutex_t` or `Synchronization.Mutex`: measured here in a process with more
/// than one thread (glibc takes shortcuts while a process has only one), a pthread
/// trylock+unlock costs about 12 ns and `Mutex.withLock` about 10 ns, because each unlock is a
/// second atomic read-modify-write (it must learn whether to wake a sleeper). This lock's
/// unlock is a plain release store: about 5 ns per lock+unlock, which is what brings a
/// `ThreadSafePool` acquire+release pair (two lock+unlocks) under 20 ns. The price is that a
/// waiter never sleeps in the kernel: acceptable because the critical sections are a few
/// pointer moves, and measured under two-thread contention in Benchmarks/ (`lock` benchmarks).
/// `Synchronization.Mutex` has a second drawback on Linux: its futex is invisible to
/// ThreadSanitizer, which then reports every access it guards as a race; this lock's atomics
/// are visible.
///
/// The value is an immutable reference to one allocation: the flag at its start and the
/// counters a cache line further (waiters spin on the flag, the holder writes the counters).
/// Copies share the lock; `destroy()` ends it.
@usableFromInline
struct _ContentionLock {
    @usableFromInline
    struct Counters {
        @usableFromInline var acquisitions: UInt64 = 0
        @usableFromInline var contended: UInt64 = 0
        @usableFromInline var waitNanoseconds: UInt64 = 0
    }

    @usableFromInline static let countersOffset = 64
    /// true while held.
    @usableFromInline let held: UnsafeMutablePointer<Atomic<Bool>>
    @usableFromInline let counters: UnsafeMutablePointer<Counters>

    init() {
        let base = UnsafeMutableRawPointer.allocate(
            byteCount: _ContentionLock.countersOffset + MemoryLayout<Counters>.size, alignment: 64)
        // Safe: the allocation holds the flag at offset 0 and Counters at offset 64, both aligned.
        held = base.bindMemory(to: Atomic<Bool>.self, capacity: 1)
        held.initialize(to: Atomic(false))
        counters = (base + _ContentionLock.countersOffset).initializeMemory(as: Counters.self, to: Counters())
    }

    /// Frees the allocation. Nobody may hold or wait for the lock.
    func destroy() {
        counters.deinitialize(count: 1)
        held.deinitialize(count: 1)
        UnsafeMutableRawPointer(held).deallocate()
    }

    /// Takes the lock, counting the acquisition and, if it had to wait, the wait.
    @inlinable @inline(__always)
    func lock() {
        // Safe: `held` points to a live Atomic for as long as the pool's storage lives.
        if held.pointee.exchange(true, ordering: .acquiring) {
            lockContended()
        }
        // Safe: the lock is held, so the counters have this one writer.
        counters.pointee.acquisitions &+= 1
    }

    /// The slow path: spin on a plain load (no cache-line ping-pong) for a short while, then
    /// yield the CPU between looks, until an exchange wins.
    @usableFromInline
    func lockContended() {
        let start = _monotonicNanoseconds()
        var looks = 0
        repeat {
            while held.pointee.load(ordering: .relaxed) {
                looks += 1
                if looks > 64 { sched_yield() }
            }
        } while held.pointee.exchange(true, ordering: .acquiring)
        // Safe: the lock is held from here on, so the counters have this one writer.
        counters.pointee.contended &+= 1
        counters.pointee.waitNanoseconds &+= _monotonicNanoseconds() &- start
    }

    @inlinable @inline(__always)
    func unlock() {
        held.pointee.store(false, ordering: .releasing)
    }

    /// The counters; call with the lock held.
    var statistics: LockStatistics {
        let c = counters.pointee
        return LockStatistics(acquisitions: c.acquisitions, contended: c.contended, waitNanoseconds: c.waitNanoseconds)
    }
}
