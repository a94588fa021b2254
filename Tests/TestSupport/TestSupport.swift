// Helpers shared by the test targets: threads released together, a TSan-visible lock.
#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(i)` on `count` new threads that all start together (a barrier releases them at
/// once) and waits for all of them.
public func onThreadsTogether(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    final class Context: @unchecked Sendable {
        // @unchecked: the barrier is initialised before any thread starts and destroyed after all joined.
        var barrier = pthread_barrier_t()
        let body: @Sendable (Int) -> Void
        init(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
            self.body = body
            pthread_barrier_init(&barrier, nil, UInt32(count))
        }
    }
    let context = Context(count, body)
    var threads: [pthread_t] = []
    for index in 0..<count {
        let box = Unmanaged.passRetained(Box((context, index))).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { raw in
            // Safe: `raw` is the Box retained above, passed to exactly this one thread.
            let (context, index) = Unmanaged<Box<(Context, Int)>>.fromOpaque(raw!).takeRetainedValue().value
            pthread_barrier_wait(&context.barrier)
            context.body(index)
            return nil
        }, box)
        precondition(status == 0, "pthread_create failed: \(status)")
        threads.append(thread)
    }
    for thread in threads { pthread_join(thread, nil) }
    pthread_barrier_destroy(&context.barrier)
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

/// A value one thread sets once and another waits for (a pthread condition variable).
public final class Latch<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched with `mutex` held.
    private var value: Value?
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    public func set(_ newValue: Value) {
        pthread_mutex_lock(mutex)
        value = newValue
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Waits until the value is set.
    public func wait() -> Value {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while value == nil { pthread_cond_wait(condition, mutex) }
        return value!
    }
}

/// Starts `body` on a new thread and returns it, to join later. `stackSize`: the thread's stack
/// in bytes (default: the system's); glibc reuses the stack (and the thread-local block at its
/// top) of an ended thread for a new one of the same size first.
public func startThread(stackSize: Int? = nil, _ body: @escaping @Sendable () -> Void) -> pthread_t {
    var thread = pthread_t()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    defer { pthread_attr_destroy(&attributes) }
    if let stackSize {
        let set = pthread_attr_setstacksize(&attributes, stackSize)
        precondition(set == 0, "pthread_attr_setstacksize(\(stackSize)) failed: \(set)")
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    let status = pthread_create(&thread, &attributes, { raw in
        // Safe: `raw` is the Box retained above, passed to exactly this one thread.
        Unmanaged<Box<@Sendable () -> Void>>.fromOpaque(raw!).takeRetainedValue().value()
        return nil
    }, box)
    precondition(status == 0, "pthread_create failed: \(status)")
    return thread
}
