import ProxyProtocol
import UVLoop

/// A client connection and, in relay mode, its upstream connection (each a
/// `SessionConnection`), owned by one worker: the libuv driver of a `SessionStateMachine`.
///
/// Sessions are reused: when one ends, the worker keeps it (and its closed streams) for a later
/// connection, so that accepting allocates nothing once the worker has seen its peak.
final class Session {
    /// Strong, and a `let`: the data path reads `session.worker` per message, and a `let` of a
    /// live object costs no retain there (an `unowned(unsafe)` one cost a retain and a release
    /// per read). The cycle with the worker's session lists is broken when the worker's loop
    /// ends (`Worker.releaseSessions()`).
    let worker: Worker
    private(set) var client: SessionConnection!
    /// Kept across reuses (relay mode).
    private(set) var upstream: SessionConnection?
    // The fields below are declared words first, then the machine, then the flags, so that
    // few bytes go to padding: stored properties are laid out in the order they are declared,
    // and every idle connection holds a session (Benchmarks/ANALYSES.md, "Idle memory").
    /// Relay: the upstream this session is connected or connecting to (counted in its active
    /// connections until the session ends or moves on), and every upstream it tried, so that a
    /// retry picks another. Kept with the session: no allocation per connection.
    @exclusivity(unchecked) var member: UpstreamMember?
    @exclusivity(unchecked) var tried: [ObjectIdentifier] = []
    /// When the current upstream connect began (`EventLoop.hrtime()`, ns).
    var connectStartedAt: UInt64 = 0
    /// Index in the worker's session list (for O(1) removal). This and the other per-connection
    /// fields marked so: unchecked exclusivity, for the reason given at `Worker.sessions`.
    @exclusivity(unchecked) var slot = 0
    /// What this session took from the settings in effect when it was accepted, and keeps
    /// whatever a reload changes later: its deadlines and its balancing method (a retry picks
    /// with the same one). Plain values in the reused session: nothing allocated.
    var timeouts = SessionTimeouts()
    /// Where the PROXY header for the upstream is written (`ProxyHeader.maximumEncodedLength`
    /// bytes): made on first use, kept with the session (no allocation per connection, no pool
    /// buffer to wait for), freed with it.
    private var headerArea: UnsafeMutableRawPointer?
    /// The client's address, accept time and per-client count, for the access log,
    /// `--max-connections-per-client` (Worker+AccessLog.swift) and the `hash` balancer.
    @exclusivity(unchecked) var peer = SessionPeer()
    /// The decisions. Replaced for every connection. Unchecked exclusivity: only this worker's
    /// thread touches it, and no access to it overlaps another (each event is one call, and
    /// `perform` runs after it returns), so the dynamic checks would only cost time per message.
    @exclusivity(unchecked) var machine: SessionStateMachine
    /// The session was open when the worker began to drain (for the drain's count).
    @exclusivity(unchecked) var inDrain = false
    var balance = BalanceMethod.random

    /// The `hash` balancer's key: the client's IP address, hashed (0 for the other methods,
    /// which do not read it). Made when an upstream is picked, not kept: a word less per session.
    var clientKey: UInt64 { balance == .hash ? peer.address.hostHash : 0 }

    init(worker: Worker) {
        self.worker = worker
        machine = SessionStateMachine(mode: .echo, now: 0)
        client = SessionConnection(session: self, side: .client)
        // Room for every try a session can make (the first connect and `connectRetries` more),
        // made once per session object (sessions are reused): none in echo mode, 3 words by
        // default in a relay. Reserving for the most retries the option allows (17 words) cost
        // every idle connection about 200 bytes, echo included. A reload that raises
        // --connect-retries makes a reused session grow it once, on its first retry past this.
        if worker.config.mode == .relay { tried.reserveCapacity(worker.config.connectRetries + 1) }
    }

    deinit {
        // Safe: the area is this session's own; a write from it is never pending when a session
        // goes (the worker keeps sessions until every stream of its loop has closed).
        headerArea?.deallocate()
    }

    /// Drops the session's connections (each holds the session strongly): once the worker's
    /// loop has ended, so that the objects can go.
    func dissolve() {
        client = nil
        upstream = nil
    }

    /// Runs `body` with the connection on `side`, unretained: the relay's data path, where a
    /// retain and a release of the other side's connection cost time on every message.
    /// Sound because the session holds both connections strongly from when they are made until
    /// its worker's loop has ended (`dissolve`), and this runs inside the loop.
    @inline(__always)
    func withConnection<R>(_ side: SessionSide, _ body: (SessionConnection) -> R) -> R {
        Unmanaged.passUnretained(connection(side))._withUnsafeGuaranteedRef(body)
    }

    @inline(__always)
    func connection(_ side: SessionSide) -> SessionConnection {
        side == .client ? client.unsafelyUnwrapped : upstream.unsafelyUnwrapped
    }

    var hasUpstream: Bool { machine.mode == .relay }

    /// Starts the session for a new connection (and, in relay mode, its upstream connection,
    /// whose connect is already under way).
    func open(clientStream: TCPStream, upstreamStream: TCPStream?) {
        let now = worker.loop.nowMilliseconds
        machine = SessionStateMachine(mode: upstreamStream == nil ? .echo : .relay, now: now,
                                      connectRetries: worker.config.connectRetries)
        timeouts = worker.timeouts
        balance = worker.config.balance
        inDrain = false
        client.attach(clientStream)
        if let upstreamStream {
            let upstream = self.upstream ?? SessionConnection(session: self, side: .upstream)
            self.upstream = upstream
            upstream.attach(upstreamStream)
        }
        perform(machine.start())
    }

    func upstreamDidConnect(status: Int32) {
        let now = worker.loop.nowMilliseconds
        if status < 0 {
            if status != UVError.cancelled, let member {
                let error = UVError(status, "connect to upstream \(member.address)")
                worker.shared.upstreams?.connectFailed(member, UpstreamFailure(error), now: now)
                log(error)
            }
            perform(machine.upstreamConnectFailed(now: now))
        } else {
            if let member { worker.shared.upstreams?.connected(member, nanoseconds: EventLoop.hrtime() &- connectStartedAt) }
            perform(machine.upstreamConnected(now: now))
            // Reading was started with the connect (`Worker.connectUpstream`). The machine reads
            // a fresh upstream from its connect on (nothing is queued to the client yet, and no
            // read has been refused a buffer); should that ever change, reading stops here,
            // before any read.
            if let upstream, machine[.upstream].isOpen, !machine[.upstream].reading { upstream.stream.stopReading() }
            // The header goes before any of the client's bytes: reading starts at the next loop
            // turn, and libuv writes a stream's queue in order.
            if machine.phase == .open, let member, member.proxyProtocol != .off { sendProxyHeader(member.proxyProtocol) }
        }
    }

    /// Writes the PROXY header (`version`) to the upstream, in one write: the client's address
    /// and port, and the address it connected to.
    private func sendProxyHeader(_ setting: ProxyProtocolSetting) {
        guard let upstream else { return }
        let start = headerArea ?? .allocate(byteCount: ProxyHeader.maximumEncodedLength, alignment: 8)
        headerArea = start
        // Safe: `start` holds maximumEncodedLength bytes, this session's own until its deinit.
        let area = UnsafeMutableRawBufferPointer(start: start, count: ProxyHeader.maximumEncodedLength)
        let version: ProxyProtocolVersion = setting == .v1 ? .v1 : .v2
        let count = ProxyHeader.encode(version, source: peer.address, destination: peer.local, into: area)
        // Safe: the area is the session's and is not written again before this connection ends
        // (one header per upstream connection; a retry's new connection has not connected yet).
        if upstream.sendHeader(UnsafeRawBufferPointer(rebasing: area[..<count])) {
            WorkerCounters.add(worker.counters.proxyHeadersSent)
        }
    }

    /// The upstream connect timed out (the sweep found the deadline passed).
    func upstreamConnectTimedOut(_ action: SessionAction) {
        if let member {
            worker.shared.upstreams?.connectFailed(member, .timeout, now: worker.loop.nowMilliseconds)
            worker.logUpstreamFailure(UVError.timedOut("connect to upstream \(member.address)"))
        }
        perform(action)
    }

    /// Takes `member` as this session's upstream (counted in its active connections).
    func use(_ member: UpstreamMember) {
        self.member?.active.subtract(1, ordering: .relaxed)
        member.active.add(1, ordering: .relaxed)
        self.member = member
        tried.append(ObjectIdentifier(member))
        connectStartedAt = EventLoop.hrtime()
    }

    /// The session has ended: its upstream has one connection fewer.
    func releaseUpstream() {
        member?.active.subtract(1, ordering: .relaxed)
        member = nil
        tried.removeAll(keepingCapacity: true)
    }

    /// Swaps the upstream connection's stream for `stream` (a retry): the old one is closed
    /// apart from the session (its close callback hands it back to the worker).
    func replaceUpstreamStream(with stream: TCPStream) {
        upstream?.attach(stream)
    }

    /// Performs what the state machine decided.
    func perform(_ action: SessionAction) {
        if action == .none { return }
        // Counted first: a close below may reach the peer before this function returns.
        if let count = action.count { worker.count(count) }
        if action.retryConnect {
            worker.retryUpstream(self)
            return  // nothing else in a retry's action; a give-up is performed by retryUpstream
        }
        if !action.stopReading.isEmpty {
            if action.stopReading.contains(.client) { client.stream.stopReading() }
            if action.stopReading.contains(.upstream) { upstream?.stream.stopReading() }
        }
        if action.ready.contains(.upstream), let upstream { worker.connectionReady(upstream.stream, idleTimeout: timeouts.idle) }
        if !action.startReading.isEmpty {
            for side in SessionSide.allCases where action.startReading.contains(side) {
                do {
                    try connection(side).stream.startReading()
                } catch {
                    log(error)
                    perform(machine.readFailed(on: side, now: worker.loop.nowMilliseconds))
                }
            }
        }
        if !action.waitForBuffer.isEmpty {
            for side in SessionSide.allCases where action.waitForBuffer.contains(side) { worker.waitForBuffer(connection(side)) }
        }
        if !action.shutdown.isEmpty {
            for side in SessionSide.allCases where action.shutdown.contains(side) {
                do {
                    // With nothing queued to it, the FIN goes now (no libuv request, no callback).
                    // Only when no write of ours is outstanding either: libuv's queue is empty
                    // before a finished write's callback has run, and that callback comes first.
                    let stream: TCPStream = connection(side).stream
                    if machine[side].queued == 0, try stream.shutdownIfNothingQueued() {
                        perform(machine.shutdownCompleted(on: side, failed: false, now: worker.loop.nowMilliseconds))
                    } else {
                        try stream.shutdown()
                    }
                } catch {
                    perform(machine.shutdownCompleted(on: side, failed: true, now: worker.loop.nowMilliseconds))
                }
            }
        }
        if !action.reset.isEmpty {
            for side in SessionSide.allCases where action.reset.contains(side) { connection(side).stream.reset() }
        }
        if !action.close.isEmpty {
            for side in SessionSide.allCases where action.close.contains(side) { connection(side).stream.close() }
        }
        if action.ended { worker.sessionDidEnd(self) }
    }

    /// Logs a side's failure: upstream failures at warning (rate-limited by the worker);
    /// client failures are the clients' business and only counted.
    func log(_ error: UVError) {
        if error.operation.contains("upstream") { worker.logUpstreamFailure(error) }
    }
}
