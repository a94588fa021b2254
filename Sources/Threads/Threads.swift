import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// Thread start-up, written once: the server's workers, the stats endpoint, the load client, the
// demo and the tests all start threads here. A thread is a joinable ThreadHandle; OneShot hands
// one value from a thread to a waiter.

/// A joinable thread running a closure. A reference: copies share one join state, so joining is
/// idempotent and thread-safe: the first `join()` waits for the thread, a concurrent one waits
/// for that first join to finish, and any later one returns at once (pthread_join twice on one
/// thread is undefined behaviour).
public final class ThreadHandle: @unchecked Sendable {
    // @unchecked: `thread` is immutable; pthread_join is only called with `mutex` held.
    private let thread: pthread_t
    /// Held for the whole of the first join, so a second joiner waits for it.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    /// Set (under `mutex`) once pthread_join returned; read without the lock, so that asking
    /// never waits for a join in progress (the thread itself may ask).
    private let joined = Atomic<Bool>(false)

    private init(thread: pthread_t) {
        self.thread = thread
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        // Never joined: let the thread's resources go when it ends rather than leak them.
        if !joined.load(ordering: .acquiring) { pthread_detach(thread) }
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Starts `body` on a new thread. `stackSize`: the thread's stack in bytes (default: the
    /// system's); glibc reuses the stack (and the thread-local block at its top) of an ended
    /// thread for a new one of the same size first, which some tests rely on.
    public static func start(stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) -> ThreadHandle {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        var thread = pthread_t()
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        if let stackSize {
            let set = pthread_attr_setstacksize(&attributes, stackSize)
            precondition(set == 0, "pthread_attr_setstacksize(\(stackSize)) failed: \(set)")
        }
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let status = pthread_create(&thread, &attributes, { context in
            // Safe: the context is the Box retained just above, consumed exactly once here.
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        precondition(status == 0, "pthread_create failed: \(status)")
        return ThreadHandle(thread: thread)
    }

    /// Waits for the thread to end; any thread but this one itself (that traps). Safe to call
    /// any number of times, from several threads at once.
    public func join() {
        if joined.load(ordering: .acquiring) { return }  // joined before: the thread has ended
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        if joined.load(ordering: .relaxed) { return }  // a concurrent join finished while we waited
        let status = pthread_join(thread, nil)
        precondition(status != EDEADLK, "ThreadHandle.join(): a thread cannot join itself")
        precondition(status == 0, "pthread_join failed: \(status)")
        joined.store(true, ordering: .releasing)
    }

    /// Whether a `join()` has returned (the thread has ended). Any thread; never waits.
    public var isJoined: Bool {
        joined.load(ordering: .acquiring)
    }
}

/// A value set once by one thread and waited for by another.
public final class OneShot<Value: Sendable>: @unchecked Sendable {
    // @unchecked: `value` is only touched under `mutex`. The mutex and condition live in their
    // own allocations: pthread objects must not move, and a class property's address is not
    // guaranteed to stay put across `&` accesses.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value?

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_cond_destroy(condition)
        mutex.deallocate()
        condition.deallocate()
    }

    public func set(_ newValue: Value) {
        pthread_mutex_lock(mutex)
        value = newValue
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    public func wait() -> Value {
        pthread_mutex_lock(mutex)
        while value == nil { pthread_cond_wait(condition, mutex) }
        let result = value!
        pthread_mutex_unlock(mutex)
        return result
    }
}
