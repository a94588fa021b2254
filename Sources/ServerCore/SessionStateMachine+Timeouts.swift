/// The limits a periodic check applies (milliseconds; 0: none).
///
/// Kept in 32 bits each, read as 64: every session holds a copy, and the options' bounds (7
/// days, 604,800,000 ms; 1 hour for the connect) are far below UInt32's 49 days. A larger value
/// is clamped there, never wrapped.
struct SessionTimeouts: Sendable, Equatable {
    private var idleMilliseconds: UInt32
    private var connectMilliseconds: UInt32
    private var writeMilliseconds: UInt32
    private var lingerMilliseconds: UInt32

    init(idle: UInt64 = 0, connect: UInt64 = 0, write: UInt64 = 0, linger: UInt64 = 0) {
        idleMilliseconds = UInt32(clamping: idle)
        connectMilliseconds = UInt32(clamping: connect)
        writeMilliseconds = UInt32(clamping: write)
        lingerMilliseconds = UInt32(clamping: linger)
    }

    var idle: UInt64 { UInt64(idleMilliseconds) }
    var connect: UInt64 { UInt64(connectMilliseconds) }
    var write: UInt64 { UInt64(writeMilliseconds) }
    var linger: UInt64 { UInt64(lingerMilliseconds) }
}

extension SessionTimeouts {
    /// The deadlines `config` sets.
    init(_ config: ServerConfig) {
        self.init(idle: config.idleTimeoutMilliseconds, connect: config.connectTimeoutMilliseconds,
                  write: config.writeTimeoutMilliseconds, linger: config.lingerTimeoutMilliseconds)
    }
}

/// Time: one periodic check per session (the worker's sweep), not a timer per connection.
extension SessionStateMachine {
    /// The periodic check: connect, idle, write-stall and linger deadlines. `queuedBytes` gives
    /// the bytes still queued to a side (progress inside one large buffer counts as progress).
    mutating func tick(now: UInt64, timeouts: SessionTimeouts, queuedBytes: (SessionSide) -> Int) -> SessionAction {
        switch phase {
        case .connecting(let since):
            if timeouts.connect > 0 && now &- since >= timeouts.connect { return upstreamConnectFailed(now: now) }
            return .none
        case .lingering(let since):
            if timeouts.linger > 0 && now &- since >= timeouts.linger { return closeAll(counting: .lingerTimeout, reason: .lingerTimeout) }
            return writeStallCheck(now: now, timeouts: timeouts, queuedBytes: queuedBytes)
        case .open:
            if timeouts.idle > 0 && now &- lastActivity >= timeouts.idle { return closeAll(counting: .idleTimeout, reason: .idleTimeout) }
            return writeStallCheck(now: now, timeouts: timeouts, queuedBytes: queuedBytes)
        case .closing, .ended:
            return .none
        }
    }

    /// A deadline ended the session: close every side still open, counted as `count`.
    private mutating func closeAll(counting count: SessionCount, reason: SessionEndReason) -> SessionAction {
        noteEnd(reason)
        var action = SessionAction(count: count)
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen { closeSocket(side, &action) }
        phase = .closing
        return action
    }

    private mutating func writeStallCheck(now: UInt64, timeouts: SessionTimeouts, queuedBytes: (SessionSide) -> Int) -> SessionAction {
        guard timeouts.write > 0 else { return .none }
        for side in SessionSide.allCases where side.rawValue <= lastSide.rawValue && self[side].isOpen && self[side].queued > 0 {
            let bytes = queuedBytes(side)
            if bytes != self[side].queuedBytesSeen {
                // Bytes left the queue since the last check (or this is the first check).
                if self[side].queuedBytesSeen != 0 && bytes < self[side].queuedBytesSeen { self[side].progressAt = now }
                self[side].queuedBytesSeen = bytes
            }
            if now &- self[side].progressAt >= timeouts.write {
                noteEnd(.writeTimeout)
                var action = failure(side, now: now, reset: true)
                action.count = .writeTimeout
                return action
            }
        }
        return .none
    }
}
