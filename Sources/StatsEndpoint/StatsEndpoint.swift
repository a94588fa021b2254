import CHTTPParser
import Logging
import ServerCore
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
    private let thread: ThreadHandle
    private let wake: WorkerWake

    public init(server: Server, address: SocketAddress, limits: StatsLimits = StatsLimits(),
                logger: Logger = Logger(label: "fastalloc-stats")) throws(UVError) {
        let ready = OneShot<Result<(WorkerWake, SocketAddress), UVError>>()
        thread = ThreadHandle.start {
            let loop: StatsLoop
            do {
                loop = try StatsLoop(server: server, limits: limits, logger: logger)
            } catch {
                ready.set(.failure(error as! UVError))  // StatsLoop.init throws(UVError) only
                return
            }
            do {
                let wake = try loop.start(address: address)
                ready.set(.success((wake, loop.boundAddress ?? address)))
            } catch {
                loop.run()  // let the handles it opened close
                ready.set(.failure(error as! UVError))  // start throws(UVError) only
                return
            }
            loop.run()
        }
        switch ready.wait() {
        case .success(let (wake, bound)):
            self.wake = wake
            self.address = bound
        case .failure(let error):
            thread.join()
            throw error
        }
    }

    /// Closes the listener and every stats connection, and joins the thread. Any thread.
    public func stop() {
        wake.send()
        thread.join()
    }
}

/// The endpoint's loop and everything on it (its thread only).
final class StatsLoop: TCPListenerDelegate {
    let server: Server
    let limits: StatsLimits
    let loop: EventLoop
    var logger: Logger
    private var listener: TCPListener?
    private var sweepTimer: Timer?
    private var wake: WorkerWake?
    private var connections: [HTTPConnection] = []
    private var stopping = false
    /// Connections refused because `limits.maxConnections` were open.
    private(set) var refused = 0

    init(server: Server, limits: StatsLimits, logger: Logger) throws(UVError) {
        self.server = server
        self.limits = limits
        self.logger = logger
        loop = try EventLoop()
    }

    func start(address: SocketAddress) throws(UVError) -> WorkerWake {
        do {
            let listener = try TCPListener(loop: loop, address: address, backlog: 128)
            listener.delegate = self
            self.listener = listener
            let wake = WorkerWake(try AsyncWake(loop: loop) { [unowned self] _ in self.stop() })
            self.wake = wake
            let timer = try Timer(loop: loop)
            let interval = UInt64(min(max(limits.idleTimeout * 1000 / 4, 10), 1000))
            timer.start(after: interval, repeat: interval) { [unowned self] _ in self.sweep() }
            sweepTimer = timer
            return wake
        } catch {
            stop()
            throw error
        }
    }

    var boundAddress: SocketAddress? { listener?.localAddress }

    func run() { loop.run() }

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        guard !stopping, connections.count < limits.maxConnections else {
            refused += 1
            stream.close()
            return
        }
        let connection = HTTPConnection(endpoint: self, stream: stream, limits: limits)
        connection.index = connections.count
        connections.append(connection)
        connection.start()
    }

    func listener(_ listener: TCPListener, acceptFailed error: UVError) {
        logger.warning("stats: accept failed: \(error)")
    }

    func connectionDidClose(_ connection: HTTPConnection) {
        let last = connections.removeLast()
        if last !== connection {
            last.index = connection.index
            connections[connection.index] = last
        }
        if stopping && connections.isEmpty { closeOwnHandles() }
    }

    private func sweep() {
        let now = loop.nowMilliseconds
        for connection in connections where connection.timedOut(now: now) { connection.expire() }
    }

    private func stop() {
        guard !stopping else { return }
        stopping = true
        listener?.close()
        listener = nil
        if connections.isEmpty { closeOwnHandles() } else { for connection in connections { connection.close() } }
    }

    private func closeOwnHandles() {
        sweepTimer?.close()
        sweepTimer = nil
        wake?.close()
        wake = nil
    }

    // MARK: Routes

    func respond(to request: HTTPRequest) -> HTTPResponse {
        guard request.method == HTTP_GET.rawValue || request.method == HTTP_HEAD.rawValue else {
            return HTTPResponse(status: 405, body: "only GET and HEAD\n", extraHeaders: [("Allow", "GET, HEAD")])
        }
        switch request.path {
        case "/metrics":
            return HTTPResponse(status: 200, contentType: MetricsRenderer.contentType,
                                body: MetricsRenderer.prometheus(server.statistics(), process: .current()))
        case "/stats":
            return HTTPResponse(status: 200, contentType: "application/json",
                                body: MetricsRenderer.json(server.statistics(), process: .current(),
                                                           monotonicNowNanoseconds: EventLoop.hrtime()))
        case "/healthz":
            return HTTPResponse(status: 200, body: "ok\n")
        case "/readyz":
            return server.statistics().draining
                ? HTTPResponse(status: 503, body: "draining\n")
                : HTTPResponse(status: 200, body: "ready\n")
        case "/":
            return HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: Dashboard.html)
        default:
            return HTTPResponse(status: 404, body: "not found; try /metrics, /stats, /healthz, /readyz or /\n")
        }
    }
}
