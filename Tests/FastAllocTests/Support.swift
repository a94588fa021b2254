import FastAlloc
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Counts values made and destroyed, and proves each was destroyed exactly once.
final class LifetimeTracker: Sendable {
    let made = Atomic<Int>(0)
    let destroyed = Atomic<Int>(0)
    let doubleDestroys = Atomic<Int>(0)
    private let alive = Locked<Set<Int>>([])

    var live: Int { made.load(ordering: .relaxed) - destroyed.load(ordering: .relaxed) }

    func make() -> Tracked { Tracked(Token(tracker: self)) }

    fileprivate func born(_ id: Int) {
        made.add(1, ordering: .relaxed)
        alive.withLock { _ = $0.insert(id) }
    }

    fileprivate func died(_ id: Int) {
        let wasAlive = alive.withLock { $0.remove(id) != nil }
        if !wasAlive { doubleDestroys.add(1, ordering: .relaxed) }
        destroyed.add(1, ordering: .relaxed)
    }
}

private let nextTokenID = Atomic<Int>(0)

/// Whose deinit tells the tracker: a value of `Tracked` is alive while its token is.
final class Token: Sendable {
    let id: Int
    let tracker: LifetimeTracker
    init(tracker: LifetimeTracker) {
        self.tracker = tracker
        id = nextTokenID.add(1, ordering: .relaxed).newValue
        tracker.born(id)
    }
    deinit { tracker.died(id) }
}

/// A pooled value whose lifetime the tracker observes.
struct Tracked: Sendable {
    var token: Token
    var payload = 0
    init(_ token: Token) { self.token = token }
}

/// Runs `body(i)` on `count` new threads that all start together (a barrier releases them at
/// once) and waits for all of them.
func onThreadsTogether(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
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

final class Box<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Runs `body` on one new thread and waits for it.
func onAnotherThread(_ body: @escaping @Sendable () -> Void) {
    onThreadsTogether(1) { _ in body() }
}

/// Marks a noncopyable value as used here, keeping it alive to this point.
func hold<T: ~Copyable>(_ value: borrowing T) {}

/// A value behind a `pthread_mutex_t`. The tests use it rather than `Synchronization.Mutex`,
/// whose futex-based lock ThreadSanitizer cannot see on Linux (it reports the guarded accesses
/// as races).
final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched with `mutex` held.
    private var value: Value
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout Value) -> R) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body(&value)
    }
}
