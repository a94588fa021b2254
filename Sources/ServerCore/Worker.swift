import Logging
import PacketBuffers
import Synchronization
import Threads
import UVLoop

/// One worker: a thread, its own libuv loop, its own listener on the shared address
/// (SO_REUSEPORT) and its own local packet-buffer pool. A connection, its relay peer and every
/// buffer it uses stay on this thread. Everything here runs on the worker's thread; other
/// threads reach it only through its `AsyncWake` and read its `WorkerCounters`.
///
/// The files: this one holds the worker's state, its start and end, accepting and recycling
/// sessions, the timeout sweep, counting and logging; `Worker+Buffers.swift` the buffer
/// fairness (queue shares, the reserve, reads waiting for a buffer, eviction of the
/// longest-stalled queue); `Worker+Shutdown.swift` the drain and the stop.
final class Worker: TCPListenerDelegate {
    let index: Int
    /// The configuration new connections get: the start's, then each reload's, taken at the
    /// first accept after it (`refreshSettings`, Worker+Reload.swift).
    var config: ServerConfig
    /// The settings snapshot `config` comes from (with the access log and per-client table).
    var settings: ServerSettings
    let loop: EventLoop
    let buffers: WorkerBufferPool
    let bufferSize: Int
    let counters: WorkerCounters
    let shared: ServerShared
    var logger: Logger
    /// The deadlines a new session takes (it keeps them: a reload changes new sessions' only),
    /// in milliseconds.
    var timeouts: SessionTimeouts
    /// A direction's write queue, in whole buffers: where its source pauses (the share, at
    /// most this) and where it resumes.
    let highWatermarkBuffers: Int
    let lowWatermarkBuffers: Int
    /// When this few buffers are left (local free plus overflow room), a read by a connection
    /// that already holds queued buffers is refused one: the rest is kept for connections that
    /// hold none, such as a new client.
    let reserveBuffers: Int
    /// TCP_NODELAY and keepalive: set on the listener (accepted clients inherit them) and on
    /// each upstream connection once it is connected.
    let socketOptions: TCPSocketOptions
    /// `socketOptions` without keepalive: for an upstream connection where it is inert.
    let noDelayOnly: TCPSocketOptions
    /// The `random` balancer's draws (this worker's own generator: no lock, no system call).
    var random: SplitMix64
    /// Takes back the streams a connect retry left behind, once they have closed.
    private(set) lazy var recycler = StreamRecycler(worker: self)
    /// Where this worker accepts: one SO_REUSEPORT listener of its own, or the inherited ones
    /// an upgrade handed it (`Server.init(inherited:)`; a worker may get several when the old
    /// process had more workers).
    var listeners: [TCPListener] = []
    /// Where `startAccepting()` reports (once): nil, or why this worker does not accept.
    var acceptReport: OneShot<String?>?
    ///
    /// Unchecked exclusivity (the session and stream lists, here and in `Session`): touched a
    /// few times per connection, where each dynamic check is a runtime call and a thread-local
    /// lookup (measured: 17 checks, about a quarter of the user-space instructions of an echo
    /// connection). Only this worker's thread touches them, and no access spans a call that
    /// could touch them again.
    @exclusivity(unchecked) private(set) var sessions: [Session] = []
    /// Ended sessions and closed streams kept for the next connections: after the worker's peak
    /// number of connections, accepting, connecting upstream and closing allocate nothing.
    @exclusivity(unchecked) private var freeSessions: [Session] = []
    @exclusivity(unchecked) var freeStreams: [TCPStream] = []
    /// `--accept-proxy`: connections whose PROXY header is on its way (Worker+ProxyProtocol.swift),
    /// and readers kept for the next ones; where a v2 header's TLVs are discarded.
    @exclusivity(unchecked) var headerReaders: [ProxyHeaderReader] = []
    var freeReaders: [ProxyHeaderReader] = []
    var discardBuffer: [UInt8] = []

    // Buffer waits (Worker+Buffers.swift).
    /// Reads waiting for a buffer, first come, first served: `bufferWaiters[waitersHead...]`.
    // Unchecked exclusivity (both): read after every buffer release (`bufferReleased`, per
    // message), on the worker's thread only, and never accessed across a call that could
    // touch them again (`wakeBufferWaiters` copies each entry out before it acts on it).
    @exclusivity(unchecked) var bufferWaiters: [SessionConnection] = []
    @exclusivity(unchecked) var waitersHead = 0
    /// Buffers released by other workers (overflow) do not wake this one: while reads wait,
    /// this timer looks again every few milliseconds.
    var bufferWaitTimer: Timer?
    /// The buffer-wait timer's body, made once (starting the timer allocates no closure).
    lazy var retryWaitingReads: (Timer) -> Void = { [unowned self] _ in
        self.buffers.drainReturns()
        self.wakeBufferWaiters(upTo: self.buffers.available)
    }
    /// Where lingering closes read the bytes they drop (never a pool buffer: a lingering side
    /// must see its peer's end even when the pools are empty).
    let scratch: UnsafeMutableRawBufferPointer

    /// Runs the timeout sweep (restarted when a reload changes its period: Worker+Reload.swift),
    /// after the poll that follows each expiry: a deadline is judged only once every event that
    /// was ready has been handled, so a loop that stalled past it cannot time out a connect that
    /// completed, or a client whose bytes arrived, in time.
    var sweepTimer: PostPollTimer?
    /// What other threads wake this worker with (to enter the phase the server asked for).
    private var wake: AsyncWake?

    // Drain and stop (Worker+Shutdown.swift).
    var drainTimer: Timer?
    /// The phase this worker has entered (it follows `shared.requestedPhase` when woken). Past
    /// `.serving` it accepts nothing and ends once its last session has.
    var shutdownPhase = ShutdownPhase.serving

    /// Upstream failures logged in the current second, to keep a dead upstream from flooding
    /// the log (every failure is counted).
    private var failureLogSecond: UInt64 = 0
    private var failureLogCount = 0

    init(index: Int, config: ServerConfig, shared: ServerShared, counters: WorkerCounters, logger: Logger) throws(UVError) {
        self.index = index
        self.config = config
        settings = shared.currentSettings
        self.shared = shared
        self.counters = counters
        self.logger = logger
        self.logger[metadataKey: "worker"] = "\(index)"
        loop = try EventLoop()
        buffers = shared.pools.makeWorkerPool()
        bufferSize = shared.pools.config.bufferSize
        timeouts = SessionTimeouts(config)
        highWatermarkBuffers = config.highWatermarkBuffers
        lowWatermarkBuffers = config.lowWatermarkBuffers
        reserveBuffers = Worker.reserve(reachable: buffers.reachable)
        socketOptions = TCPSocketOptions(noDelay: true, keepAliveSeconds: config.tcpKeepaliveSeconds)
        noDelayOnly = TCPSocketOptions(noDelay: true)
        random = SplitMix64(seed: UInt64(index) &+ EventLoop.hrtime())
        scratch = .allocate(byteCount: 16 * 1024, alignment: 64)
    }

    deinit {
        // Safe: libuv fills `scratch` only inside a read callback on this thread, and every
        // stream of this worker's loop has closed before the worker goes.
        scratch.deallocate()
    }

    // MARK: Starting and ending

    /// Binds and listens (on the worker's thread); returns the handle other threads wake it with.
    /// On failure everything it opened is closing: run the loop once more to finish that.
    func start(address: SocketAddress, adopting inherited: [Int32] = [], acceptNow: Bool = true,
               acceptReport: OneShot<String?>? = nil) throws(UVError) -> AsyncWake {
        self.acceptReport = acceptReport
        do {
            return try open(address: address, adopting: inherited, acceptNow: acceptNow)
        } catch {
            finish()
            throw error
        }
    }

    private func open(address: SocketAddress, adopting inherited: [Int32], acceptNow: Bool) throws(UVError) -> AsyncWake {
        if inherited.isEmpty {
            let listener = try TCPListener(loop: loop, address: address, reusePort: true, backlog: Int32(config.backlog),
                                           acceptedOptions: socketOptions, acceptNow: acceptNow)
            listener.delegate = self
            listeners = [listener]
        } else {
            for descriptor in inherited {
                let listener = try TCPListener(loop: loop, adopting: descriptor, backlog: Int32(config.backlog),
                                               acceptedOptions: socketOptions, acceptNow: acceptNow)
                listener.delegate = self
                listeners.append(listener)
            }
        }
        let wake = try AsyncWake(loop: loop) { [unowned self] _ in self.enterRequestedPhase() }
        self.wake = wake
        let sweepTimer = try PostPollTimer(loop: loop)
        if let interval = config.sweepIntervalMilliseconds {
            // Timeouts are checked by one sweep per worker, not a timer per connection: a
            // timeout fires within a quarter of its length (at most a second) late.
            sweepTimer.start(after: interval, repeat: interval) { [unowned self] in self.sweep() }
        }
        self.sweepTimer = sweepTimer
        bufferWaitTimer = try Timer(loop: loop)
        return wake
    }

    var boundAddress: SocketAddress? { listeners.first?.localAddress }

    /// The listening descriptors (read once at start, for an upgrade's hand-over).
    var listenerDescriptors: [Int32] { listeners.compactMap(\.descriptor) }

    /// Closes this worker's listeners (a drain, a stop, the end). After an upgrade handed them
    /// over, the sockets stay open in the new process: only this process's descriptors close.
    func closeListeners() {
        for listener in listeners { listener.close() }
        listeners = []
    }

    /// Runs the loop until the worker has drained or been stopped and every handle is closed.
    func run() {
        loop.run()
        releaseSessions()
        // Buffers other threads released to this worker: take them home before the pool goes.
        buffers.drainReturns()
        // The thread ends: no later thread may take the owner's lock-free path into this pool.
        buffers.retire()
    }

    /// The loop has ended, so every stream has closed: break the reference cycles of the
    /// sessions (worker -> session -> worker, session <-> its connections) so that they go.
    func releaseSessions() {
        for session in sessions { session.dissolve() }
        for session in freeSessions { session.dissolve() }
        sessions.removeAll()
        freeSessions.removeAll()
    }

    /// Every session has ended: close the worker's own handles so the loop returns.
    func finish() {
        closeListeners()
        sweepTimer?.close()
        for timer in [bufferWaitTimer, drainTimer] { timer?.close() }
        sweepTimer = nil
        bufferWaitTimer = nil
        drainTimer = nil
        bufferWaiters.removeAll()
        waitersHead = 0
        wake?.close()
        wake = nil
    }

    // MARK: Accepting

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        refreshSettings()  // one relaxed load; a reload's settings apply from this connection on
        var peer = acceptedPeer(stream)  // the client's address: access log, per-client limit, hash balancer
        guard shutdownPhase == .serving else {
            stream.close()
            recordRefused(peer, reason: .stop)
            return
        }
        guard shared.admit() else {
            stream.close()
            recordRefused(peer, reason: .connectionLimit)
            logRateLimited(level: .warning, "connection refused: \(shared.maxConnections) connections open, the limit")
            return
        }
        if config.acceptProxy {
            readProxyHeader(stream, peer: peer)
            return
        }
        guard admitPerClient(&peer, stream: stream) else { return }
        WorkerCounters.add(counters.accepted)
        startSession(stream, peer: peer)
    }

    /// Connections open on this worker: sessions, and connections whose PROXY header is on its way.
    func updateActive() {
        WorkerCounters.set(counters.active, sessions.count + headerReaders.count)
    }

    /// A session for an accepted, admitted and counted connection from `peer`.
    func startSession(_ stream: TCPStream, peer: SessionPeer) {
        var upstreamStream: TCPStream?
        if config.mode == .relay {
            do {
                upstreamStream = try makeStream()
            } catch {
                logUpstreamFailure(error)
                stream.close()
                shared.release()
                if peer.countedPerClient { settings.clientLimits?.release(peer.address) }
                recordRefused(peer, reason: .noUpstream)
                WorkerCounters.add(counters.upstreamUnavailable)
                WorkerCounters.add(counters.closed)
                return
            }
        }
        let session = freeSessions.popLast() ?? Session(worker: self)
        session.slot = sessions.count
        session.peer = peer
        sessions.append(session)
        updateActive()
        session.open(clientStream: stream, upstreamStream: upstreamStream)
        // The session is connecting; its upstream is picked and the connect starts here.
        if let upstreamStream { connectUpstream(session, stream: upstreamStream) }
    }

    /// Picks an upstream for `session` (never one it tried) and connects `stream` to it; with
    /// none left, the session gives up (its client gets a clean end).
    func connectUpstream(_ session: Session, stream: TCPStream) {
        let now = loop.nowMilliseconds
        guard let pool = shared.upstreams,
              let member = pool.choose(method: session.balance, clientKey: session.clientKey, tried: session.tried, now: now,
                                       random: &random) else {
            session.perform(session.machine.upstreamConnectGaveUp(now: now))
            return
        }
        session.use(member)
        do {
            try stream.connect(to: member.address)
            // Reading starts with the connect, so libuv registers the socket once for both (an
            // epoll ADD; then a MOD when the connect completes). Started after it, reading made
            // an ADD that failed (the connect's registration was still there) and a MOD: one
            // system call more per upstream connection. Nothing is read before the connect
            // completes; `Session.upstreamDidConnect` stops it if the machine does not want it.
            try? stream.startReading()
        } catch {
            // Refused at once (no route, bad address): as a failed connect.
            pool.connectFailed(member, UpstreamFailure(error), now: now)
            logUpstreamFailure(error)
            session.perform(session.machine.upstreamConnectFailed(now: now))
        }
    }

    /// A session's upstream connect failed and it may retry: its old stream is closed apart
    /// from it (handed back to this worker when closed) and a new one connects to another
    /// upstream.
    func retryUpstream(_ session: Session) {
        guard let old = session.upstream?.stream else { return }
        old.delegate = recycler
        old.close()
        let stream: TCPStream
        do {
            stream = try makeStream()
        } catch {
            logUpstreamFailure(error)
            session.perform(session.machine.upstreamConnectGaveUp(now: loop.nowMilliseconds))
            return
        }
        session.replaceUpstreamStream(with: stream)
        connectUpstream(session, stream: stream)
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

    /// An upstream connection became usable: small writes go out at once; keepalive finds
    /// vanished peers, unless the session's idle timeout always ends it first (see
    /// `keepaliveIsInert`). (A client has both from the listener.) A failure is logged and the
    /// connection kept: it still relays, only with Nagle or without keepalive.
    func connectionReady(_ stream: TCPStream, idleTimeout: UInt64) {
        do {
            try stream.apply(Worker.keepaliveIsInert(socketOptions, idleTimeout: idleTimeout) ? noDelayOnly : socketOptions)
        } catch {
            logRateLimited(level: .warning, "socket options on an upstream connection: \(error)")
        }
    }

    /// Keepalive can do nothing for a session whose idle timeout ends it first: a relayed
    /// session's two sockets fall silent together (every byte read on one is written to the
    /// other), and the session is idle from then on, so with an idle timeout (plus the sweep's
    /// lateness, at most a second) shorter than keepalive's time to find a dead peer (idle time,
    /// then every probe: 60 + 6 x 10 s by default) the timeout always comes first. Its four
    /// setsockopt calls per upstream connection are then skipped. With `--idle-timeout 0`, or
    /// one longer than that, they are made. (Accepted sockets inherit keepalive from the
    /// listener at no cost per connection, and keep it.)
    static func keepaliveIsInert(_ options: TCPSocketOptions, idleTimeout: UInt64) -> Bool {
        guard idleTimeout > 0, let detection = options.detectionMilliseconds else { return false }
        return idleTimeout &+ 1000 < detection
    }

    func sessionDidEnd(_ session: Session) {
        recordEnd(of: session)  // the access log's line and the per-client count (Worker+AccessLog.swift)
        if session.machine.gaveUpConnecting { WorkerCounters.add(counters.upstreamUnavailable) }
        session.releaseUpstream()
        // Both streams have closed (their close callbacks ran): keep them and the session.
        freeStreams.append(session.client.stream)
        if session.hasUpstream, let upstream = session.upstream { freeStreams.append(upstream.stream) }
        freeSessions.append(session)
        let last = sessions.removeLast()
        if last !== session {
            last.slot = session.slot
            sessions[session.slot] = last
        }
        updateActive()
        WorkerCounters.add(counters.closed)
        if session.inDrain && !session.machine.wasCut { WorkerCounters.add(counters.drainCompleted) }
        shared.release()
        if shutdownPhase != .serving && sessions.isEmpty && headerReaders.isEmpty { finish() }
    }

    // MARK: Counting

    func count(_ event: SessionCount) {
        switch event {
        case .clientFailure: WorkerCounters.add(counters.clientResets)
        case .upstreamFailure: WorkerCounters.add(counters.upstreamResets)
        case .upstreamConnectFailure: WorkerCounters.add(counters.upstreamConnectFailures)
        case .backpressurePause: WorkerCounters.add(counters.backpressurePauses)
        case .writeTimeout: WorkerCounters.add(counters.writeTimeouts)
        case .lingerTimeout: WorkerCounters.add(counters.lingerTimeouts)
        case .idleTimeout: WorkerCounters.add(counters.idleTimeouts)
        case .drainCut: WorkerCounters.add(counters.drainCut)
        case .stalledEviction: WorkerCounters.add(counters.stalledEvictions)
        }
    }

    // MARK: Timeouts

    func sweep() {
        // A worker that accepts nothing still takes a reload's settings within a sweep (the
        // drain timeout, the sweep's own period).
        refreshSettings()
        let now = loop.nowMilliseconds
        // Sessions end only in close callbacks, never inside this loop: the list stays put.
        if !headerReaders.isEmpty { sweepHeaderReaders(now: now) }
        for session in sessions {
            let action = session.machine.tick(now: now, timeouts: session.timeouts) { side in
                session.connection(side).stream.queuedWriteBytes
            }
            if action.count == .upstreamConnectFailure {
                session.upstreamConnectTimedOut(action)
            } else {
                session.perform(action)
            }
        }
    }

    // MARK: Logging

    func logUpstreamFailure(_ error: UVError) {
        logRateLimited(level: .warning, "\(error)")
    }

    func logRateLimited(level: Logger.Level, _ message: @autoclosure () -> String) {
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

/// The delegate of a stream a connect retry left behind: when it has closed, it goes back to
/// the worker's free streams (its connect callback, cancelled, is ignored).
final class StreamRecycler: TCPStreamDelegate {
    unowned(unsafe) let worker: Worker  // Safe: the worker outlives its streams.

    init(worker: Worker) { self.worker = worker }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: nil, count: 0)  // never read: it is closing
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {}

    override func streamDidClose(_ stream: TCPStream) {
        worker.freeStreams.append(stream)
    }
}
