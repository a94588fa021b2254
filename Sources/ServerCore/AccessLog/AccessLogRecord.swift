import UVLoop

/// Where the access log goes: nowhere (the default), standard error, or a file (appended to,
/// reopened on SIGUSR1 for logrotate).
public enum AccessLogTarget: Sendable, Hashable, CustomStringConvertible {
    case off
    case stderr
    case file(String)

    /// `off`, `stderr` or the path: what `--access-log` takes.
    public var description: String {
        switch self {
        case .off: "off"
        case .stderr: "stderr"
        case .file(let path): path
        }
    }
}

/// How each access log line is written: `key=value` pairs (logfmt) or one JSON object.
public enum AccessLogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// One connection as the access log reports it: a fixed-size value of numbers and raw address
/// bytes (no String, no reference), which the worker copies into its ring when the connection
/// ends and the writer thread turns into a line. Field names follow haproxy's tcplog and
/// Envoy's TCP access log (docs/OPERATIONS.md#access-log).
struct AccessLogRecord {
    /// When the connection was accepted: wall clock, milliseconds since the Unix epoch.
    var startMilliseconds: Int64 = 0
    /// From the accept to the end (both sides closed), in milliseconds.
    var durationMilliseconds: UInt64 = 0
    /// Relay: from the accept to the upstream's connect, retries included; -1 if none connected.
    var connectMilliseconds: Int64 = -1
    /// Bytes read from the client (client → server) and written to it (server → client).
    var bytesReceived: UInt64 = 0
    var bytesSent: UInt64 = 0
    /// Relay: bytes written to the upstream and read from it.
    var upstreamBytesSent: UInt64 = 0
    var upstreamBytesReceived: UInt64 = 0
    var client = RawSocketAddress()
    /// Relay: the upstream used last (the one connected, or the last one tried).
    var upstream = RawSocketAddress()
    var worker: UInt16 = 0
    /// Relay: upstreams tried (1 when the first connect succeeded).
    var tries: UInt8 = 0
    var relay = false
    var reason = SessionEndReason.unknown
    var causes = SessionEndReasons()
}
