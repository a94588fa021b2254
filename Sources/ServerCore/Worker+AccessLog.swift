import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a session keeps of its client for the access log and the per-client limit: the
/// address as `getpeername` gave it at accept (raw bytes), the wall clock then, and whether
/// the address holds a count in the per-client table.
struct SessionPeer {
    /// Wall clock at accept, milliseconds since the Unix epoch (0 when the access log was off
    /// then: the connection gets no line, even if a reload turns the log on before it ends).
    /// First, so the flag at the end fills the last address's padding (52 bytes, not 57).
    var acceptedAt: Int64 = 0
    var address = RawSocketAddress()
    /// The address the client connected to (read only when an upstream gets PROXY headers).
    var local = RawSocketAddress()
    var countedPerClient = false
}

/// The access log, the worker's part: a record copied into its ring when a connection ends
/// (or is refused at accept). Nothing is formatted here and nothing allocates; the writer
/// thread (AccessLog) makes the lines.
extension Worker {
    /// The client of a connection just accepted: its address when the access log, the
    /// per-client limit, the `hash` balancer or a PROXY header needs it (one getpeername for
    /// all), the address it connected to for a PROXY header (getsockname), and the wall clock
    /// when the log is on.
    func acceptedPeer(_ stream: TCPStream) -> SessionPeer {
        var peer = SessionPeer()
        let sendsProxyHeaders = shared.upstreams?.sendsProxyHeaders ?? false
        let logged = settings.logsConnections
        guard logged || settings.limitsClients || (config.mode == .relay && config.balance == .hash)
            || sendsProxyHeaders || config.acceptProxy else {
            return peer
        }
        // An IPv4 client of a dual-stack ([::]) listener comes as ::ffff:a.b.c.d: it is an IPv4
        // client in the log, the limits, the hash and the PROXY header (TCP4) alike.
        peer.address = stream.peerRawAddress.unmapped
        if sendsProxyHeaders { peer.local = stream.localRawAddress.unmapped }
        if logged { peer.acceptedAt = Worker.wallClockMilliseconds() }
        return peer
    }

    /// Milliseconds since the Unix epoch (CLOCK_REALTIME: a vDSO call, no system call).
    static func wallClockMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// The session has ended (both sockets closed): its line (if the log was on when it was
    /// accepted), and its per-client count back (into the table it was counted in: the table
    /// stays once made). Called by `sessionDidEnd` before the session lets go of its upstream.
    func recordEnd(of session: Session) {
        if session.peer.countedPerClient {
            settings.clientLimits?.release(session.peer.address)
            session.peer.countedPerClient = false
        }
        guard session.peer.acceptedAt != 0 else { return }
        let machine = session.machine
        var record = AccessLogRecord()
        record.startMilliseconds = session.peer.acceptedAt
        record.durationMilliseconds = loop.nowMilliseconds &- machine.startedAt
        record.client = session.peer.address
        record.worker = UInt16(truncatingIfNeeded: index)
        record.bytesReceived = session.client.bytesRead
        record.bytesSent = session.client.bytesWritten
        record.reason = machine.endReason
        record.causes = machine.endCauses
        if session.hasUpstream, let upstream = session.upstream {
            record.relay = true
            record.upstreamBytesSent = upstream.bytesWritten
            record.upstreamBytesReceived = upstream.bytesRead
            record.tries = UInt8(clamping: session.tried.count)
            if let member = session.member { record.upstream = RawSocketAddress(member.address) }
            if let connectedAt = machine.connectedAt { record.connectMilliseconds = Int64(connectedAt &- machine.startedAt) }
        }
        pushAccessLog(record)
    }

    /// A connection closed at accept, before it had a session: its line (no bytes, no time).
    func recordRefused(_ peer: SessionPeer, reason: SessionEndReason) {
        guard peer.acceptedAt != 0 else { return }
        var record = AccessLogRecord()
        record.startMilliseconds = peer.acceptedAt
        record.client = peer.address
        record.worker = UInt16(truncatingIfNeeded: index)
        record.relay = config.mode == .relay
        record.reason = reason
        record.causes = SessionEndReasons(reason)
        pushAccessLog(record)
    }

    /// Into this worker's ring; a full ring drops the record (counted), never waits. The writer
    /// writes it to the target in effect then (a reload that switched it meanwhile: the new one;
    /// off: dropped).
    private func pushAccessLog(_ record: AccessLogRecord) {
        guard let log = settings.accessLog else { return }
        if let waiting = log.rings[index].push(record) {
            log.pushed(waiting: waiting)
        } else {
            WorkerCounters.add(counters.accessLogDropped)
        }
    }
}
