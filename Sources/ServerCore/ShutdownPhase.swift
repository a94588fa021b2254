import Synchronization

/// Where the server is on its way out. A phase only ever gives way to a later one (`<` is that
/// order): a stop is never weakened into a drain, and nothing goes back to serving.
///
/// `ServerShared.requestedPhase` is what `Server.drain()` and `Server.stop()` asked for (what
/// `ServerStatistics.shutdownPhase` reports); each worker enters it when its wake-up runs
/// (`Worker.shutdownPhase`).
///
/// Outside, both later phases read the same: `/readyz` answers 503, and `/metrics`'
/// `fastalloc_draining` and `/stats`' `"draining"` read 1 (true) in `draining` and `stopping`.
public enum ShutdownPhase: Int, Sendable, Hashable, Comparable, AtomicRepresentable, CustomStringConvertible {
    /// Listening; connections are accepted up to the limit.
    case serving = 0
    /// `drain()` (SIGTERM, SIGINT): no new connections; open ones flow both ways until they end,
    /// and what is left at the drain timeout is cut (reset on both sides).
    case draining = 1
    /// `stop()`: every connection is reset now; those of a drain under way count as cut. (The
    /// server process stops only when its stats endpoint cannot start; a second signal exits
    /// instead. `Server.init` stops the workers it started when a later one fails to.)
    case stopping = 2

    public static func < (lhs: ShutdownPhase, rhs: ShutdownPhase) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String {
        switch self {
        case .serving: return "serving"
        case .draining: return "draining"
        case .stopping: return "stopping"
        }
    }
}
