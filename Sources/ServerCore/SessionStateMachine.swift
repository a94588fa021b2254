/// One side of a session: the client connection, or the relay's upstream connection.
enum SessionSide: Int, Sendable, CaseIterable, CustomStringConvertible {
    case client = 0
    case upstream = 1

    var other: SessionSide { self == .client ? .upstream : .client }
    var description: String { self == .client ? "client" : "upstream" }
}

/// A set of sides, for actions that apply to one, both or neither.
struct SessionSides: OptionSet, Sendable, Hashable, CustomStringConvertible {
    let rawValue: UInt8
    static let client = SessionSides(rawValue: 1)
    static let upstream = SessionSides(rawValue: 2)
    static let both: SessionSides = [.client, .upstream]

    init(rawValue: UInt8) { self.rawValue = rawValue }
    init(_ side: SessionSide) { rawValue = side == .client ? 1 : 2 }

    func contains(_ side: SessionSide) -> Bool { contains(SessionSides(side)) }

    var description: String {
        switch self {
        case []: return "[]"
        case .client: return "[client]"
        case .upstream: return "[upstream]"
        default: return "[client, upstream]"
        }
    }
}

/// What the driver counts for an event (at most one per event).
enum SessionCount: Sendable, Equatable {
    /// A client connection failed mid-stream (reset, broken pipe, keepalive timeout, ...).
    case clientFailure
    /// An upstream connection failed mid-stream.
    case upstreamFailure
    /// The upstream refused, failed or did not accept within the connect timeout.
    case upstreamConnectFailure
    /// A write queue reached its share and its source stopped reading.
    case backpressurePause
    /// A write queued to a side made no progress for the write timeout: that side was reset.
    case writeTimeout
    /// A lingering close ran out of time.
    case lingerTimeout
    /// Nothing moved for the idle timeout.
    case idleTimeout
    /// The drain deadline passed with the session still open: both sides were reset.
    case drainCut
    /// The pools ran out while a connection holding no buffer needed one: the worker's
    /// longest-stalled connection was reset to free its buffers.
    case stalledEviction
}

/// What the driver does after an event, in this order: stop reading, start reading, join the
/// buffer queue, shut down, reset, close; then count; then, if `ended`, recycle the session.
struct SessionAction: Sendable, Equatable, CustomStringConvertible {
    /// uv_read_start.
    var startReading: SessionSides = []
    /// uv_read_stop.
    var stopReading: SessionSides = []
    /// Wait in the worker's first-come, first-served queue until a buffer is free.
    var waitForBuffer: SessionSides = []
    /// uv_shutdown: a FIN once everything queued to that side is written.
    var shutdown: SessionSides = []
    /// uv_close.
    var close: SessionSides = []
    /// SO_LINGER 0, then uv_close: the peer sees a reset, never a clean end of stream.
    var reset: SessionSides = []
    /// The connection on these sides just became usable (TCP_NODELAY).
    var ready: SessionSides = []
    var count: SessionCount? = nil
    /// Both sockets have closed: the session is over.
    var ended = false

    static let none = SessionAction()

    var description: String {
        var parts: [String] = []
        if !startReading.isEmpty { parts.append("startReading: \(startReading)") }
        if !stopReading.isEmpty { parts.append("stopReading: \(stopReading)") }
        if !waitForBuffer.isEmpty { parts.append("waitForBuffer: \(waitForBuffer)") }
        if !shutdown.isEmpty { parts.append("shutdown: \(shutdown)") }
        if !close.isEmpty { parts.append("close: \(close)") }
        if !reset.isEmpty { parts.append("reset: \(reset)") }
        if !ready.isEmpty { parts.append("ready: \(ready)") }
        if let count { parts.append("count: \(count)") }
        if ended { parts.append("ended") }
        return "SessionAction(\(parts.joined(separator: ", ")))"
    }
}

/// The limits a periodic check applies (milliseconds; 0: none).
struct SessionTimeouts: Sendable, Equatable {
    var idle: UInt64 = 0
    var connect: UInt64 = 0
    var write: UInt64 = 0
    var linger: UInt64 = 0
}

/// The decisions of one session, a client connection and in relay mode its upstream
/// connection, made without a socket: each event returns the `SessionAction` that the driver
/// (`Session`, which holds the libuv streams) performs. SwiftNIO and AsyncHTTPClient write
/// their connection state machines this way; it lets every transition be tested with no
/// socket at all (Tests/ServerTests/SessionStateMachineTests.swift).
///
/// The data path: a read on one side is forwarded to its target (echo: the same side; relay:
/// the other side). A write the socket did not take at once is queued; when a queue reaches the
/// share the driver passes (the high watermark, shrinking as the buffer pools fill), its source
/// stops reading until the queue is back at or under the low watermark. An end of stream on one
/// side becomes a FIN on its target once what is queued there is written; a socket closes when
/// both of its directions are done.
///
/// Failures: a side that fails (reset, write error, write stall) is closed or reset; the other
/// side gets what it was owed, then a FIN, and its input is read and dropped until it closes
/// (a lingering close, so that closing cannot reset data still in flight), at most until the
/// linger timeout. A cut (the drain deadline) resets both sides.
struct SessionStateMachine: Sendable {
    enum Mode: Sendable { case echo, relay }

    enum Phase: Sendable, Equatable {
        /// Relay: the upstream connect is under way; the client is not read yet.
        case connecting(since: UInt64)
        /// Bytes flow.
        case open
        /// A side failed or never connected: the survivor is flushed, shut down and drained of
        /// input until it closes or the linger deadline passes.
        case lingering(since: UInt64)
        /// Every socket is closing (idle timeout, cut, stop, or a normal end on all sides).
        case closing
        /// Every socket has closed.
        case ended
    }

    /// One socket's state.
    struct SideState: Sendable, Equatable {
        enum Input: Sendable, Equatable {
            /// Not read yet (relay: the upstream is not connected).
            case waiting
            /// Read and forwarded.
            case open
            /// Read and dropped, until the peer's end of stream (a lingering close).
            case discarding
            /// End of stream, error or closed: never read again.
            case ended
        }
        enum Output: Sendable, Equatable { case open, shuttingDown, shut }
        enum Socket: Sendable, Equatable { case absent, open, closing, closed }

        var input: Input = .waiting
        var output: Output = .open
        var socket: Socket = .absent
        /// What the driver was last told: uv_read_start in effect.
        var reading = false
        /// Backpressure, as the source side holds it: this side stopped reading because the
        /// write queue of its target (the side its bytes are written to: itself in echo mode,
        /// the other side in a relay) reached its share; this is that queue's length then, and
        /// 0 while this side is not paused. Set by `writeQueued(to:)` on the target's queue;
        /// reading resumes when that queue is below both it and the low watermark.
        var targetQueueAtPause = 0
        /// A read found no buffer; waiting in the worker's queue.
        var waitingForBuffer = false
        /// A read was refused a buffer because the pools are down to their reserve and this
        /// session already holds some: reading waits until one of its own writes completes.
        var heldBack = false
        /// Buffers queued for writing to this side.
        var queued = 0
        /// When this side's write queue last made progress (queued from empty, or written).
        var progressAt: UInt64 = 0
        /// Queued bytes seen by the last periodic check (progress inside one large buffer).
        var queuedBytesSeen = 0

        var isOpen: Bool { socket == .open }
        /// Reading is stopped for backpressure (see `targetQueueAtPause`).
        var pausedForTarget: Bool { targetQueueAtPause != 0 }
    }

    let mode: Mode
    private(set) var phase: Phase
    private(set) var client = SideState()
    private(set) var upstream = SideState()
    /// When a byte was last read, or a queued write last completed.
    private(set) var lastActivity: UInt64
    /// The session was cut (reset at the drain deadline).
    private(set) var wasCut = false

    /// A session for a connection accepted at `now`: echo is open at once; relay connects
    /// its upstream first.
    init(mode: Mode, now: UInt64) {
        self.mode = mode
        lastActivity = now
        client.socket = .open
        if mode == .relay {
            upstream.socket = .open
            phase = .connecting(since: now)
        } else {
            phase = .open
            client.input = .open
        }
    }

    subscript(side: SessionSide) -> SideState {
        get { side == .client ? client : upstream }
        set { if side == .client { client = newValue } else { upstream = newValue } }
    }

    /// Where bytes read on `side` go.
    @inline(__always)
    func target(of side: SessionSide) -> SessionSide { mode == .echo ? .client : side.other }

    /// Whose bytes are written to `side`.
    @inline(__always)
    func source(of side: SessionSide) -> SessionSide { mode == .echo ? .client : side.other }

    /// The sides this session has (no array: this runs per queued write).
    @inline(__always)
    private var lastSide: SessionSide { mode == .echo ? .client : .upstream }

    private func allSides(_ predicate: (SideState) -> Bool) -> Bool {
        predicate(client) && (mode == .echo || predicate(upstream))
    }

    // MARK: Starting

    /// The session's first action: echo starts reading; relay waits for the upstream.
    mutating func start() -> SessionAction {
        var action = SessionAction()
        if phase == .open { action.ready = .client }
        reconcileReading(&action)
        return action
    }

    mutating func upstreamConnected(now: UInt64) -> SessionAction {
        guard case .connecting = phase else { return .none }  // cut or stopped meanwhile
        phase = .open
        lastActivity = now
        client.input = .open
        upstream.input = .open
        var action = SessionAction(ready: .both)
        reconcileReading(&action)
        return action
    }

    /// The upstream refused, failed or did not accept in time: the client gets a clean end
    /// (a FIN, its input drained), never a reset.
    mutating func upstreamConnectFailed(now: UInt64) -> SessionAction {
        guard case .connecting = phase else { return .none }
        var action = SessionAction(count: .upstreamConnectFailure)
        closeSocket(.upstream, &action)
        linger(.client, now: now, &action)
        reconcileReading(&action)
        return action
    }

    // MARK: The data path

    /// Bytes arrived on `side`: where they go, or nil to drop them (a lingering side, or a
    /// target that has closed or shut down its output). The hot path: no action to apply.
    @inline(__always)
    mutating func bytesRead(from side: SessionSide, now: UInt64) -> SessionSide? {
        lastActivity = now
        guard self[side].input == .open else { return nil }
        let target = target(of: side)
        guard self[target].socket == .open, self[target].output == .open else { return nil }
        return target
    }

    /// A write to `side` was queued (the socket did not take it all at once). `share` is how
    /// many buffers that queue may hold before its source stops reading (at least 1).
    mutating func writeQueued(to side: SessionSide, share: Int, now: UInt64) -> SessionAction {
        if self[side].queued == 0 {
            self[side].progressAt = now
            self[side].queuedBytesSeen = 0
        }
        self[side].queued &+= 1
        let source = source(of: side)
        guard self[side].queued >= max(share, 1), !self[source].pausedForTarget, self[source].input == .open else { return .none }
        self[source].targetQueueAtPause = self[side].queued
        var action = SessionAction(count: .backpressurePause)
        reconcileReading(&action)
        return action
    }

    /// Buffers this session holds in its write queues (both directions).
    @inline(__always)
    var queuedBuffers: Int { client.queued &+ upstream.queued }

    /// A read on `side` was refused a buffer because the pools are down to their reserve and
    /// this session already holds some (the reserve is for connections that hold none, such
    /// as a new client): reading waits until one of the session's own writes completes. A
    /// session that holds none waits for a buffer instead.
    mutating func declinedBuffer(on side: SessionSide) -> SessionAction {
        guard queuedBuffers > 0 else { return outOfBuffers(on: side) }
        guard self[side].isOpen, self[side].input == .open || self[side].input == .discarding else { return .none }
        self[side].heldBack = true
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    /// A write queued to `side` finished, written (`cancelled` false) or cancelled by a close.
    /// `lowWatermark` is the queue length (in buffers) at or under which a paused source resumes.
    mutating func writeCompleted(to side: SessionSide, cancelled: Bool, lowWatermark: Int, now: UInt64) -> SessionAction {
        assert(self[side].queued > 0, "a queued write completed on \(side) with none queued")
        self[side].queued &-= 1
        if !cancelled {
            lastActivity = now  // a slow reader that is still taking bytes is not idle
            self[side].progressAt = now
            self[side].queuedBytesSeen = 0
        }
        // Progress of the session's own: what was held back for the reserve may try again.
        let heldBack = client.heldBack || upstream.heldBack
        client.heldBack = false
        upstream.heldBack = false
        let source = source(of: side)
        let queueAtPause = self[source].targetQueueAtPause
        if queueAtPause != 0, self[side].queued <= min(lowWatermark, queueAtPause - 1) {
            self[source].targetQueueAtPause = 0
        } else if !heldBack {
            return .none
        }
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    /// A write to `side` failed: a queued write's completion reported an error (`wasQueued`),
    /// or the write could not be started (nothing was queued). Counts as that side's failure.
    mutating func writeFailed(to side: SessionSide, wasQueued: Bool, now: UInt64) -> SessionAction {
        if wasQueued {
            assert(self[side].queued > 0, "a queued write completed on \(side) with none queued")
            self[side].queued &-= 1
        }
        return fail(side, now: now)
    }

    /// End of stream on `side`: nothing more to forward from it. Its target gets a FIN after
    /// what is queued to it.
    mutating func readEnded(on side: SessionSide) -> SessionAction {
        var action = SessionAction()
        guard self[side].isOpen else { return action }
        let wasDiscarding = self[side].input == .discarding
        self[side].input = .ended
        let target = target(of: side)
        if !wasDiscarding { shutdownOutput(target, &action) }
        closeIfDone(side, &action)
        closeIfDone(target, &action)
        reconcileReading(&action)
        return action
    }

    /// A read on `side` failed (reset, keepalive timeout, ...).
    mutating func readFailed(on side: SessionSide, now: UInt64) -> SessionAction {
        fail(side, now: now)
    }

    /// A read on `side` found every pool empty: stop reading and wait for a buffer.
    mutating func outOfBuffers(on side: SessionSide) -> SessionAction {
        guard self[side].isOpen, self[side].input == .open || self[side].input == .discarding else { return .none }
        var action = SessionAction()
        if !self[side].waitingForBuffer {
            self[side].waitingForBuffer = true
            action.waitForBuffer = SessionSides(side)
        }
        reconcileReading(&action)
        return action
    }

    /// A buffer may be free again for `side`'s reads.
    mutating func buffersAvailable(for side: SessionSide) -> SessionAction {
        guard self[side].waitingForBuffer else { return .none }
        self[side].waitingForBuffer = false
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    /// The FIN requested on `side` went out, or the shutdown failed (the peer had gone, say):
    /// then that side has failed, and in a relay the other side lingers.
    mutating func shutdownCompleted(on side: SessionSide, failed: Bool, now: UInt64) -> SessionAction {
        guard self[side].isOpen else { return .none }
        self[side].output = .shut
        if failed { return fail(side, now: now) }
        var action = SessionAction()
        closeIfDone(side, &action)
        reconcileReading(&action)
        return action
    }

    /// `side`'s socket has closed (its close callback ran).
    mutating func closed(_ side: SessionSide) -> SessionAction {
        self[side].socket = .closed
        self[side].reading = false
        self[side].waitingForBuffer = false
        var action = SessionAction()
        if allSides({ $0.socket == .closed }) {
            phase = .ended
            action.ended = true
        } else if side == .upstream, case .connecting = phase {
            // The upstream closed before it connected (stopped elsewhere): end the client cleanly.
            return upstreamConnectFailed(now: lastActivity)
        }
        return action
    }

    // MARK: Time

    /// The periodic check: connect, idle, write-stall and linger deadlines. `queuedBytes` gives
    /// the bytes still queued to a side (progress inside one large buffer counts as progress).
    mutating func tick(now: UInt64, timeouts: SessionTimeouts, queuedBytes: (SessionSide) -> Int) -> SessionAction {
        switch phase {
        case .connecting(let since):
            if timeouts.connect > 0 && now &- since >= timeouts.connect { return upstreamConnectFailed(now: now) }
            return .none
        case .lingering(let since):
            if timeouts.linger > 0 && now &- since >= timeouts.linger {
                var action = SessionAction(count: .lingerTimeout)
                for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { closeSocket(side, &action) }
                phase = .closing
                return action
            }
            return writeStallCheck(now: now, timeouts: timeouts, queuedBytes: queuedBytes)
        case .open:
            if timeouts.idle > 0 && now &- lastActivity >= timeouts.idle {
                var action = SessionAction(count: .idleTimeout)
                for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { closeSocket(side, &action) }
                phase = .closing
                return action
            }
            return writeStallCheck(now: now, timeouts: timeouts, queuedBytes: queuedBytes)
        case .closing, .ended:
            return .none
        }
    }

    private mutating func writeStallCheck(now: UInt64, timeouts: SessionTimeouts, queuedBytes: (SessionSide) -> Int) -> SessionAction {
        guard timeouts.write > 0 else { return .none }
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen && self[side].queued > 0 {
            let bytes = queuedBytes(side)
            if bytes != self[side].queuedBytesSeen {
                // Bytes left the queue since the last check (or this is the first check).
                if self[side].queuedBytesSeen != 0 && bytes < self[side].queuedBytesSeen { self[side].progressAt = now }
                self[side].queuedBytesSeen = bytes
            }
            if now &- self[side].progressAt >= timeouts.write {
                var action = failure(side, now: now, reset: true)
                action.count = .writeTimeout
                return action
            }
        }
        return .none
    }

    // MARK: Ending

    /// The drain deadline passed: reset both sides, so that neither end mistakes the cut for a
    /// complete stream.
    mutating func cut() -> SessionAction {
        var action = SessionAction()
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { resetSocket(side, &action) }
        guard !action.reset.isEmpty else { return .none }  // already closing by itself
        action.count = .drainCut
        wasCut = true
        phase = .closing
        return action
    }

    /// Reset every socket now (the server is stopping): a stop cuts streams, and a cut must
    /// never look like a clean end.
    mutating func stop() -> SessionAction {
        var action = SessionAction()
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { resetSocket(side, &action) }
        if !action.reset.isEmpty { phase = .closing }
        return action
    }

    /// Since when the longest-stalled of this session's write queues has made no progress, or
    /// nil when nothing is queued (or the session is closing).
    var stalledSince: UInt64? {
        var oldest: UInt64?
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen && self[side].queued > 0 {
            oldest = min(oldest ?? .max, self[side].progressAt)
        }
        return oldest
    }

    /// The pools ran out and this session's queue is the worker's longest-stalled: reset the
    /// stalled side so its buffers come back (the other side, in a relay, lingers).
    mutating func evict(now: UInt64) -> SessionAction {
        var stalled: SessionSide?
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen && self[side].queued > 0 {
            if stalled == nil || self[side].progressAt < self[stalled!].progressAt { stalled = side }
        }
        guard let stalled else { return .none }
        var action = failure(stalled, now: now, reset: true)
        action.count = .stalledEviction
        return action
    }

    // MARK: Internals

    private mutating func fail(_ side: SessionSide, now: UInt64) -> SessionAction {
        guard self[side].isOpen else { return .none }
        var action = failure(side, now: now, reset: false)
        action.count = side == .client ? .clientFailure : .upstreamFailure
        return action
    }

    /// `side` failed: close (or reset) it; the other side, if any, lingers.
    private mutating func failure(_ side: SessionSide, now: UInt64, reset: Bool) -> SessionAction {
        var action = SessionAction()
        if reset { resetSocket(side, &action) } else { closeSocket(side, &action) }
        if mode == .relay, self[side.other].isOpen {
            linger(side.other, now: now, &action)
        } else {
            phase = .closing
        }
        reconcileReading(&action)
        return action
    }

    /// The lingering close of `side`: forward nothing more, FIN after what is queued, read
    /// and drop until the peer closes.
    private mutating func linger(_ side: SessionSide, now: UInt64, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        phase = .lingering(since: now)
        self[side].targetQueueAtPause = 0
        if self[side].input != .ended { self[side].input = .discarding }
        shutdownOutput(side, &action)
        closeIfDone(side, &action)
    }

    private mutating func shutdownOutput(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen, self[side].output == .open else { return }
        self[side].output = .shuttingDown
        action.shutdown.insert(SessionSides(side))
    }

    /// Closes `side` when both of its directions are done.
    private mutating func closeIfDone(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen, self[side].input == .ended, self[side].output == .shut else { return }
        closeSocket(side, &action)
        if allSides({ !$0.isOpen }) { phase = .closing }
    }

    private mutating func closeSocket(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        endSocket(side)
        action.close.insert(SessionSides(side))
    }

    private mutating func resetSocket(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        endSocket(side)
        action.reset.insert(SessionSides(side))
    }

    private mutating func endSocket(_ side: SessionSide) {
        self[side].socket = .closing
        self[side].input = .ended
        self[side].reading = false  // libuv stops reading a closing handle by itself
        self[side].waitingForBuffer = false
        self[side].heldBack = false
        self[side].targetQueueAtPause = 0
    }

    /// Whether `side` should be read now.
    private func wantsReading(_ side: SessionSide) -> Bool {
        let state = self[side]
        guard state.isOpen, !state.waitingForBuffer, !state.heldBack else { return false }
        switch state.input {
        case .open: return !state.pausedForTarget
        case .discarding: return true
        case .waiting, .ended: return false
        }
    }

    /// Adds the start/stop of reading that brings each side in line with `wantsReading`.
    private mutating func reconcileReading(_ action: inout SessionAction) {
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue {
            let want = wantsReading(side)
            guard want != self[side].reading else { continue }
            self[side].reading = want
            if want {
                action.startReading.insert(SessionSides(side))
            } else if self[side].isOpen {
                action.stopReading.insert(SessionSides(side))
            }
        }
    }
}
