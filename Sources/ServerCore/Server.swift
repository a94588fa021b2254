import Logging
import PacketBuffers
import Synchronization
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What every worker shares: the buffer pools, the connection limit, the drain command.
final class ServerShared: Sendable {
    static let commandNone = 0
    static let commandDrain = 1
    static let commandStop = 2

    let pools: PacketBufferPools
    let maxConnections: Int
    let active = Atomic<Int>(0)
    let rejected = Atomic<UInt64>(0)
    let command = Atomic<Int>(ServerShared.commandNone)
    /// Workers whose loop has ended.
    let finishedWorkers = Atomic<Int>(0)

    init(pools: PacketBufferPools, maxConnections: Int) {
        self.pools = pools
        self.maxConnections = maxConnections
    }

    /// Counts a new connection in, or refuses it (counted) when the limit is reached. One atomic
    /// read-modify-write per connection, none per message.
    func admit() -> Bool {
        if active.add(1, ordering: .relaxed).newValue > maxConnections {
            active.subtract(1, ordering: .relaxed)
            rejected.add(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func release() {
        active.subtract(1, ordering: .relaxed)
    }
}

/// An echo or relay server: `config.workers` threads, each with a libuv loop and a listener on
/// the same address (SO_REUSEPORT), drawing packet buffers from its own pool and from the
/// shared overflow pool.
///
/// ```swift
/// let server = try Server(config: config)     // listening once this returns
/// print(server.address)                       // the real port when config.listen's is 0
/// server.drain()                              // from any thread: stop accepting, flush, end
/// let final = server.wait()                   // joins the workers
/// ```
public final class Server: Sendable {
    public let config: ServerConfig
    /// The address the workers listen on (with the real port when 0 was asked for).
    public let address: SocketAddress
    let shared: ServerShared
    private let workers: [WorkerHandle]
    private let onFinished: (@Sendable () -> Void)?

    /// A worker as other threads see it.
    private struct WorkerHandle: Sendable {
        let thread: ThreadHandle
        let wake: WorkerWake
        let counters: WorkerCounters
    }

    /// Validates the configuration, starts the workers and returns once every one listens.
    /// Throws `ConfigError` for a bad configuration and `UVError` when listening fails (for
    /// example `EADDRINUSE`). `onFinished` runs on the last worker's thread once all have ended.
    public init(config: ServerConfig, logger: Logger = Logger(label: "fastalloc-server"),
                onFinished: (@Sendable () -> Void)? = nil) throws {
        try config.validate()
        // A peer that resets must never kill the process: a write to it returns EPIPE instead.
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with signals blocked (a blocked mask is inherited across
        // exec): unblock the ones that drain, in this thread and so in every worker it starts.
        var drainSignals = sigset_t()
        sigemptyset(&drainSignals)
        sigaddset(&drainSignals, SIGTERM)
        sigaddset(&drainSignals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &drainSignals, nil)
        Server.raiseFileLimit(logger: logger)
        self.config = config
        self.onFinished = onFinished
        shared = ServerShared(pools: try PacketBufferPools(config: config.buffers), maxConnections: config.maxConnections)

        var handles: [WorkerHandle] = []
        var address = config.listen
        // Worker 0 binds first, so that a port 0 becomes a real port the others can share.
        for index in 0..<config.workers {
            let counters = WorkerCounters()
            let ready = OneShot<Result<(WorkerWake, SocketAddress), UVError>>()
            let shared = self.shared
            let bindAddress = address
            let thread = ThreadHandle.start { [onFinished] in
                let worker: Worker
                let wake: WorkerWake
                do {
                    worker = try Worker(index: index, config: config, shared: shared, counters: counters, logger: logger)
                } catch {
                    ready.set(.failure(error as! UVError))  // Worker.init throws(UVError) only
                    return
                }
                do {
                    wake = try worker.start(address: bindAddress)
                } catch {
                    // start() closed what it had opened; run the loop so the close callbacks
                    // free those handles (each holds its loop until then).
                    worker.run()
                    ready.set(.failure(error as! UVError))  // start throws(UVError) only
                    return
                }
                ready.set(.success((wake, worker.boundAddress ?? bindAddress)))
                worker.run()
                if shared.finishedWorkers.add(1, ordering: .acquiringAndReleasing).newValue == config.workers {
                    onFinished?()
                }
            }
            switch ready.wait() {
            case .success(let (wake, bound)):
                handles.append(WorkerHandle(thread: thread, wake: wake, counters: counters))
                address = bound
            case .failure(let error):
                thread.join()
                // Stop the workers already running before reporting the error.
                shared.command.store(ServerShared.commandStop, ordering: .releasing)
                for handle in handles { handle.wake.send() }
                for handle in handles { handle.thread.join() }
                throw error
            }
        }
        workers = handles
        self.address = address
    }

    /// Graceful drain, from any thread: stop accepting, let each connection flush what it has
    /// (up to the drain timeout), close everything. `wait()` returns when it is done.
    public func drain() {
        send(ServerShared.commandDrain)
    }

    /// Closes every connection now.
    public func stop() {
        send(ServerShared.commandStop)
    }

    private func send(_ command: Int) {
        shared.command.store(command, ordering: .releasing)
        for worker in workers { worker.wake.send() }
    }

    /// Blocks until every worker has ended; returns the final statistics.
    @discardableResult
    public func wait() -> ServerStatistics {
        for worker in workers { worker.thread.join() }
        return statistics()
    }

    /// A snapshot of every worker's counters and of the pools; any thread, any time, without
    /// touching the data path's locks.
    public func statistics() -> ServerStatistics {
        ServerStatistics(
            workers: workers.enumerated().map { $0.element.counters.snapshot(worker: $0.offset) },
            connectionsRejected: shared.rejected.load(ordering: .relaxed),
            buffers: shared.pools.statistics(),
            draining: shared.command.load(ordering: .relaxed) != ServerShared.commandNone)
    }

    /// Many connections need many descriptors: raise the soft limit to the hard one.
    private static func raiseFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let old = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
            logger.debug("file descriptor limit raised from \(old) to \(limit.rlim_max)")
        }
    }
}

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
