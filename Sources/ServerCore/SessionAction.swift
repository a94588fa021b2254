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
    /// The connection on these sides just became usable: set its socket options (TCP_NODELAY,
    /// keepalive). Only an upstream: an accepted client inherits them from the listener.
    var ready: SessionSides = []
    var count: SessionCount? = nil
    /// The upstream connect failed and a retry is allowed: connect to another upstream (the
    /// driver gives up with `upstreamConnectGaveUp` when there is none).
    var retryConnect = false
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
        if retryConnect { parts.append("retryConnect") }
        if ended { parts.append("ended") }
        return "SessionAction(\(parts.joined(separator: ", ")))"
    }
}
