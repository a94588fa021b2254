import CHTTPParser
import Logging
import Synchronization
import ServerCore
import Threads
import UVLoop

/// The stats HTTP endpoint: `/metrics` (Prometheus), `/stats` (JSON), `/healthz`, `/readyz` and
/// `/` (a live dashboard), on its own thread and libuv loop. It reads the server's published
/// snapshots (relaxed atomic loads, the pools' statistics) and never touches a worker's loop.
///
/// ```swift
/// let stats = try StatsEndpoint(server: server, address: SocketAddress(host: "127.0.0.1", port: 9464))
/// // ...
/// stats.stop()   // closes its connections and joins its thread
/// ```
public final class StatsEndpoint: Sendable {
    /// The bound address (the real port when port 0 was asked for).
    public let address: SocketAddress
    /// The listening socket's descriptor, to hand to the process an upgrade starts.
    public let descriptor: Int32?
    private let thread: ThreadHandle
    private let wake: AsyncWake
    private let counters = StatsConnectionCounters()
    /// What the wake asks of the loop.
    private let request = StatsWakeRequest()

    /// Listens on `address`, or accepts on `adopting`, a listening socket on that address handed
    /// over by the process this one replaces (an upgrade). With `acceptLater`, it accepts only
    /// after `startAccepting()` (the socket is bound, or adopted, meanwhile).
    public init(server: Server, address: SocketAddress, adopting: Int32? = nil, acceptLater: Bool = false, limits: StatsLimits = StatsLimits(),
                logger: Logger = Logger(label: "fastalloc-stats")) throws(UVError) {
        let ready = OneShot<Result<(AsyncWake, SocketAddress, Int32?), UVError>>()
        let counters = counters
        let request = request
        thread = ThreadHandle.start {
            let loop: StatsLoop
            do {
                loop = try StatsLoop(source: ServerStatsSource(server: server), limits: limits, counters: counters, logger: logger)
            } catch {
                ready.set(.failure(error as! UVError))  // StatsLoop.init throws(UVError) only
                return
            }
            do {
                let wake = try loop.start(address: address, adopting: adopting, acceptNow: !acceptLater, request: request)
                ready.set(.success((wake, loop.boundAddress ?? address, loop.descriptor)))
            } catch {
                loop.run()  // let the handles it opened close
                ready.set(.failure(error as! UVError))  // start throws(UVError) only
                return
            }
            loop.run()
        }
        switch ready.wait() {
        case .success(let (wake, bound, descriptor)):
            self.wake = wake
            self.address = bound
            self.descriptor = descriptor
        case .failure(let error):
            thread.join()
            throw error
        }
    }

    /// Closes the listener and every stats connection, and joins the thread. Any thread.
    public func stop() {
        request.stop.store(true, ordering: .releasing)
        wake.send()
        thread.join()
    }

    /// Stops accepting (after an upgrade handed the socket over, the new process accepts on
    /// it); the connections open go on being answered until `stop()`. Any thread.
    public func closeListener() {
        request.closeListener.store(true, ordering: .releasing)
        wake.send()
    }

    /// An endpoint made with `acceptLater` starts accepting; returns nil, or why it cannot (a
    /// port taken: libuv reports a bind's EADDRINUSE at listen). Any thread; once.
    public func startAccepting() -> String? {
        request.startAccepting.store(true, ordering: .releasing)
        wake.send()
        return request.accepting.wait()
    }

    /// The endpoint's own connections: open now, admitted, evicted and refused at the limit.
    /// Any thread (relaxed atomic loads).
    public var connectionStatistics: StatsConnectionStatistics { counters.snapshot() }
}

/// What `StatsEndpoint` wakes its loop for (flags, so that requests close together are all seen).
final class StatsWakeRequest: Sendable {
    let startAccepting = Atomic<Bool>(false)
    let closeListener = Atomic<Bool>(false)
    let stop = Atomic<Bool>(false)
    /// The result of `startAccepting`: nil, or why not.
    let accepting = OneShot<String?>()
}

/// The endpoint's loop and everything on it (its thread only).
final class StatsLoop: TCPListenerDelegate {
    let source: any StatsSource
    let limits: StatsLimits
    let loop: EventLoop
    let counters: StatsConnectionCounters
    var logger: Logger
    private var listener: TCPListener?
    /// Judges request deadlines after the poll (`PostPollTimer`): a request whose bytes came in
    /// time is not timed out because the loop stalled.
    private var sweepTimer: PostPollTimer?
    private var wake: AsyncWake?
    /// Connections not yet closing (each knows its index here).
    private var connections: [HTTPConnection] = []
    /// Connections whose close is under way (their close callback has not run yet).
    private var closing = 0
    private var stopping = false
    /// The next connection's place in the order of accepts.
    private var nextSerial: UInt64 = 0
    /// Evictions and refusals already logged (the sweep logs what is new, one line at most).
    private var logged = (evicted: UInt64(0), refused: UInt64(0))

    init(source: any StatsSource, limits: StatsLimits, counters: StatsConnectionCounters, logger: Logger) throws(UVError) {
        self.source = source
        self.limits = limits
        self.counters = counters
        self.logger = logger
        loop = try EventLoop()
    }

    func start(address: SocketAddress, adopting: Int32?, acceptNow: Bool, request: StatsWakeRequest) throws(UVError) -> AsyncWake {
        do {
            let listener: TCPListener
            if let adopting {
                listener = try TCPListener(loop: loop, adopting: adopting, backlog: 128, acceptNow: acceptNow)
            } else {
                listener = try TCPListener(loop: loop, address: address, backlog: 128, acceptNow: acceptNow)
            }
            listener.delegate = self
            self.listener = listener
            let wake = try AsyncWake(loop: loop) { [unowned self] _ in
                if request.stop.load(ordering: .acquiring) {
                    request.accepting.set("stopped")
                    self.stop()
                    return
                }
                if request.closeListener.load(ordering: .acquiring) {
                    self.listener?.close()
                    self.listener = nil
                } else if request.startAccepting.load(ordering: .acquiring) {
                    do {
                        try self.listener?.startAccepting()
                        request.accepting.set(nil)
                    } catch {
                        request.accepting.set("\(error)")
                    }
                }
            }
            self.wake = wake
            let timer = try PostPollTimer(loop: loop)
            let interval = UInt64(min(max(limits.idleTimeout * 1000 / 4, 10), 1000))
            timer.start(after: interval, repeat: interval) { [unowned self] in self.sweep() }
            sweepTimer = timer
            return wake
        } catch {
            stop()
            throw error
        }
    }

    var boundAddress: SocketAddress? { listener?.localAddress }
    var descriptor: Int32? { listener?.descriptor }

    func run() { loop.run() }

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        guard !stopping else { return refuse(stream) }
        if connections.count >= limits.maxConnections {
            // At the limit: the longest-idle connection without a request in progress makes
            // room, so that a probe is answered even when idle clients hold every place.
            guard let idlest = longestIdle() else { return refuse(stream) }
            idlest.close()
            StatsConnectionCounters.add(counters.evicted)
        }
        let connection = HTTPConnection(endpoint: self, stream: stream, serial: nextSerial,
                                        handler: HTTPRequestHandler(limits: limits, source: source, now: loop.nowMilliseconds))
        nextSerial += 1
        connection.index = connections.count
        connections.append(connection)
        StatsConnectionCounters.add(counters.accepted)
        counters.open.store(connections.count + closing, ordering: .relaxed)
        connection.start()
    }

    private func refuse(_ stream: TCPStream) {
        StatsConnectionCounters.add(counters.refused)
        stream.close()
    }

    /// The open connection idle the longest (no request bytes since its last answer, nothing
    /// left to write), or nil when every one has a request in progress. Of those idle since the
    /// same millisecond, the one accepted first.
    private func longestIdle() -> HTTPConnection? {
        var best: (connection: HTTPConnection, since: UInt64)?
        for connection in connections {
            guard let since = connection.evictableSince else { continue }
            if let current = best, (current.since, current.connection.serial) <= (since, connection.serial) { continue }
            best = (connection, since)
        }
        return best?.connection
    }

    func listener(_ listener: TCPListener, acceptFailed error: UVError) {
        logger.warning("stats: accept failed: \(error)")
    }

    /// A connection called uv_close: it leaves the list now, and counts as open until its close
    /// callback.
    func connectionIsClosing(_ connection: HTTPConnection) {
        let last = connections.removeLast()
        if last !== connection {
            last.index = connection.index
            connections[connection.index] = last
        }
        closing += 1
    }

    func connectionDidClose(_ connection: HTTPConnection) {
        closing -= 1
        counters.open.store(connections.count + closing, ordering: .relaxed)
        if stopping && connections.isEmpty && closing == 0 { closeOwnHandles() }
    }

    private func sweep() {
        let now = loop.nowMilliseconds
        for connection in connections { connection.checkTimeout(now: now) }
        logEvictions()
    }

    /// At most one debug line per sweep, and only when there were evictions or refusals.
    private func logEvictions() {
        let evicted = counters.evicted.load(ordering: .relaxed)
        let refused = counters.refused.load(ordering: .relaxed)
        guard evicted != logged.evicted || refused != logged.refused else { return }
        logger.debug("""
            stats: at the limit of \(limits.maxConnections) connections, \(evicted - logged.evicted) idle ones \
            closed for new ones, \(refused - logged.refused) new ones refused
            """)
        logged = (evicted, refused)
    }

    private func stop() {
        guard !stopping else { return }
        stopping = true
        listener?.close()
        listener = nil
        for connection in connections { connection.close() }  // each leaves the list (a copy is iterated)
        if closing == 0 { closeOwnHandles() }
    }

    private func closeOwnHandles() {
        sweepTimer?.close()
        sweepTimer = nil
        wake?.close()
        wake = nil
    }
}
