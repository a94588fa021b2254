/// The ends the worker imposes on a session, each a reset (never a clean end of stream): the
/// drain deadline (`cut`), a stop (`stop`), and the eviction of the longest-stalled queue when
/// the pools run out (`stalledSince`, `evict`).
extension SessionStateMachine {
    /// The drain deadline passed: reset both sides, so that neither end mistakes the cut for a
    /// complete stream.
    mutating func cut() -> SessionAction {
        var action = SessionAction()
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { resetSocket(side, &action) }
        guard !action.reset.isEmpty else { return .none }  // already closing by itself
        noteEnd(.drainCut)
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
        if !action.reset.isEmpty {
            noteEnd(.stop)
            phase = .closing
        }
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
        noteEnd(.stalledEviction)
        var action = failure(stalled, now: now, reset: true)
        action.count = .stalledEviction
        return action
    }
}
