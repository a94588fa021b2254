import FastAlloc
import Logging
import PacketBuffers
import Synchronization
import Threads
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What every worker shares: the buffer pools, the connection limit, the shutdown phase asked for.
final class ServerShared: Sendable {
    let pools: PacketBufferPools
    let maxConnections: Int
    let active = Atomic<Int>(0)
    let rejected = Atomic<UInt64>(0)
    /// What `drain()` or `stop()` asked for (`.serving` until then). Only ever raised; each
    /// worker reads it when woken and enters that phase.
    let requestedPhase = Atomic<ShutdownPhase>(.serving)
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

    /// Requests `phase` unless a later one (stop over drain) is requested already. Returns the
    /// phase requested afterwards.
    @discardableResult
    func request(_ phase: ShutdownPhase) -> ShutdownPhase {
        var current = requestedPhase.load(ordering: .relaxed)
        while current < phase {
            let (exchanged, found) = requestedPhase.compareExchange(
                expected: current, desired: phase, successOrdering: .releasing, failureOrdering: .relaxed)
            if exchanged { return phase }
            current = found
        }
        return current
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
    /// The most connections open at once: `config.maxConnections`, or fewer when the file
    /// descriptor limit has no room for that many (a warning at start says so).
    public let connectionLimit: Int
    let shared: ServerShared
    private let workers: [WorkerHandle]
    private let onFinished: (@Sendable () -> Void)?

    /// A worker as other threads see it.
    private struct WorkerHandle: Sendable {
        let thread: ThreadHandle
        let wake: AsyncWake
        let counters: WorkerCounters
    }

    /// Validates the configuration, starts the workers and returns once every one listens.
    /// Throws `ConfigError` for a bad configuration (or a file descriptor limit too low for even
    /// one connection) and `UVError` when listening fails (for example `EADDRINUSE`).
    /// `reservedDescriptors` are descriptors the caller will open beside the server (the stats
    /// endpoint's); they are kept out of the connection budget. `onFinished` runs on the last
    /// worker's thread once all have ended.
    public init(config: ServerConfig, logger: Logger = Logger(label: "fastalloc-server"),
                reservedDescriptors: Int = 0, onFinished: (@Sendable () -> Void)? = nil) throws {
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
        let fileLimit = Server.raiseFileLimit(logger: logger)
        let budget = Server.connectionBudget(config: config, fileLimit: fileLimit, openNow: Server.openDescriptors(),
                                             reserved: reservedDescriptors)
        if budget < 1 {
            throw ConfigError(field: "file descriptor limit (ulimit -n)", value: "\(fileLimit)",
                              expected: "room for at least one connection beside the server's own descriptors; raise it (ulimit -n, LimitNOFILE=)")
        }
        if budget < config.maxConnections {
            // Refusing at our own limit is clean (closed at once, counted, logged); running out of
            // descriptors inside accept is not: libuv then closes the extra connections silently.
            logger.warning("""
                file descriptor limit \(fileLimit) leaves room for \(budget) connections \
                (\(config.mode == .relay ? "2 descriptors each in relay mode" : "1 descriptor each")), fewer than \
                --max-connections \(config.maxConnections): connections beyond \(budget) will be refused. \
                Raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections.
                """)
        }
        connectionLimit = min(config.maxConnections, budget)
        let fair = Server.fairConnections(config.buffers, workers: config.workers)
        if connectionLimit > fair {
            let buffers = config.workers * config.buffers.localBuffers + config.buffers.overflowMax
            logger.warning("""
                --max-connections \(connectionLimit) is more than the buffer pools serve fairly: a client that stops \
                reading holds at least one buffer, and the pools hold \(buffers) (\(config.workers) x --local-buffers \
                \(config.buffers.localBuffers) + --overflow-max \(config.buffers.overflowMax)), less a reserve kept for new \
                connections: room for \(fair). Beyond \(fair) such clients, new clients wait for a buffer until \
                --write-timeout resets the stalled ones. Raise --overflow-max to at least \(config.buffers.overflowMax + connectionLimit - fair) \
                or lower --max-connections to \(fair).
                """)
        }
        self.config = config
        self.onFinished = onFinished
        shared = ServerShared(pools: try PacketBufferPools(config: config.buffers), maxConnections: connectionLimit)

        var handles: [WorkerHandle] = []
        var address = config.listen
        // Worker 0 binds first, so that a port 0 becomes a real port the others can share.
        for index in 0..<config.workers {
            let counters = WorkerCounters()
            let ready = OneShot<Result<(AsyncWake, SocketAddress), UVError>>()
            let shared = self.shared
            let bindAddress = address
            let thread = ThreadHandle.start { [onFinished] in
                let worker: Worker
                let wake: AsyncWake
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
                shared.request(.stopping)
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
        request(.draining)
    }

    /// Closes every connection now (resets them).
    public func stop() {
        request(.stopping)
    }

    /// Requests `phase` (a stop is never weakened into a drain) and wakes every worker to enter it.
    private func request(_ phase: ShutdownPhase) {
        shared.request(phase)
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
            shutdownPhase: shared.requestedPhase.load(ordering: .relaxed))
    }

    /// How many connections that each hold one buffer (what a client that stops reading holds
    /// once the pools run low) fit in the pools and leave every worker its reserve for new
    /// connections. Up to this many, no client that stops reading delays a new one.
    public static func fairConnections(_ buffers: PacketBufferConfig, workers: Int) -> Int {
        let total = workers * buffers.localBuffers + buffers.overflowMax
        return max(0, total - Worker.reserve(reachable: buffers.localBuffers + buffers.overflowMax))
    }

    /// Many connections need many descriptors: raise the soft limit to the hard one. Returns
    /// the soft limit in force afterwards.
    private static func raiseFileLimit(logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Int.max }
        if limit.rlim_cur < limit.rlim_max {
            let old = limit.rlim_cur
            limit.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                logger.debug("file descriptor limit raised from \(old) to \(limit.rlim_max)")
            } else {
                limit.rlim_cur = old
            }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// Descriptors each worker opens for itself (epoll, its wake-up eventfd, the listener,
    /// libuv's spare descriptor for EMFILE, signal and timer plumbing), with room to spare.
    static let descriptorsPerWorker = 8
    /// Kept free beyond everything counted: logging, /proc reads, a core dump's pipe.
    static let spareDescriptors = 16

    /// How many connections fit in the file descriptor limit: what is left after the
    /// descriptors open now, the workers' own, the caller's reservation and a margin, divided by
    /// the descriptors a connection takes (2 in relay mode: client and upstream).
    package static func connectionBudget(config: ServerConfig, fileLimit: Int, openNow: Int, reserved: Int) -> Int {
        guard fileLimit != Int.max else { return Int.max }
        let free = fileLimit - openNow - config.workers * descriptorsPerWorker - reserved - spareDescriptors
        return max(0, free / (config.mode == .relay ? 2 : 1))
    }

    /// Descriptors this process has open now (Linux: /proc/self/fd; elsewhere a guess).
    static func openDescriptors() -> Int {
        guard let count = countDirectoryEntries("/proc/self/fd") else { return 16 }
        return max(count - 1, 0)  // the directory's own descriptor is listed too
    }
}
