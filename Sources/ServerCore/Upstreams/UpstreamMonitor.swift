import Logging
import Threads
import ProxyProtocol
import UVLoop

/// The relay's upstream monitor: one thread with its own loop, off the data path (never one
/// per worker). It checks every upstream with a TCP connect each `--health-check-interval`
/// (haproxy's `check` on a TCP server: a connect that succeeds passes), feeding the pool's
/// rise and fall, and resolves the upstream names again every `--resolve-interval`: a lookup
/// that fails keeps the last good set (logged and counted). The lookup blocks this thread for
/// as long as the resolver takes; checks due meanwhile run late, never the data path.
final class UpstreamMonitor: Sendable {
    private let thread: ThreadHandle
    private let wake: AsyncWake

    /// What the monitor does for a configuration: a reload restarts it (a new thread; the old
    /// one's checks under way are dropped, not counted) when this changes.
    struct Plan: Equatable {
        var checks: Bool
        var names: Bool
        var interval: UInt64
        var checkTimeout: UInt64
        var resolveInterval: UInt64

        init(_ config: ServerConfig) {
            checks = config.mode == .relay && config.healthCheck == .tcp
            names = config.mode == .relay && config.resolveInterval > 0 && config.upstreams.contains { spec in
                (try? SocketAddress(parsing: spec.address)) == nil
            }
            interval = max(1, ServerConfig.milliseconds(config.healthCheckInterval))
            checkTimeout = max(1, min(ServerConfig.milliseconds(config.healthCheckInterval), config.connectTimeoutMilliseconds))
            resolveInterval = ServerConfig.milliseconds(config.resolveInterval)
        }

        /// Nothing to do: no thread.
        var isIdle: Bool { !checks && !names }
    }

    /// The plan it runs.
    let plan: Plan

    /// Starts the monitor; nil when there is nothing to do (checks off and no names to resolve).
    static func start(pool: UpstreamPool, config: ServerConfig, logger: Logger) throws(UVError) -> UpstreamMonitor? {
        let plan = Plan(config)
        let checks = plan.checks
        let names = plan.names
        guard checks || names else { return nil }
        let ready = OneShot<Result<AsyncWake, UVError>>()
        let thread = ThreadHandle.start {
            do {
                let loop = try EventLoop()
                let state = MonitorState(pool: pool, plan: plan, loop: loop, logger: logger)
                let wake = try AsyncWake(loop: loop) { _ in state.stop() }
                try state.start(checks: checks, names: names)
                ready.set(.success(wake))
                loop.run()
                wake.close()
                loop.runOnce(wait: false)  // the close callbacks free the handles
            } catch {
                ready.set(.failure(error as! UVError))  // EventLoop, AsyncWake and start throw UVError only
            }
        }
        switch ready.wait() {
        case .success(let wake): return UpstreamMonitor(thread: thread, wake: wake, plan: plan)
        case .failure(let error):
            thread.join()
            throw error
        }
    }

    private init(thread: ThreadHandle, wake: AsyncWake, plan: Plan) {
        self.thread = thread
        self.wake = wake
        self.plan = plan
    }

    /// Stops the checks and waits for the thread.
    func stop() {
        wake.send()
        thread.join()
    }
}

/// The monitor's state, on its thread only.
private final class MonitorState {
    let pool: UpstreamPool
    let loop: EventLoop
    let logger: Logger
    let interval: UInt64
    /// A check that has not connected within this long fails.
    let checkTimeout: UInt64
    let resolveInterval: UInt64
    /// The pool's member-set version when the probes were last pruned.
    var prunedAt: UInt64 = 0
    /// Judges overdue checks after the poll (`PostPollTimer`): a check that connected in time
    /// is not failed because the monitor's loop stalled.
    var checkTimer: PostPollTimer?
    var resolveTimer: Timer?
    /// Checks under way, by member.
    var probes: [ObjectIdentifier: Probe] = [:]

    init(pool: UpstreamPool, plan: UpstreamMonitor.Plan, loop: EventLoop, logger: Logger) {
        self.pool = pool
        self.loop = loop
        self.logger = logger
        interval = plan.interval
        checkTimeout = plan.checkTimeout
        resolveInterval = plan.resolveInterval
    }

    func start(checks: Bool, names: Bool) throws(UVError) {
        if checks {
            let timer = try PostPollTimer(loop: loop)
            checkTimer = timer
            // The first round at once, so that an upstream down at start is found within
            // `fall` checks.
            timer.start(after: 0, repeat: interval) { [unowned self] in self.checkAll() }
        }
        if names {
            let timer = try Timer(loop: loop)
            resolveTimer = timer
            timer.start(after: resolveInterval, repeat: resolveInterval) { [unowned self] _ in self.resolve() }
        }
    }

    func stop() {
        checkTimer?.close()
        resolveTimer?.close()
        for probe in probes.values { probe.stream.close() }
        probes.removeAll()
        loop.stop()
    }

    // MARK: Checks

    /// Starts a check of every member not being checked, after failing those whose check has
    /// outlived its timeout. A member's probe and its stream are kept and reused (reopened)
    /// from check to check: checking allocates nothing once every member has its probe.
    func checkAll() {
        let now = loop.nowMilliseconds
        let version = pool.version.load(ordering: .acquiring)
        if version != prunedAt {
            prunedAt = version
            pruneProbes()
        }
        for member in pool.current {
            let key = ObjectIdentifier(member)
            let probe: Probe
            if let existing = probes[key] {
                probe = existing
            } else {
                do {
                    probe = Probe(monitor: self, member: member, stream: try TCPStream(loop: loop))
                } catch {
                    logger.warning("health check of \(member.address) not started: \(error)")
                    continue
                }
                probes[key] = probe
            }
            if probe.inFlight {
                if now &- probe.startedAt >= checkTimeout { probe.finish(passed: false, now: now) }
                continue  // its next check starts at the next round, once it has closed
            }
            guard probe.closed else { continue }  // still closing from the last check
            probe.begin(now: now)
        }
    }

    /// Probes of members that left (a resolution or a reload) go, closed; new members get
    /// theirs at the next round.
    func pruneProbes() {
        let current = Set(pool.current.map(ObjectIdentifier.init))
        for (key, probe) in probes where !current.contains(key) {
            probe.abandon()  // not a failed check: the member is no longer configured
            probes[key] = nil
        }
    }

    // MARK: Resolution

    func resolve() {
        let previous = pool.currentEntries
        let (next, failures) = UpstreamSpec.resolveAgain(previous)
        for failure in failures {
            pool.resolveFailures.add(1, ordering: .relaxed)
            logger.warning("resolving upstream \(failure.address) failed, keeping its last addresses: \(failure.reason)")
        }
        let failed = !failures.isEmpty
        if pool.resolved(next, from: previous) {
            pruneProbes()
            logger.notice("upstreams now: \(pool.current.map { "\($0.address)" }.joined(separator: ", "))\(failed ? " (some lookups failed)" : "")")
        }
    }
}

/// One member's checks: a connect, then a close; the stream is reopened for the next check. For
/// a member whose connections start with a PROXY header, a check sends a LOCAL (v2) or UNKNOWN
/// (v1) header before it closes, as haproxy's `check-send-proxy` does: a backend that requires
/// the header would otherwise count every check as a broken connection.
private final class Probe: TCPStreamDelegate {
    unowned let monitor: MonitorState
    let member: UpstreamMember
    let stream: TCPStream
    /// A connect is under way (since `startedAt`).
    var inFlight = false
    var startedAt: UInt64 = 0
    /// The stream's close callback has run: it may be reopened.
    var closed = false
    /// The stream has been opened once (a new stream is open already).
    private var used = false
    /// The LOCAL header, written once at creation (empty when the member takes none).
    private let header: UnsafeMutableRawBufferPointer
    private let headerLength: Int

    init(monitor: MonitorState, member: UpstreamMember, stream: TCPStream) {
        self.monitor = monitor
        self.member = member
        self.stream = stream
        if member.proxyProtocol == .off {
            header = UnsafeMutableRawBufferPointer(start: nil, count: 0)
            headerLength = 0
        } else {
            header = .allocate(byteCount: ProxyHeader.maximumEncodedLength, alignment: 8)
            headerLength = ProxyHeader.encodeLocal(member.proxyProtocol == .v1 ? .v1 : .v2, into: header)
        }
        closed = true
        super.init()
        stream.delegate = self
    }

    deinit {
        // Safe: the probe's own memory. A probe goes only after its stream has closed: the
        // stream holds its delegate (this probe) strongly until its close callback, by which
        // time libuv has finished or cancelled any write from this memory.
        header.deallocate()
    }

    func begin(now: UInt64) {
        do {
            if used { try stream.reopen() }
            used = true
            closed = false
            stream.delegate = self
            inFlight = true
            startedAt = now
            try stream.connect(to: member.address)
        } catch {
            finish(passed: false, now: now)
        }
    }

    /// Its member left the pool: the check under way is dropped, not counted.
    func abandon() {
        inFlight = false
        if !closed { stream.close() }
    }

    func finish(passed: Bool, now: UInt64) {
        guard inFlight else { return }
        inFlight = false
        monitor.pool.checked(member, passed: passed, now: now)
        if !closed { stream.close() }
    }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: nil, count: 0)  // a check reads nothing
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {}

    override func stream(_ stream: TCPStream, didConnect status: Int32) {
        // A connect cancelled by the close of a timed-out check comes here too: not in flight.
        if status == 0 && headerLength > 0 && inFlight {
            // Into a new connection's empty send buffer: all of it goes at once (a rest that
            // did not is cancelled by the close below).
            _ = try? stream.write(unsafeBytes: UnsafeRawBufferPointer(rebasing: header[..<headerLength]), token: 0)
        }
        finish(passed: status == 0, now: monitor.loop.nowMilliseconds)
    }

    override func streamDidClose(_ stream: TCPStream) {
        closed = true  // TCPStream has dropped its delegate; begin() sets it again
    }
}
