import UVLoop
#if canImport(Glibc)
import Glibc
#endif

// MARK: Threads

/// A worker's wake-up as other threads use it: `send()` is safe at any time, also after the
/// worker has closed its handle (then it does nothing). The lock orders a send before the close:
/// libuv's uv_async_send must not touch a handle after uv_close.
package final class WorkerWake: @unchecked Sendable {
    // @unchecked: `async` and `open` are only touched with `mutex` held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var async: AsyncWake?

    package init(_ async: AsyncWake) {
        self.async = async
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    package func send() {
        pthread_mutex_lock(mutex)
        async?.send()
        pthread_mutex_unlock(mutex)
    }

    /// On the worker's thread: no send reaches the handle after this; then it is closed.
    package func close() {
        pthread_mutex_lock(mutex)
        let handle = async
        async = nil
        pthread_mutex_unlock(mutex)
        handle?.close()
    }
}

/// A joinable thread running a closure.
package struct ThreadHandle: @unchecked Sendable {
    // @unchecked: pthread_t is an identifier; join is called once, by the thread that started it.
    let thread: pthread_t

    package static func start(_ body: @escaping @Sendable () -> Void) -> ThreadHandle {
        final class Box { let body: @Sendable () -> Void; init(_ body: @escaping @Sendable () -> Void) { self.body = body } }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(Box(body)).toOpaque()
        let status = pthread_create(&thread, nil, { context in
            // Safe: the context is the Box retained just above, consumed exactly once here.
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        precondition(status == 0, "pthread_create failed: \(status)")
        return ThreadHandle(thread: thread)
    }

    package func join() {
        pthread_join(thread, nil)
    }
}

/// A value set once by one thread and waited for by another.
package final class OneShot<Value: Sendable>: @unchecked Sendable {
    // @unchecked: `value` is only touched under `mutex`. The mutex and condition live in their
    // own allocations: pthread objects must not move, and a class property's address is not
    // guaranteed to stay put across `&` accesses.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value?

    package init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        pthread_cond_destroy(condition)
        mutex.deallocate()
        condition.deallocate()
    }

    package func set(_ newValue: Value) {
        pthread_mutex_lock(mutex)
        value = newValue
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    package func wait() -> Value {
        pthread_mutex_lock(mutex)
        while value == nil { pthread_cond_wait(condition, mutex) }
        let result = value!
        pthread_mutex_unlock(mutex)
        return result
    }
}
