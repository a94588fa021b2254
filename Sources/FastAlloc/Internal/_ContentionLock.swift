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
/// The algorithm (`lock(steps:contended:)`, `waitContended(steps:)`, `unlock(steps:)`) is
/// written against `_AtomicSteps`: `lock()` and `unlock()` run it with the machine's atomics,
/// the interleaving checker with its model (docs/INTERLEAVINGS.md).
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
        @usableFromInline package let acquisitions = Atomic<UInt>(0)
        @usableFromInline package let contended = Atomic<UInt>(0)
        @usableFromInline package let waitNanoseconds = Atomic<UInt>(0)
        package init() {}
    }

    @usableFromInline package static let countersOffset = 64
    /// 1 while held, 0 while free.
    @usableFromInline package let held: UnsafeMutablePointer<Atomic<UInt>>
    @usableFromInline package let counters: UnsafeMutablePointer<Counters>

    package init() {
        let base = UnsafeMutableRawPointer.allocate(
            byteCount: _ContentionLock.countersOffset + MemoryLayout<Counters>.size, alignment: 64)
        // Safe: the allocation holds the flag at offset 0 and Counters at offset 64, both aligned.
        unsafe held = base.bindMemory(to: Atomic<UInt>.self, capacity: 1)
        unsafe held.initialize(to: Atomic(0))
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
        lock(steps: _HardwareSteps(), contended: { lockContended() })
    }

    /// The slow path, out of line: see `waitContended(steps:)`.
    @usableFromInline
    package func lockContended() {
        waitContended(steps: _HardwareSteps())
    }

    @inlinable @inline(__always)
    package func unlock() {
        unlock(steps: _HardwareSteps())
    }

    // MARK: The algorithm

    /// Takes the lock: one acquiring exchange; if the lock was busy, `contended()` (which is
    /// `waitContended(steps:)`, out of line in production) waits until an exchange wins. Then
    /// counts the acquisition, as its holder.
    @inlinable @inline(__always)
    package func lock<Steps: _AtomicSteps>(steps: Steps, contended: () -> Void) {
        // Safe: `held` points to a live Atomic until `destroy()` (type invariant).
        if unsafe steps.exchange(held.pointee, with: 1, ordering: .acquiring) != 0 {
            contended()
        }
        // Safe: the lock is held, so the counters have this one writer.
        unsafe steps.addSingleWriter(1, to: counters.pointee.acquisitions)
    }

    /// The slow path: spin on a plain load (no cache-line ping-pong) for a short while, then
    /// yield the CPU between looks (`_HardwareSteps.spinWhile`), until an exchange wins; then
    /// count the contention and the wait.
    package func waitContended<Steps: _AtomicSteps>(steps: Steps) {
        let start = steps.nanoseconds()
        var looks = 0
        // Safe: as in `lock(steps:contended:)`.
        repeat {
            unsafe steps.spinWhile(held.pointee, equals: 1, looks: &looks)
        } while unsafe steps.exchange(held.pointee, with: 1, ordering: .acquiring) != 0
        // Safe: the lock is held from here on, so the counters have this one writer.
        unsafe steps.addSingleWriter(1, to: counters.pointee.contended)
        unsafe steps.addSingleWriter(UInt(truncatingIfNeeded: steps.nanoseconds() &- start), to: counters.pointee.waitNanoseconds)
    }

    /// Lets go: one releasing store, so the next holder sees every write made under the lock.
    @inlinable @inline(__always)
    package func unlock<Steps: _AtomicSteps>(steps: Steps) {
        // Safe: as in `lock(steps:contended:)`.
        unsafe steps.store(0, to: held.pointee, ordering: .releasing)
    }

    /// The counters, from any thread, without taking the lock (each figure is exact; the three
    /// may be a few operations apart from one another).
    package var statistics: LockStatistics { statistics(steps: _HardwareSteps()) }

    package func statistics<Steps: _AtomicSteps>(steps: Steps) -> LockStatistics {
        // Safe: the counters are live until `destroy()`; atomics, so any thread may load them.
        unsafe LockStatistics(
            acquisitions: UInt64(steps.load(counters.pointee.acquisitions, ordering: .relaxed)),
            contended: UInt64(steps.load(counters.pointee.contended, ordering: .relaxed)),
            waitNanoseconds: UInt64(steps.load(counters.pointee.waitNanoseconds, ordering: .relaxed)))
    }
}
