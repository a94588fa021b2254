/// Why a connection ended, as the access log reports it. The state machine records it from its
/// own decisions (`SessionStateMachine.noteEnd`); the worker adds the ends that come before a
/// session exists (a connection refused at accept).
public enum SessionEndReason: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Nothing recorded (should not happen; printed `unknown`).
    case unknown = 0
    /// The client's end of stream (a FIN): a clean end.
    case clientFIN
    /// The upstream's end of stream (a FIN): a clean end.
    case upstreamFIN
    /// The client connection failed: reset, broken pipe, a failed write or shutdown, keepalive.
    case clientReset
    /// The upstream connection failed mid-stream.
    case upstreamReset
    /// Nothing moved for `--idle-timeout`.
    case idleTimeout
    /// A queued write made no progress for `--write-timeout` (that side was reset).
    case writeTimeout
    /// A lingering close (after a failure) ran out of `--linger-timeout`.
    case lingerTimeout
    /// Cut (reset on both sides) at `--drain-timeout`.
    case drainCut
    /// Reset by a stop of the server.
    case stop
    /// Reset to free its buffers when the pools ran out (the longest-stalled queue).
    case stalledEviction
    /// Relay: every upstream connect failed (or none was left to try).
    case noUpstream
    /// Refused at accept by `--max-connections-per-client`.
    case clientLimit
    /// Refused at accept by `--max-connections`.
    case connectionLimit
    /// `--accept-proxy`: closed before its session for its PROXY header (none in time, a
    /// malformed one, an untrusted address; the metric has the reason).
    case proxyHeader

    /// The name the access log prints.
    public var description: String { String(describing: name) }

    /// The name as static bytes (the access log's writer prints it without allocating).
    public var name: StaticString {
        switch self {
        case .unknown: "unknown"
        case .clientFIN: "client_fin"
        case .upstreamFIN: "upstream_fin"
        case .clientReset: "client_reset"
        case .upstreamReset: "upstream_reset"
        case .idleTimeout: "idle_timeout"
        case .writeTimeout: "write_timeout"
        case .lingerTimeout: "linger_timeout"
        case .drainCut: "drain_cut"
        case .stop: "stop"
        case .stalledEviction: "stalled_eviction"
        case .noUpstream: "no_upstream"
        case .clientLimit: "client_limit"
        case .connectionLimit: "connection_limit"
        case .proxyHeader: "proxy_header"
        }
    }

    /// A clean end of stream: not terminal by itself (the other direction may go on, and a
    /// failure after it is the more telling reason).
    var isFIN: Bool { self == .clientFIN || self == .upstreamFIN }
}

/// A set of end reasons: every cause a session met, not only the one reported as its reason.
public struct SessionEndReasons: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ reason: SessionEndReason) { rawValue = 1 << UInt16(reason.rawValue) }

    public func contains(_ reason: SessionEndReason) -> Bool { contains(SessionEndReasons(reason)) }
}

extension SessionStateMachine {
    /// Records a cause of the session's end. The reason is the first terminal cause (a failure,
    /// a timeout, a cut, a stop, an eviction, no upstream); a FIN is the reason only while no
    /// terminal cause has come (the first FIN then: a clean end). Every cause also goes into
    /// `endCauses`. Called from the transitions that decide an end, never per message.
    mutating func noteEnd(_ reason: SessionEndReason) {
        endCauses.insert(SessionEndReasons(reason))
        if endReason == .unknown || (endReason.isFIN && !reason.isFIN) { endReason = reason }
    }
}
