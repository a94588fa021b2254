import UVLoop

/// `--max-connections-per-client`: at accept, one lookup in the table all workers share
/// (`ClientLimits`); at the end of the session, one release (`recordEnd`).
extension Worker {
    /// Counts the new connection against its address's limit. Over the limit: the connection
    /// is closed at once, counted, logged (at most 10 lines a second) and given its access log
    /// line; returns false. The caller has admitted it against --max-connections already
    /// (released here when refused).
    func admitPerClient(_ peer: inout SessionPeer, stream: TCPStream) -> Bool {
        // No address (the client left before getpeername): nothing to count it by, nor to refuse.
        guard settings.limitsClients, let limits = settings.clientLimits, peer.address.kind != .none else { return true }
        let limit = config.maxConnectionsPerClient  // the limit in effect now: a reload may change it
        switch limits.acquire(peer.address, limit: limit) {
        case .admitted:
            peer.countedPerClient = true
            return true
        case .untracked:
            WorkerCounters.add(counters.clientLimitTableFull)
            return true
        case .refused:
            stream.close()
            shared.release()
            WorkerCounters.add(counters.clientLimitRejections)
            recordRefused(peer, reason: .clientLimit)
            logRateLimited(level: .warning, "connection refused: \(limit) connections open from \(SocketAddress(peer.address)?.host ?? "this client's address"), the per-client limit")
            return false
        }
    }
}
