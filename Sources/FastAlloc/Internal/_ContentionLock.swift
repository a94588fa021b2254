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
/// counters a cache line further (waiters spin on the flag, the holder writes the counters,
/// statistics readers load them without the lock).
/// Copies share the lock; `destroy()` ends it.
///
/// Memory safety: `@safe` on the invariant that its allocation lives from `init` until
/// `destroy()`, which is `@unsafe` and called once, by the lock's owner, after every use of
/// every copy. Every `unsafe` below relies on that.
@safe @usableFromInline
package struct _ContentionLock {
    /// Written only by the lock holder, with a relaxed load and store (no read-modify-write);
    /// atomics so that a statistics reader on another thread can load them without the lock.
    @usableFromInline
    package struct Counters: ~Copyable {
        @usableFromInline package let acquisitions = Atomic<UInt64>(0)
        @usableFromInline package let contended = Atomic<UInt64>(0)
        @usableFromInline package let waitNanoseconds = Atomic<UInt64>(0)
        package init() {}
    }

    @usableFromInline package static let countersOffset = 64
    /// true while held.
    @usableFromInline package let held: UnsafeMutablePointer<Atomic<Bool>>
    @usableFromInline package let counters: UnsafeMutablePointer<Counters>

    package init() {
        let base = UnsafeMutableRawPointer.allocate(
            byteCount: _ContentionLock.countersOffset + MemoryLayout<Counters>.size, alignment: 64)
        // Safe: the allocation holds the flag at offset 0 and Counters at offset 64, both aligned.
        unsafe held = base.bindMemory(to: Atomic<Bool>.self, capacity: 1)
        unsafe held.initialize(to: Atomic(false))
        unsafe counters = (base + _ContentionLock.countersOffset).initializeMemory(as: Counters.self, to: Counters())
    }

    /// Frees the allocation. Nobody may hold or wait for the lock.
    ///
    /// `@unsafe`: every copy of the lock dangles afterwards. Callers: once, as the last use.
    @unsafe
    package func destroy() {
        // Safe: called once, with nobody holding or waiting: both values are deinitialised and
        // the one allocation (which starts at `held`) is freed.
        unsafe counters.deinitialize(count: 1)
        unsafe held.deinitialize(count: 1)
        unsafe UnsafeMutableRawPointer(held).deallocate()
    }

    /// Takes the lock, counting the acquisition and, if it had to wait, the wait.
    @inlinable @inline(__always)
    package func lock() {
        // Safe: `held` points to a live Atomic until `destroy()` (type invariant).
        if unsafe held.pointee.exchange(true, ordering: .acquiring) {
            lockContended()
        }
        // Safe: the lock is held, so the counters have this one writer.
        unsafe _ContentionLock.add(1, to: counters.pointee.acquisitions)
    }

    /// The slow path: spin on a plain load (no cache-line ping-pong) for a short while, then
    /// yield the CPU between looks, until an exchange wins.
    @usableFromInline
    package func lockContended() {
        let start = _monotonicNanoseconds()
        var looks = 0
        // Safe: as in `lock()`.
        repeat {
            while unsafe held.pointee.load(ordering: .relaxed) {
                looks += 1
                if looks > 64 { sched_yield() }
            }
        } while unsafe held.pointee.exchange(true, ordering: .acquiring)
        // Safe: the lock is held from here on, so the counters have this one writer.
        unsafe _ContentionLock.add(1, to: counters.pointee.contended)
        unsafe _ContentionLock.add(_monotonicNanoseconds() &- start, to: counters.pointee.waitNanoseconds)
    }

    @inlinable @inline(__always)
    package func unlock() {
        // Safe: as in `lock()`.
        unsafe held.pointee.store(false, ordering: .releasing)
    }

    /// A single-writer increment: a relaxed load and store, which cost plain moves on x86-64.
    @inlinable @inline(__always)
    package static func add(_ amount: UInt64, to counter: borrowing Atomic<UInt64>) {
        counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }

    /// The counters, from any thread, without taking the lock (each figure is exact; the three
    /// may be a few operations apart from one another).
    package var statistics: LockStatistics {
        // Safe: the counters are live until `destroy()`; atomics, so any thread may load them.
        unsafe LockStatistics(
            acquisitions: counters.pointee.acquisitions.load(ordering: .relaxed),
            contended: counters.pointee.contended.load(ordering: .relaxed),
            waitNanoseconds: counters.pointee.waitNanoseconds.load(ordering: .relaxed))
    }
}
