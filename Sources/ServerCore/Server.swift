import Logging
import PacketBuffers
import Synchronization
import Threads
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

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
    /// The configuration in effect and the reload counters (Server+Reload.swift).
    let reloadState: ReloadState
    /// The binary upgrade's counters (Server+Upgrade.swift).
    let upgradeState = UpgradeState()
    /// The logger the server was given (a reload's new access log and monitor log through it).
    let logger: Logger
    let workers: [WorkerHandle]
    /// Every worker's listening descriptors, in worker order: what an upgrade hands over.
    public let listenerDescriptors: [Int32]
    private let onFinished: (@Sendable () -> Void)?
    /// The relay's health checks and re-resolution (nil: echo, or nothing to do); a reload
    /// that changes their settings replaces it (Server+Reload.swift).
    let monitor: Mutex<MonitorSlot>

    /// A worker as other threads see it.
    struct WorkerHandle: Sendable {
        let thread: ThreadHandle
        let wake: AsyncWake
        let counters: WorkerCounters
        /// Set by the worker once it has started accepting (`startAccepting()`): nil, or why not.
        let accepting: OneShot<String?>
    }

    /// Validates the configuration, starts the workers and returns once every one listens.
    /// Throws `ConfigError` for a bad configuration (or a file descriptor limit too low for even
    /// one connection) and `UVError` when listening fails (for example `EADDRINUSE`).
    /// `reservedDescriptors` are descriptors the caller will open beside the server (the stats
    /// endpoint's); they are kept out of the connection budget. `onFinished` runs on the last
    /// worker's thread once all have ended.
    ///
    /// `inherited` are listening sockets handed over by the process this one replaces (an
    /// upgrade), already checked to be on `config.listen`: worker `i` accepts on the ones at
    /// `i`, `i + workers`, ...; a worker left without one binds its own beside them. With
    /// `acceptLater`, no worker accepts until `startAccepting()` (a new listener is bound, not yet
    /// listening): a process taking over accepts once everything else it needs has started.
    public init(config: ServerConfig, logger: Logger = Logger(label: "fastalloc-server"),
                reservedDescriptors: Int = 0, inherited: [Int32] = [], acceptLater: Bool = false,
                onFinished: (@Sendable () -> Void)? = nil) throws {
        try config.validate()
        Server.prepareSignals()
        let budget = try Server.descriptorBudget(config: config, reserved: reservedDescriptors + Server.monitorDescriptors(config), logger: logger)
        connectionLimit = min(config.maxConnections, budget)
        Server.warnIfUnfair(connectionLimit: connectionLimit, config: config, logger: logger)
        self.config = config
        reloadState = ReloadState(config)
        self.logger = logger
        self.onFinished = onFinished
        let upstreams = config.mode == .relay ? UpstreamPool(config: config, logger: logger) : nil
        let accessLog = try AccessLog(target: config.accessLog, format: config.accessLogFormat, workers: config.workers, logger: logger)
        let clientLimits = config.maxConnectionsPerClient > 0
            ? ClientLimits(limit: config.maxConnectionsPerClient, connections: connectionLimit) : nil
        shared = ServerShared(pools: try PacketBufferPools(config: config.buffers), maxConnections: connectionLimit, upstreams: upstreams,
                              settings: ServerSettings(generation: 1, config: config, accessLog: accessLog, clientLimits: clientLimits))
        accessLog?.start()

        var handles: [WorkerHandle] = []
        var descriptors: [Int32] = []
        var address = config.listen
        // Worker 0 binds first, so that a port 0 becomes a real port the others can share.
        for index in 0..<config.workers {
            let counters = WorkerCounters()
            let ready = OneShot<Result<(AsyncWake, SocketAddress, [Int32]), UVError>>()
            let accepting = OneShot<String?>()
            let shared = self.shared
            let bindAddress = address
            let adopted = inherited.indices.filter { $0 % config.workers == index }.map { inherited[$0] }
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
                    wake = try worker.start(address: bindAddress, adopting: adopted, acceptNow: !acceptLater, acceptReport: accepting)
                } catch {
                    // start() closed what it had opened; run the loop so the close callbacks
                    // free those handles (each holds its loop until then).
                    worker.run()
                    ready.set(.failure(error as! UVError))  // start throws(UVError) only
                    return
                }
                ready.set(.success((wake, worker.boundAddress ?? bindAddress, worker.listenerDescriptors)))
                worker.run()
                if shared.finishedWorkers.add(1, ordering: .acquiringAndReleasing).newValue == config.workers {
                    onFinished?()
                }
            }
            switch ready.wait() {
            case .success(let (wake, bound, workerDescriptors)):
                handles.append(WorkerHandle(thread: thread, wake: wake, counters: counters, accepting: accepting))
                descriptors += workerDescriptors
                address = bound
            case .failure(let error):
                thread.join()
                // Stop the workers already running before reporting the error.
                shared.request(.stopping)
                for handle in handles { handle.wake.send() }
                for handle in handles { handle.thread.join() }
                accessLog?.finish()
                throw error
            }
        }
        workers = handles
        listenerDescriptors = descriptors
        self.address = address
        do {
            monitor = Mutex(MonitorSlot(monitor: try upstreams.flatMap { pool throws(UVError) in
                try UpstreamMonitor.start(pool: pool, config: config, logger: logger)
            }))
        } catch {
            shared.request(.stopping)
            for handle in handles { handle.wake.send() }
            for handle in handles { handle.thread.join() }
            accessLog?.finish()  // its writer thread ends too
            throw error
        }
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
        // No reload starts another monitor or access log from now on (both under the reload's lock).
        let (monitor, accessLog) = reloadState.current.withLock { _ in
            (self.monitor.withLock { $0.retire() }, shared.currentSettings.accessLog)
        }
        monitor?.stop()
        // Every worker has ended: the access log writes what is left, then its thread ends.
        accessLog?.finish()
        return statistics()
    }

    /// Reopens the access log's file (SIGUSR1, after logrotate renamed it); any thread.
    public func reopenAccessLog() {
        shared.currentSettings.accessLog?.reopen()
    }

    /// A snapshot of every worker's counters and of the pools; any thread, any time, without
    /// touching the data path's locks.
    public func statistics() -> ServerStatistics {
        ServerStatistics(
            workers: workers.enumerated().map { $0.element.counters.snapshot(worker: $0.offset) },
            connectionsRejected: shared.rejected.load(ordering: .relaxed),
            buffers: shared.pools.statistics(),
            shutdownPhase: shared.requestedPhase.load(ordering: .relaxed),
            upstreams: shared.upstreams?.statistics ?? [],
            upstreamResolveFailures: shared.upstreams?.resolveFailures.load(ordering: .relaxed) ?? 0,
            reloads: reloadStatistics,
            upgrades: upgradeStatistics)
    }

    // MARK: Signals

    /// The process-wide signal settings the server needs (the same on every call).
    private static func prepareSignals() {
        // A peer that resets must never kill the process: a write to it returns EPIPE instead.
        signal(SIGPIPE, SIG_IGN)
        // A parent may have started us with signals blocked (a blocked mask is inherited across
        // exec): unblock the ones that drain (and SIGUSR1, which reopens the access log, and
        // SIGHUP, which reloads), in
        // this thread and so in every worker it starts.
        var drainSignals = sigset_t()
        sigemptyset(&drainSignals)
        sigaddset(&drainSignals, SIGTERM)
        sigaddset(&drainSignals, SIGINT)
        sigaddset(&drainSignals, SIGUSR1)
        sigaddset(&drainSignals, SIGHUP)
        sigaddset(&drainSignals, SIGUSR2)
        pthread_sigmask(SIG_UNBLOCK, &drainSignals, nil)
    }
}
