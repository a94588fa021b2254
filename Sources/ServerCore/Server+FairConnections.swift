import Logging
import PacketBuffers

/// Fairness between connections and the buffer pools: how many clients that stop reading the
/// pools can hold without delaying a new client (see `Worker+Buffers.swift` for the reserve).
extension Server {
    /// How many connections that each hold one buffer (what a client that stops reading holds
    /// once the pools run low) fit in the pools and leave every worker its reserve for new
    /// connections. Up to this many, no client that stops reading delays a new one.
    public static func fairConnections(_ buffers: PacketBufferConfig, workers: Int) -> Int {
        let total = workers * buffers.localBuffers + buffers.overflowMax
        return max(0, total - Worker.reserve(reachable: buffers.localBuffers + buffers.overflowMax))
    }

    /// Warns when `connectionLimit` is more than `fairConnections`: beyond that many clients that
    /// stop reading, new clients wait for a buffer until --write-timeout resets the stalled ones.
    static func warnIfUnfair(connectionLimit: Int, config: ServerConfig, logger: Logger) {
        let fair = Server.fairConnections(config.buffers, workers: config.workers)
        if connectionLimit > fair {
            let buffers = config.workers * config.buffers.localBuffers + config.buffers.overflowMax
            logger.warning("""
                --max-connections \(connectionLimit) is more than the buffer pools serve fairly: a client that stops \
                reading holds at least one buffer, and the pools hold \(buffers) (\(config.workers) x --local-buffers \
                \(config.buffers.localBuffers) + --overflow-max \(config.buffers.overflowMax)), less a reserve kept for new \
                connections: room for \(fair). Beyond \(fair) such clients, new clients wait for a buffer until \
                --write-timeout resets the stalled ones. Raise --overflow-max to at least \(config.buffers.overflowMax + connectionLimit - fair) \
                or lower --max-connections to \(fair).
                """)
        }
    }
}
