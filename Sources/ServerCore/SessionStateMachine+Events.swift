/// The events from the sockets, each answered with the action the driver performs: bytes read
/// and forwarded, writes queued and completed, buffers refused and found again, the ends of
/// streams. (The session's start is in SessionStateMachine.swift.)
extension SessionStateMachine {
    // MARK: The data path

    /// Bytes arrived on `side`: where they go, or nil to drop them (a lingering side, or a
    /// target that has closed or shut down its output). The hot path: no action to apply.
    @inline(__always)
    mutating func bytesRead(from side: SessionSide, now: UInt64) -> SessionSide? {
        lastActivity = now
        guard self[side].input == .open else { return nil }
        let target = target(of: side)
        guard self[target].socket == .open, self[target].output == .open else { return nil }
        return target
    }

    /// A write to `side` was queued (the socket did not take it all at once). `share` is how
    /// many buffers that queue may hold before its source stops reading (at least 1).
    mutating func writeQueued(to side: SessionSide, share: Int, now: UInt64) -> SessionAction {
        if self[side].queued == 0 {
            self[side].progressAt = now
            self[side].queuedBytesSeen = 0
        }
        self[side].queued &+= 1
        let source = source(of: side)
        guard self[side].queued >= max(share, 1), !self[source].pausedForTarget, self[source].input == .open else { return .none }
        self[source].targetQueueAtPause = self[side].queued
        var action = SessionAction(count: .backpressurePause)
        reconcileReading(&action)
        return action
    }

    /// A write queued to `side` finished, written (`cancelled` false) or cancelled by a close.
    /// `lowWatermark` is the queue length (in buffers) at or under which a paused source resumes.
    mutating func writeCompleted(to side: SessionSide, cancelled: Bool, lowWatermark: Int, now: UInt64) -> SessionAction {
        assert(self[side].queued > 0, "a queued write completed on \(side) with none queued")
        self[side].queued &-= 1
        if !cancelled {
            lastActivity = now  // a slow reader that is still taking bytes is not idle
            self[side].progressAt = now
            self[side].queuedBytesSeen = 0
        }
        // Progress of the session's own: what was held back for the reserve may try again.
        let heldBack = client.heldBack || upstream.heldBack
        client.heldBack = false
        upstream.heldBack = false
        let source = source(of: side)
        let queueAtPause = self[source].targetQueueAtPause
        if queueAtPause != 0, self[side].queued <= min(lowWatermark, queueAtPause - 1) {
            self[source].targetQueueAtPause = 0
        } else if !heldBack {
            return .none
        }
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    /// A write to `side` failed: a queued write's completion reported an error (`wasQueued`),
    /// or the write could not be started (nothing was queued). Counts as that side's failure.
    mutating func writeFailed(to side: SessionSide, wasQueued: Bool, now: UInt64) -> SessionAction {
        if wasQueued {
            assert(self[side].queued > 0, "a queued write completed on \(side) with none queued")
            self[side].queued &-= 1
        }
        return fail(side, now: now)
    }

    /// A read on `side` failed (reset, keepalive timeout, ...).
    mutating func readFailed(on side: SessionSide, now: UInt64) -> SessionAction {
        fail(side, now: now)
    }

    // MARK: Buffers

    /// Buffers this session holds in its write queues (both directions).
    @inline(__always)
    var queuedBuffers: Int { client.queued &+ upstream.queued }

    /// A read on `side` was refused a buffer because the pools are down to their reserve and
    /// this session already holds some (the reserve is for connections that hold none, such
    /// as a new client): reading waits until one of the session's own writes completes. A
    /// session that holds none waits for a buffer instead.
    mutating func declinedBuffer(on side: SessionSide) -> SessionAction {
        guard queuedBuffers > 0 else { return outOfBuffers(on: side) }
        guard self[side].isOpen, self[side].input == .open || self[side].input == .discarding else { return .none }
        self[side].heldBack = true
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    /// A read on `side` found every pool empty: stop reading and wait for a buffer.
    mutating func outOfBuffers(on side: SessionSide) -> SessionAction {
        guard self[side].isOpen, self[side].input == .open || self[side].input == .discarding else { return .none }
        var action = SessionAction()
        if !self[side].waitingForBuffer {
            self[side].waitingForBuffer = true
            action.waitForBuffer = SessionSides(side)
        }
        reconcileReading(&action)
        return action
    }

    /// A buffer may be free again for `side`'s reads.
    mutating func buffersAvailable(for side: SessionSide) -> SessionAction {
        guard self[side].waitingForBuffer else { return .none }
        self[side].waitingForBuffer = false
        var action = SessionAction()
        reconcileReading(&action)
        return action
    }

    // MARK: Ends of streams

    /// End of stream on `side`: nothing more to forward from it. Its target gets a FIN after
    /// what is queued to it.
    mutating func readEnded(on side: SessionSide) -> SessionAction {
        var action = SessionAction()
        guard self[side].isOpen else { return action }
        noteEnd(side == .client ? .clientFIN : .upstreamFIN)
        let wasDiscarding = self[side].input == .discarding
        self[side].input = .ended
        let target = target(of: side)
        if !wasDiscarding { shutdownOutput(target, &action) }
        closeIfDone(side, &action)
        closeIfDone(target, &action)
        reconcileReading(&action)
        return action
    }

    /// The FIN requested on `side` went out, or the shutdown failed (the peer had gone, say):
    /// then that side has failed, and in a relay the other side lingers.
    mutating func shutdownCompleted(on side: SessionSide, failed: Bool, now: UInt64) -> SessionAction {
        guard self[side].isOpen else { return .none }
        self[side].output = .shut
        if failed { return fail(side, now: now) }
        var action = SessionAction()
        closeIfDone(side, &action)
        reconcileReading(&action)
        return action
    }

    /// `side`'s socket has closed (its close callback ran).
    mutating func closed(_ side: SessionSide) -> SessionAction {
        self[side].socket = .closed
        self[side].reading = false
        self[side].waitingForBuffer = false
        var action = SessionAction()
        if allSides({ $0.socket == .closed }) {
            phase = .ended
            action.ended = true
        } else if side == .upstream, case .connecting = phase {
            // The upstream closed before it connected (stopped elsewhere): end the client cleanly.
            return upstreamConnectFailed(now: lastActivity)
        }
        return action
    }
}
