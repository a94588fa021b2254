import PacketBuffers
import UVLoop

/// Buffer fairness: a write queue's share shrinks as the pools fill; the last buffers are a
/// reserve for connections that hold none; reads that find no buffer wait their turn, first
/// come, first served; and when every pool is empty, the longest-stalled queue is reset.
extension Worker {
    /// The buffers kept for connections that hold none: a sixteenth of what a worker can reach,
    /// at least 2 (72 with the default pools: reads by new connections at the same instant;
    /// each is written back and returned at once unless its client is slow too).
    static func reserve(reachable: Int) -> Int { max(2, reachable / 16) }

    /// How long the longest-stalled queue must have made no progress before the worker resets
    /// it for a connection that holds no buffer and finds every pool empty.
    static let evictionMinimumStallMilliseconds: UInt64 = 50

    /// How often reads waiting for a buffer look for one that another worker released.
    static let bufferWaitRetryMilliseconds: UInt64 = 5

    /// Buffers a direction's write queue may hold before its source pauses: the high watermark
    /// while the pools are roomy, shrinking in proportion to what is left above the reserve as
    /// they fill, and 1 once only the reserve is left. Computed only when a write is queued (not per message).
    func queueShare() -> Int {
        let available = buffers.available
        if available <= reserveBuffers { return 1 }
        let free = Double(available - reserveBuffers) / Double(max(1, buffers.reachable - reserveBuffers))
        let share = (Double(highWatermarkBuffers) * free).rounded(.up)
        return max(1, min(highWatermarkBuffers, Int(share)))
    }

    /// Only the reserve is left. Asks the worker's own free list first (plain loads): the
    /// shared figures are read only when that is low.
    @inline(__always)
    func buffersScarce() -> Bool {
        buffers.localAvailable <= reserveBuffers && buffers.available <= reserveBuffers
    }

    /// A read found no buffer: it waits its turn.
    func waitForBuffer(_ connection: SessionConnection) {
        bufferWaiters.append(connection)
        if bufferWaiters.count - waitersHead == 1 {
            let interval = Worker.bufferWaitRetryMilliseconds
            bufferWaitTimer?.start(after: interval, repeat: interval, retryWaitingReads)
        }
    }

    /// A buffer went back to this worker's pool: the first waiting read may go on.
    @inline(__always)
    func bufferReleased() {
        if waitersHead != bufferWaiters.count { wakeBufferWaiters(upTo: 1) }
    }

    /// Wakes waiting reads, first come first served, at most `limit` of them (the buffers there
    /// are to take). Entries that no longer wait (closed, or a reused connection object) cost nothing.
    func wakeBufferWaiters(upTo limit: Int) {
        var budget = min(limit, buffers.available)
        while budget > 0 && waitersHead < bufferWaiters.count {
            let connection = bufferWaiters[waitersHead]
            waitersHead += 1
            let session = connection.session
            let action = session.machine.buffersAvailable(for: connection.side)
            if action != .none { budget -= 1 }
            session.perform(action)
        }
        if waitersHead == bufferWaiters.count {
            bufferWaiters.removeAll(keepingCapacity: true)
            waitersHead = 0
            bufferWaitTimer?.stop()
        } else if waitersHead > 1024 && waitersHead * 2 > bufferWaiters.count {
            bufferWaiters.removeFirst(waitersHead)
            waitersHead = 0
        }
    }

    /// Every pool is empty and `sparing` holds no buffer: reset the session whose queue has
    /// made no progress the longest (at least `evictionMinimumStallMilliseconds`), so that
    /// clients that stopped reading, however many, cannot keep a new client waiting. A queue
    /// that moves is never the longest-stalled for long; one that has not moved for 50 ms while
    /// the pools are empty is what holds them.
    func evictLongestStalled(sparing: Session) {
        let now = loop.nowMilliseconds
        var oldest: (session: Session, since: UInt64)?
        for session in sessions where session !== sparing {
            guard let since = session.machine.stalledSince else { continue }
            if oldest == nil || since < oldest!.since { oldest = (session, since) }
        }
        guard let (victim, since) = oldest, now &- since >= Worker.evictionMinimumStallMilliseconds else { return }
        victim.perform(victim.machine.evict(now: now))
    }
}
