/// The limits that keep the stats port from being used to exhaust the server.
public struct StatsLimits: Sendable {
    /// Stats connections open at once. At the limit, a new connection takes the place of the
    /// longest-idle one (no request bytes since its last answer, nothing left to write); when
    /// every connection has a request in progress, the new one is closed at once.
    public var maxConnections = 64
    /// Bytes of request line and headers.
    public var maxHeaderBytes = 8192
    /// Bytes of the request target.
    public var maxURLBytes = 2048
    /// Requests served on one connection before it is closed (keep-alive).
    public var maxRequestsPerConnection = 1000
    /// Seconds a connection may sit between requests, and a request may take to arrive whole.
    public var idleTimeout: Double = 10
    public init() {}
}
