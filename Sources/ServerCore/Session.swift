import CLibUV
import PacketBuffers
import UVLoop

/// One side of a session: a socket, its read state, and the writes queued to it.
///
/// The data path: libuv asks for memory (`readBuffer`: a packet buffer from the worker's pool,
/// lent to C); the read lands in it; the same buffer is written to the peer (echo: this same
/// socket) with `uv_try_write` first and a queued `uv_write` for the rest; the buffer goes home
/// when the write is done, or at once when the try-write took it all. Every buffer lent to
/// libuv comes back through exactly one of: `didRead` (nothing to forward, or an error),
/// the immediate write, or `didFinishWrite` (completed, failed or cancelled by a close).
final class Endpoint: TCPStreamDelegate {
    enum Role { case client, upstream }

    // Safe as unowned(unsafe): the session owns its endpoints, and the worker keeps every
    // session (live or in its free list) until the worker itself ends.
    unowned(unsafe) let session: Session
    /// The socket of the current connection (kept after it closes, until the endpoint is reused).
    private(set) var stream: TCPStream!
    let role: Role
    /// Where this side's bytes go: itself in echo mode, the other side in relay mode. Set once
    /// the session is built; cleared when the session ends (it is a reference cycle until then).
    var peer: Endpoint!

    /// uv_read_start is in effect.
    var reading = false
    /// No more input will be forwarded from this side (EOF, error, drain or close).
    var readEnded = false
    /// A read found no buffer; the worker retries when buffers may have come back.
    var waitingForBuffer = false
    /// The peer's write queue is above the high watermark.
    var pausedByPeer = false
    /// In a drain: keep reading only to see the other end's EOF, dropping what arrives.
    var discarding = false
    /// Buffers and bytes queued for writing to this side (held until their write completes).
    var queuedBuffers = 0
    var shutdownRequested = false
    var shutdownDone = false
    var closeRequested = false
    var closed = false

    init(session: Session, role: Role) {
        self.session = session
        self.role = role
    }

    /// Starts a new connection on this (new or reused) endpoint.
    func attach(_ stream: TCPStream) {
        self.stream = stream
        stream.delegate = self
        reading = false
        readEnded = false
        waitingForBuffer = false
        pausedByPeer = false
        discarding = false
        queuedBuffers = 0
        shutdownRequested = false
        shutdownDone = false
        closeRequested = false
        closed = false
    }

    var worker: Worker { session.worker }

    /// Buffer memory held by writes queued to this side, counted in whole buffers (a 64-byte
    /// message still holds a whole buffer until it is written).
    @inline(__always)
    var queuedMemory: Int { queuedBuffers &* worker.bufferSize }

    // MARK: Reading

    /// Starts or stops reading so that it matches the state.
    func updateReading() {
        let want = !readEnded && !waitingForBuffer && !pausedByPeer && !closeRequested && (session.isConnected || discarding)
        guard want != reading else { return }
        reading = want
        if want {
            do {
                try stream.startReading()
            } catch {
                reading = false
                fail(error)
            }
        } else {
            stream.stopReading()
        }
    }

    func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        guard let buffer = worker.buffers.take() else {
            // Empty: libuv reports UV_ENOBUFS to didRead, where this side waits for buffers.
            return UnsafeMutableRawBufferPointer(start: nil, count: 0)
        }
        return buffer.unsafeLend()
    }

    func stream(_ stream: TCPStream, didRead count: Int, into memory: UnsafeMutableRawBufferPointer) {
        guard count > 0, !discarding else {
            if let base = memory.baseAddress {
                // Safe: `memory` is the buffer readBuffer lent for this read; nothing else holds it.
                PacketBuffer.unsafeReclaim(base).release()
            }
            if count < 0 { readFailed(Int32(count)) }
            return
        }
        // Safe: readBuffer lent this buffer for this read and count > 0 means it holds the bytes.
        let base = memory.baseAddress!
        let worker = self.worker
        session.lastActivity = worker.loop.nowMilliseconds
        WorkerCounters.add(worker.counters.bytesReceived, UInt64(count))
        peer.send(base, count: count)
    }

    private func readFailed(_ status: Int32) {
        if status == UVError.endOfFile {
            readEnded = true
            updateReading()
            // The other direction ends after what is queued to the peer has gone out.
            peer.shutdownWhenFlushed()
            closeIfDone()
        } else if status == Int32(UV_ENOBUFS.rawValue) {
            waitingForBuffer = true
            updateReading()
            WorkerCounters.add(worker.counters.bufferWaits)
            worker.waitForBuffers(self)
        } else {
            fail(UVError(status, role == .client ? "read from client" : "read from upstream"))
        }
    }

    // MARK: Writing

    /// Writes a lent buffer's first `count` bytes to this side and owns the buffer from now on.
    @inline(__always)
    func send(_ base: UnsafeMutableRawPointer, count: Int) {
        let counters = worker.counters
        guard !closeRequested && !shutdownRequested else {
            // This side is gone or has shut down its output: nothing can be delivered.
            PacketBuffer.unsafeReclaim(base).release()
            return
        }
        do {
            // Safe: the buffer stays lent (untouched by anyone else) until the write completes;
            // its address is the token that lets the completion reclaim it.
            let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(start: base, count: count),
                                          token: UInt(bitPattern: base))
            if queued == 0 {
                PacketBuffer.unsafeReclaim(base).release()
                WorkerCounters.add(counters.bytesSent, UInt64(count))
                return
            }
            WorkerCounters.add(counters.bytesSent, UInt64(count - queued))
            // The header carries the queued length to the completion (for the byte count).
            var buffer = PacketBuffer.unsafeReclaim(base)
            buffer.length = queued
            _ = buffer.unsafeLend()
            queuedBuffers &+= 1
            if queuedMemory > worker.config.highWatermark && !peer.pausedByPeer {
                // Backpressure: the source of these bytes stops reading until the queue drains.
                peer.pausedByPeer = true
                peer.updateReading()
                WorkerCounters.add(counters.backpressurePauses)
            }
        } catch {
            PacketBuffer.unsafeReclaim(base).release()
            fail(error)
        }
    }

    func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        // Safe: the token is the base address of the buffer send(_:count:) lent to this write.
        let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: token)!)
        let length = buffer.length
        buffer.release()
        queuedBuffers &-= 1
        if status == 0 {
            WorkerCounters.add(worker.counters.bytesSent, UInt64(length))
            // A slow reader that is still taking bytes is not idle.
            session.lastActivity = worker.loop.nowMilliseconds
        } else if status != Int32(UV_ECANCELED.rawValue) {
            fail(UVError(status, role == .client ? "write to client" : "write to upstream"))
            return
        }
        if peer.pausedByPeer && queuedMemory <= worker.config.lowWatermark {
            peer.pausedByPeer = false
            peer.updateReading()
        }
    }

    // MARK: Ending

    /// Ends the output once the queued writes are out (uv_shutdown waits for them).
    func shutdownWhenFlushed() {
        guard !shutdownRequested && !closeRequested else { return }
        shutdownRequested = true
        do {
            try stream.shutdown()
        } catch {
            shutdownDone = true
            close()
        }
    }

    func stream(_ stream: TCPStream, didShutdown status: Int32) {
        shutdownDone = true
        if status < 0 && status != Int32(UV_ECANCELED.rawValue) {
            close()
        } else {
            closeIfDone()
        }
    }

    /// Both directions of this socket are done: nothing more to read, and the output is shut.
    func closeIfDone() {
        if readEnded && shutdownDone { close() }
    }

    /// Closes the socket now: queued writes are cancelled (their buffers come home in
    /// didFinishWrite), a pending read buffer is never taken.
    func close() {
        guard !closeRequested else { return }
        closeRequested = true
        readEnded = true
        reading = false  // libuv stops reading a closing handle by itself
        waitingForBuffer = false
        stream.close()
    }

    func streamDidClose(_ stream: TCPStream) {
        closed = true
        session.endpointDidClose(self)
    }

    /// This side failed (reset, write error): close it; the other side delivers what it already
    /// has, then shuts down and closes.
    func fail(_ error: UVError) {
        guard !closeRequested else { return }
        session.sideFailed(self, error)
    }

    /// A lingering close (drain, a failed peer, an upstream that never connected): forward
    /// nothing more; flush what is queued to this side, shut its output down, and read (dropping
    /// the bytes) until the other end closes. Closing a socket with unread input sends a reset,
    /// which can destroy output still in flight; this way what was delivered stays delivered.
    /// Bounded by the idle timeout (dropped bytes are not activity) and the drain timeout.
    func finishGracefully() {
        guard !closeRequested else { return }
        discarding = true
        pausedByPeer = false
        shutdownWhenFlushed()
        updateReading()
        closeIfDone()
    }

    func connectionDidBecomeReady() {
        stream.setNoDelay(true)
        updateReading()
    }

    // Relay upstream connection
    func stream(_ stream: TCPStream, didConnect status: Int32) {
        session.upstreamDidConnect(status: status)
    }
}

/// A client connection and, in relay mode, its upstream connection. Owned by one worker.
///
/// Sessions are reused: when one ends, the worker keeps it (and its closed streams) for a later
/// connection, so that accepting allocates nothing once the worker has seen its peak.
final class Session {
    unowned(unsafe) let worker: Worker  // Safe: a worker outlives its sessions (it ends after the last one).
    private(set) var client: Endpoint!
    /// The relay's upstream side of the current connection; nil in echo mode.
    private(set) var upstream: Endpoint?
    /// Kept across reuses (relay mode).
    private var upstreamEndpoint: Endpoint?
    /// Index in the worker's session list (for O(1) removal).
    var slot = 0
    /// The loop's time of the last byte read from the client or upstream.
    var lastActivity: UInt64 = 0
    var isConnected = false
    private(set) var startedAt: UInt64 = 0
    private(set) var ended = false
    private(set) var upstreamFailureHandled = false

    init(worker: Worker) {
        self.worker = worker
        client = Endpoint(session: self, role: .client)
    }

    /// Starts the session for a new connection (and, in relay mode, its upstream connection).
    func open(clientStream: TCPStream, upstreamStream: TCPStream?) {
        lastActivity = worker.loop.nowMilliseconds
        startedAt = lastActivity
        isConnected = upstreamStream == nil
        ended = false
        upstreamFailureHandled = false
        client.attach(clientStream)
        if let upstreamStream {
            let upstream = upstreamEndpoint ?? Endpoint(session: self, role: .upstream)
            upstreamEndpoint = upstream
            upstream.attach(upstreamStream)
            upstream.peer = client
            client.peer = upstream
            self.upstream = upstream
        } else {
            client.peer = client
            upstream = nil
        }
    }

    func start() {
        if isConnected {
            client.connectionDidBecomeReady()
        }
    }

    func upstreamDidConnect(status: Int32) {
        guard !isConnected, let upstream, !upstream.closeRequested, !client.discarding else { return }
        if status < 0 {
            upstreamFailed(UVError(status, "connect to upstream \(worker.config.upstream!)"))
            return
        }
        isConnected = true
        upstream.connectionDidBecomeReady()
        client.connectionDidBecomeReady()
    }

    /// The upstream refused or did not accept in time: the client gets a clean close.
    func upstreamFailed(_ error: UVError) {
        guard !upstreamFailureHandled else { return }
        upstreamFailureHandled = true
        WorkerCounters.add(worker.counters.upstreamConnectFailures)
        worker.logUpstreamFailure(error)
        upstream?.close()
        client.finishGracefully()
    }

    func sideFailed(_ side: Endpoint, _ error: UVError) {
        let resetCode = Int32(UV_ECONNRESET.rawValue)
        if side.role == .upstream {
            WorkerCounters.add(worker.counters.upstreamResets)
            worker.logUpstreamFailure(error)
        } else if error.code == resetCode || error.code == Int32(UV_EPIPE.rawValue) {
            WorkerCounters.add(worker.counters.clientResets)
        }
        side.close()
        if let other = side.peer, other !== side {
            // Deliver what the other side already has, then end it cleanly.
            other.finishGracefully()
        }
    }

    /// Closes everything now (idle timeout, drain timeout, stop).
    func closeNow() {
        upstream?.close()
        client.close()
    }

    func drain() {
        if !isConnected {
            upstream?.close()
        } else {
            upstream?.finishGracefully()
        }
        client.finishGracefully()
    }

    func endpointDidClose(_ endpoint: Endpoint) {
        guard client.closed && (upstream?.closed ?? true), !ended else {
            // One side is closed: the other cannot be relayed to any more; let it finish.
            if endpoint === upstream, !isConnected { client.finishGracefully() }
            return
        }
        ended = true
        // Break the endpoints' reference cycle.
        client.peer = nil
        upstream?.peer = nil
        worker.sessionDidEnd(self)
    }
}
