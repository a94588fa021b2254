// Helpers shared by the test targets: threads released together, a TSan-visible lock.
@_exported import Threads
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` on `count` new threads that all start together (a barrier releases them at
/// once) and waits for all of them.
public func onThreadsTogether(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Barrier: @unchecked Sendable {
        // @unchecked: initialised before any thread starts and destroyed after all joined; its
        // own allocation, so it never moves while threads wait on it.
        let barrier = UnsafeMutablePointer<pthread_barrier_t>.allocate(capacity: 1)
        init(_ count: Int) { pthread_barrier_init(barrier, nil, UInt32(count)) }
        deinit { pthread_barrier_destroy(barrier); barrier.deallocate() }
    }
    let barrier = Barrier(count)
    let threads = (0..<count).map { index in
        ThreadHandle.start {
            pthread_barrier_wait(barrier.barrier)
            body(index)
        }
    }
    for thread in threads { thread.join() }
}

public final class Box<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

/// Runs `body` on one new thread and waits for it.
public func onAnotherThread(_ body: @escaping @Sendable () -> Void) {
    onThreadsTogether(1) { _ in body() }
}

/// Marks a noncopyable value as used here, keeping it alive to this point.
public func hold<T: ~Copyable>(_ value: borrowing T) {}

/// A value behind a `pthread_mutex_t`. The tests use it rather than `Synchronization.Mutex`,
/// whose futex-based lock ThreadSanitizer cannot see on Linux (it reports the guarded accesses
/// as races).
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched with `mutex` held.
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<R>(_ body: (inout Value) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&value)
    }
}

/// A value one thread sets once and another waits for: the Threads module's OneShot.
public typealias Latch<Value: Sendable> = OneShot<Value>
