import CLibUV
import Logging
import PacketBuffers
import Synchronization
import UVLoop

/// One worker: a thread, its own libuv loop, its own listener on the shared address
/// (SO_REUSEPORT) and its own local packet-buffer pool. A connection, its relay peer and every
/// buffer it uses stay on this thread. Everything here runs on the worker's thread; other
/// threads reach it only through its `WorkerWake` and read its `WorkerCounters`.
final class Worker: TCPListenerDelegate {
    let index: Int
    let config: ServerConfig
    let loop: EventLoop
    let buffers: WorkerBufferPool
    let bufferSize: Int
    let counters: WorkerCounters
    let shared: ServerShared
    var logger: Logger
    private var listener: TCPListener?
    private var sessions: [Session] = []
    /// Ended sessions and closed streams kept for the next connections: after the worker's peak
    /// number of connections, accepting, connecting upstream and closing allocate nothing.
    private var freeSessions: [Session] = []
    private var freeStreams: [TCPStream] = []
    private var waitingForBuffers: [Endpoint] = []
    private var retrying: [Endpoint] = []
    private var bufferRetryTimer: Timer?
    private var sweepTimer: Timer?
    private var drainTimer: Timer?
    private var wake: WorkerWake?
    private(set) var draining = false
    /// Upstream failures logged in the current second, to keep a dead upstream from flooding
    /// the log (every failure is counted).
    private var failureLogSecond: UInt64 = 0
    private var failureLogCount = 0

    init(index: Int, config: ServerConfig, shared: ServerShared, counters: WorkerCounters, logger: Logger) throws(UVError) {
        self.index = index
        self.config = config
        self.shared = shared
        self.counters = counters
        self.logger = logger
        self.logger[metadataKey: "worker"] = "\(index)"
        loop = try EventLoop()
        buffers = shared.pools.makeWorkerPool()
        bufferSize = shared.pools.config.bufferSize
    }

    /// Binds and listens (on the worker's thread); returns the handle other threads wake it with.
    /// On failure everything it opened is closing: run the loop once more to finish that.
    func start(address: SocketAddress) throws(UVError) -> WorkerWake {
        do {
            return try open(address: address)
        } catch {
            finish()
            throw error
        }
    }

    private func open(address: SocketAddress) throws(UVError) -> WorkerWake {
        let listener = try TCPListener(loop: loop, address: address, reusePort: true, backlog: Int32(config.backlog))
        listener.delegate = self
        self.listener = listener
        let wake = WorkerWake(try AsyncWake(loop: loop) { [unowned self] _ in self.handleCommand() })
        self.wake = wake
        let sweepTimer = try Timer(loop: loop)
        let timeouts = [config.idleTimeout, config.mode == .relay ? config.connectTimeout : 0].filter { $0 > 0 }
        if let shortest = timeouts.min() {
            // Timeouts are checked by one sweep per worker, not a timer per connection: a
            // timeout fires within a quarter of its length (at most a second) late.
            let interval = UInt64(min(max(shortest * 1000 / 4, 10), 1000))
            sweepTimer.start(after: interval, repeat: interval) { [unowned self] _ in self.sweep() }
        }
        self.sweepTimer = sweepTimer
        bufferRetryTimer = try Timer(loop: loop)
        return wake
    }

    var boundAddress: SocketAddress? { listener?.localAddress }

    /// Runs the loop until the worker has drained or been stopped and every handle is closed.
    func run() {
        loop.run()
        // Buffers other threads released to this worker: take them home before the pool goes.
        buffers.drainReturns()
    }

    // MARK: Accepting

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        guard !draining else {
            stream.close()
            return
        }
        guard shared.admit() else {
            stream.close()
            logRateLimited(level: .warning, "connection refused: \(shared.maxConnections) connections open, the limit")
            return
        }
        WorkerCounters.add(counters.accepted)
        var upstreamStream: TCPStream?
        if config.mode == .relay, let upstream = config.upstream {
            do {
                let upstreamTCP = try makeStream()
                upstreamStream = upstreamTCP
                try upstreamTCP.connect(to: upstream)
            } catch {
                WorkerCounters.add(counters.upstreamConnectFailures)
                logUpstreamFailure(error)
                upstreamStream?.close()
                stream.close()
                shared.release()
                WorkerCounters.add(counters.closed)
                return
            }
        }
        let session = freeSessions.popLast() ?? Session(worker: self)
        session.open(clientStream: stream, upstreamStream: upstreamStream)
        session.slot = sessions.count
        sessions.append(session)
        WorkerCounters.set(counters.active, sessions.count)
        session.start()
    }

    func listener(_ listener: TCPListener, acceptFailed error: UVError) {
        switch error.code {
        case UVError.processFileLimit: WorkerCounters.add(counters.acceptErrorsProcessFiles)
        case UVError.systemFileLimit: WorkerCounters.add(counters.acceptErrorsSystemFiles)
        case UVError.outOfMemory, UVError.noBufferSpace: WorkerCounters.add(counters.acceptErrorsMemory)
        default: WorkerCounters.add(counters.acceptErrorsOther)
        }
        // Out of file descriptors or memory: say so (at most 10 lines a second) and keep listening.
        logRateLimited(level: .error, "accept failed: \(error)")
    }

    /// A stream for a new connection: a closed one reopened, or a new one.
    private func makeStream() throws(UVError) -> TCPStream {
        if let stream = freeStreams.popLast() {
            try stream.reopen()
            return stream
        }
        return try TCPStream(loop: loop)
    }

    func streamForAccept(_ listener: TCPListener) throws(UVError) -> TCPStream {
        try makeStream()
    }

    func sessionDidEnd(_ session: Session) {
        // Both streams have closed (their close callbacks ran): keep them and the session.
        freeStreams.append(session.client.stream)
        if let upstream = session.upstream { freeStreams.append(upstream.stream) }
        freeSessions.append(session)
        let last = sessions.removeLast()
        if last !== session {
            last.slot = session.slot
            sessions[session.slot] = last
        }
        WorkerCounters.set(counters.active, sessions.count)
        WorkerCounters.add(counters.closed)
        shared.release()
        if draining && sessions.isEmpty { finish() }
    }

    // MARK: Buffers ran out

    /// A side found no buffer: retry every millisecond until buffers come back (from this
    /// worker's completions, other threads' returns or the overflow pool).
    func waitForBuffers(_ endpoint: Endpoint) {
        waitingForBuffers.append(endpoint)
        if waitingForBuffers.count == 1 {
            bufferRetryTimer?.start(after: 1, repeat: 1) { [unowned self] _ in self.retryWaitingReads() }
        }
    }

    private func retryWaitingReads() {
        buffers.drainReturns()
        // Swap the list with a scratch one (both keep their capacity: no allocation per tick).
        swap(&waitingForBuffers, &retrying)
        for endpoint in retrying where endpoint.waitingForBuffer {
            endpoint.waitingForBuffer = false
            endpoint.updateReading()  // a read that finds no buffer again re-registers
        }
        retrying.removeAll(keepingCapacity: true)
        if waitingForBuffers.isEmpty { bufferRetryTimer?.stop() }
    }

    // MARK: Timeouts

    private func sweep() {
        let now = loop.nowMilliseconds
        let idle = UInt64(config.idleTimeout * 1000)
        let connect = UInt64(config.connectTimeout * 1000)
        var expired: [Session] = []
        for session in sessions {
            if !session.isConnected && !session.upstreamFailureHandled {
                if config.mode == .relay && now &- session.startedAt >= connect { expired.append(session) }
            } else if idle > 0 && now &- session.lastActivity >= idle {
                expired.append(session)
            }
        }
        for session in expired where !session.ended {
            if session.isConnected || session.upstreamFailureHandled {
                WorkerCounters.add(counters.idleTimeouts)
                session.closeNow()
            } else {
                session.upstreamFailed(UVError.timedOut("connect to upstream \(config.upstream!)"))
            }
        }
    }

    // MARK: Drain and stop

    private func handleCommand() {
        switch shared.command.load(ordering: .acquiring) {
        case ServerShared.commandDrain: beginDrain()
        case ServerShared.commandStop: stopNow()
        default: break
        }
    }

    /// Stops accepting, lets every session flush what it has and end; after the drain timeout
    /// closes what is left.
    private func beginDrain() {
        guard !draining else { return }
        draining = true
        listener?.close()
        listener = nil
        if sessions.isEmpty {
            finish()
            return
        }
        for session in sessions { session.drain() }
        drainTimer = try? Timer(loop: loop)
        drainTimer?.start(after: UInt64(config.drainTimeout * 1000)) { [unowned self] _ in
            self.logger.warning("drain timeout: closing \(self.sessions.count) connections")
            self.closeAllSessions()
        }
    }

    private func stopNow() {
        draining = true
        listener?.close()
        listener = nil
        if sessions.isEmpty { finish() } else { closeAllSessions() }
    }

    private func closeAllSessions() {
        for session in sessions { session.closeNow() }
    }

    /// Every session has ended: close the worker's own handles so the loop returns.
    private func finish() {
        listener?.close()
        listener = nil
        for timer in [sweepTimer, bufferRetryTimer, drainTimer] { timer?.close() }
        sweepTimer = nil
        bufferRetryTimer = nil
        drainTimer = nil
        waitingForBuffers.removeAll()
        retrying.removeAll()
        wake?.close()
        wake = nil
    }

    // MARK: Logging

    func logUpstreamFailure(_ error: UVError) {
        logRateLimited(level: .warning, "upstream \(config.upstream.map { "\($0)" } ?? "?"): \(error)")
    }

    private func logRateLimited(level: Logger.Level, _ message: @autoclosure () -> String) {
        let second = loop.nowMilliseconds / 1000
        if second != failureLogSecond {
            if failureLogCount > 10 {
                logger.log(level: level, "\(failureLogCount - 10) more such failures in the last second (counted, not logged)")
            }
            failureLogSecond = second
            failureLogCount = 0
        }
        failureLogCount += 1
        if failureLogCount <= 10 { logger.log(level: level, "\(message())") }
    }
}
