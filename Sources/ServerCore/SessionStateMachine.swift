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
///
/// The files: this one holds the state and the start; `+Events` the socket events (the data
/// path, buffers, the ends of streams); `+Timeouts` the periodic check; `+Resets` the ends the worker
/// imposes (drain cut, stop, eviction); `+Transitions` the steps they share (fail, linger,
/// close, reset, and bringing reading in line with the state).
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

        // The one-byte fields first and together: stored properties are laid out in the order
        // they are declared, so a flag between two words costs a word (an idle connection's
        // memory; see Session's fields).
        var input: Input = .waiting
        var output: Output = .open
        var socket: Socket = .absent
        /// What the driver was last told: uv_read_start in effect.
        var reading = false
        /// A read found no buffer; waiting in the worker's queue.
        var waitingForBuffer = false
        /// A read was refused a buffer because the pools are down to their reserve and this
        /// session already holds some: reading waits until one of its own writes completes.
        var heldBack = false
        /// Backpressure, as the source side holds it: this side stopped reading because the
        /// write queue of its target (the side its bytes are written to: itself in echo mode,
        /// the other side in a relay) reached its share; this is that queue's length then, and
        /// 0 while this side is not paused. Set by `writeQueued(to:)` on the target's queue;
        /// reading resumes when that queue is below both it and the low watermark.
        var targetQueueAtPause = 0
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

    // The state. Written only by the machine itself (the SessionStateMachine*.swift files;
    // internal setters only because those are extensions in other files): the driver reads it,
    // and changes it only through the events.
    //
    // Declared in this order so the small fields share words (stored properties are laid out in
    // declaration order; a session keeps its machine for as long as the connection is idle).
    var phase: Phase
    let mode: Mode
    /// The session was cut (reset at the drain deadline).
    var wasCut = false
    /// Relay: every upstream connect failed (or none was left to try): the client got no upstream.
    var gaveUpConnecting = false
    /// Why the session ended, and every cause it met (`noteEnd`, SessionStateMachine+EndReason.swift).
    var endReason = SessionEndReason.unknown
    var endCauses: SessionEndReasons = []
    var client = SideState()
    var upstream = SideState()
    /// When a byte was last read, or a queued write last completed.
    var lastActivity: UInt64
    /// Relay: further upstream connects allowed after a failed one (`--connect-retries`).
    var connectRetriesLeft = 0
    /// When the session began (the accept) and, in a relay, when its upstream connected (nil:
    /// never), in the loop's milliseconds: the access log's duration and connect time.
    let startedAt: UInt64
    var connectedAt: UInt64?

    /// A session for a connection accepted at `now`: echo is open at once; relay connects
    /// its upstream first, and may try `connectRetries` more upstreams if that fails.
    init(mode: Mode, now: UInt64, connectRetries: Int = 0) {
        self.mode = mode
        connectRetriesLeft = connectRetries
        lastActivity = now
        startedAt = now
        client.socket = .open
        if mode == .relay {
            upstream.socket = .open
            phase = .connecting(since: now)
        } else {
            phase = .open
            client.input = .open
        }
    }

    // MARK: Sides

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
    var lastSide: SessionSide { mode == .echo ? .client : .upstream }

    /// Whether `predicate` holds for every side this session has.
    func allSides(_ predicate: (SideState) -> Bool) -> Bool {
        predicate(client) && (mode == .echo || predicate(upstream))
    }

    // MARK: Starting

    /// The session's first action: echo starts reading; relay waits for the upstream.
    mutating func start() -> SessionAction {
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    mutating func upstreamConnected(now: UInt64) -> SessionAction {
        guard case .connecting = phase else { return .none }  // cut or stopped meanwhile
        phase = .open
        lastActivity = now
        connectedAt = now
        client.input = .open
        upstream.input = .open
        var action = SessionAction(ready: .upstream)
        reconcileReading(&action)
        return action
    }

    /// The upstream refused, failed or did not accept in time. With a retry left, the session
    /// keeps connecting (its deadline starts again) and the driver connects to another
    /// upstream; the client's bytes stay unread in its socket meanwhile, so none is lost.
    /// Otherwise the client gets a clean end (a FIN, its input drained), never a reset.
    mutating func upstreamConnectFailed(now: UInt64) -> SessionAction {
        guard case .connecting = phase else { return .none }
        if connectRetriesLeft > 0 {
            connectRetriesLeft -= 1
            phase = .connecting(since: now)
            return SessionAction(count: .upstreamConnectFailure, retryConnect: true)
        }
        var action = upstreamConnectGaveUp(now: now)
        action.count = .upstreamConnectFailure
        return action
    }

    /// No upstream is left to try: the client gets a clean end (counted by the failure that
    /// led here).
    mutating func upstreamConnectGaveUp(now: UInt64) -> SessionAction {
        guard case .connecting = phase else { return .none }
        connectRetriesLeft = 0
        gaveUpConnecting = true
        noteEnd(.noUpstream)
        var action = SessionAction()
        closeSocket(.upstream, &action)
        linger(.client, now: now, &action)
        reconcileReading(&action)
        return action
    }
}
