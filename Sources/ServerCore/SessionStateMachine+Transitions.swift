/// The steps the events, the periodic check and the resets share. For the machine's own use
/// (internal only because its files are extensions): the driver calls the events, never these.
extension SessionStateMachine {
    // MARK: Failing and lingering

    /// A failure of `side` (read or write error, failed shutdown), counted as that side's.
    mutating func fail(_ side: SessionSide, now: UInt64) -> SessionAction {
        guard self[side].isOpen else { return .none }
        noteEnd(side == .client ? .clientReset : .upstreamReset)
        var action = failure(side, now: now, reset: false)
        action.count = side == .client ? .clientFailure : .upstreamFailure
        return action
    }

    /// `side` failed: close (or reset) it; the other side, if any, lingers.
    mutating func failure(_ side: SessionSide, now: UInt64, reset: Bool) -> SessionAction {
        var action = SessionAction()
        if reset { resetSocket(side, &action) } else { closeSocket(side, &action) }
        if mode == .relay, self[side.other].isOpen {
            linger(side.other, now: now, &action)
        } else {
            phase = .closing
        }
        reconcileReading(&action)
        return action
    }

    /// The lingering close of `side`: forward nothing more, FIN after what is queued, read
    /// and drop until the peer closes.
    mutating func linger(_ side: SessionSide, now: UInt64, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        phase = .lingering(since: now)
        self[side].targetQueueAtPause = 0
        if self[side].input != .ended { self[side].input = .discarding }
        shutdownOutput(side, &action)
        closeIfDone(side, &action)
    }

    // MARK: Shutting down and closing sockets

    /// Asks for a FIN on `side` after what is queued to it (uv_shutdown). When `side`'s own
    /// input has ended and nothing is queued to it, its socket is simply closed (`closeIfDone`,
    /// called next by every caller): with its end of stream read, its receive queue is empty, so
    /// close() sends the same FIN after what the kernel still holds, one system call and one
    /// loop turn sooner (haproxy closes that way too).
    mutating func shutdownOutput(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen, self[side].output == .open else { return }
        if self[side].input == .ended && self[side].queued == 0 {
            self[side].output = .shut
            return
        }
        self[side].output = .shuttingDown
        action.shutdown.insert(SessionSides(side))
    }

    /// Closes `side` when both of its directions are done.
    mutating func closeIfDone(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen, self[side].input == .ended, self[side].output == .shut else { return }
        closeSocket(side, &action)
        if allSides({ !$0.isOpen }) { phase = .closing }
    }

    /// Closes `side` now (uv_close).
    mutating func closeSocket(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        endSocket(side)
        action.close.insert(SessionSides(side))
    }

    /// Resets `side` now (SO_LINGER 0, then uv_close).
    mutating func resetSocket(_ side: SessionSide, _ action: inout SessionAction) {
        guard self[side].isOpen else { return }
        endSocket(side)
        action.reset.insert(SessionSides(side))
    }

    private mutating func endSocket(_ side: SessionSide) {
        self[side].socket = .closing
        self[side].input = .ended
        self[side].reading = false  // libuv stops reading a closing handle by itself
        self[side].waitingForBuffer = false
        self[side].heldBack = false
        self[side].targetQueueAtPause = 0
    }

    // MARK: Reading

    /// Whether `side` should be read now.
    private func wantsReading(_ side: SessionSide) -> Bool {
        let state = self[side]
        guard state.isOpen, !state.waitingForBuffer, !state.heldBack else { return false }
        switch state.input {
        case .open: return !state.pausedForTarget
        case .discarding: return true
        case .waiting, .ended: return false
        }
    }

    /// Adds the start/stop of reading that brings each side in line with `wantsReading`.
    mutating func reconcileReading(_ action: inout SessionAction) {
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue {
            let want = wantsReading(side)
            guard want != self[side].reading else { continue }
            self[side].reading = want
            if want {
                action.startReading.insert(SessionSides(side))
            } else if self[side].isOpen {
                action.stopReading.insert(SessionSides(side))
            }
        }
    }
}
