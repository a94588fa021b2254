import PacketBuffers
import UVLoop

/// One of a session's connections, as libuv sees it: the client connection or, in relay mode,
/// the upstream connection (its `side`), with the socket (`stream`) and the buffers lent to it.
/// It makes no decision: events go to the session's `SessionStateMachine`, and the session
/// performs the actions it returns.
///
/// Named for what it is to the server: a TCP connection that belongs to a `Session`. (It was
/// `Endpoint`, which read like a sibling of `StatsEndpoint`, the HTTP server for the figures;
/// `HTTPConnection` is that server's connection, this is the echo/relay server's.)
///
/// The data path: libuv asks for memory (`readBuffer`: a packet buffer from the worker's pool,
/// lent to C); the read lands in it; the same buffer is written to its target (echo: this same
/// socket) with `uv_try_write` first and a queued `uv_write` for the rest; the buffer goes home
/// when the write is done, or at once when the try-write took it all. Every buffer lent to
/// libuv comes back through exactly one of: `didRead` (nothing to forward, or an error),
/// the immediate write, or `didFinishWrite` (completed, failed or cancelled by a close).
final class SessionConnection: TCPStreamDelegate {
    /// Strong, and a `let`, so reading it on the data path costs no retain (see `Session.worker`);
    /// the cycle with the session is broken by `Session.dissolve()` when the worker ends.
    let session: Session
    /// The socket of the current connection (kept after it closes, until this object is reused).
    private(set) var stream: TCPStream!
    /// Bytes read from and written to this connection (the access log's counts; plain adds
    /// beside the worker's counters, no atomics).
    private(set) var bytesRead: UInt64 = 0
    private(set) var bytesWritten: UInt64 = 0
    // The one-byte fields last, together (stored properties are laid out in declaration
    // order): 50 bytes, where a flag between words made it 64 and a larger allocation.
    let side: SessionSide
    /// The last buffer request was refused to keep the reserve for connections holding none.
    private var declinedForShare = false

    /// The session's worker. Read through this property at each use, not kept in a local: a
    /// local copy of a class reference is retained and released around the calls it spans,
    /// while a chain of `let`s from `self` is borrowed (measured: 2 retain/release pairs per
    /// message in `send` and 2 in `readBuffer`).
    @inline(__always)
    private var worker: Worker { session.worker }

    init(session: Session, side: SessionSide) {
        self.session = session
        self.side = side
    }

    /// Runs `body` with this connection's stream, unretained (the relay's data path). Sound
    /// because an open stream is held by libuv until its close callback, which never runs
    /// inside another callback of the loop, whatever `attach` does to `stream` meanwhile.
    @inline(__always)
    func withStream<R>(_ body: (TCPStream) -> R) -> R {
        Unmanaged.passUnretained(stream.unsafelyUnwrapped)._withUnsafeGuaranteedRef(body)
    }

    /// Starts a new connection on this (new or reused) object.
    func attach(_ stream: TCPStream) {
        self.stream = stream
        stream.delegate = self
        declinedForShare = false
        bytesRead = 0
        bytesWritten = 0
    }

    // MARK: Reading

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        if session.machine[side].input == .discarding {
            // A lingering close drops what it reads: into the worker's scratch memory, so that
            // it can see its peer's end even when the pools are empty.
            return worker.scratch
        }
        // Fairness: when the pools are down to their reserve, what is left is kept for sessions
        // that hold no buffer, so that clients that stopped reading cannot take the last ones.
        if session.machine.queuedBuffers > 0 && worker.buffersScarce() {
            declinedForShare = true
            return UnsafeMutableRawBufferPointer(start: nil, count: 0)  // libuv reports UV_ENOBUFS
        }
        // The pool unretained: a retain and a release around the take otherwise, on every read.
        // Sound: the worker holds its pool (a `let`) and outlives its sessions.
        let lent: UnsafeMutableRawBufferPointer? = Unmanaged.passUnretained(worker.buffers)._withUnsafeGuaranteedRef { pool in
            guard let buffer = pool.take() else { return nil }
            return buffer.unsafeLend()
        }
        return lent ?? UnsafeMutableRawBufferPointer(start: nil, count: 0)  // none: libuv reports UV_ENOBUFS
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into memory: UnsafeMutableRawBufferPointer) {
        if memory.baseAddress != nil && memory.baseAddress == worker.scratch.baseAddress {
            // Lingering: the bytes are dropped; the scratch memory is not a pool buffer.
            if count > 0 {
                bytesRead &+= UInt64(count)
                _ = session.machine.bytesRead(from: side, now: worker.loop.nowMilliseconds)
                return
            }
            if count == 0 { return }
            let status = Int32(count)
            if status == UVError.endOfFile {
                session.perform(session.machine.readEnded(on: side))
            } else {
                session.perform(session.machine.readFailed(on: side, now: worker.loop.nowMilliseconds))
            }
            return
        }
        if count > 0 {
            // Safe: readBuffer lent this buffer for this read and count > 0 means it holds the bytes.
            let base = memory.baseAddress!
            WorkerCounters.add(worker.counters.bytesReceived, UInt64(count))
            bytesRead &+= UInt64(count)
            if let target = session.machine.bytesRead(from: side, now: worker.loop.nowMilliseconds) {
                if target == side {
                    send(base, count: count, on: stream)  // echo: back where it came from
                } else {
                    session.withConnection(target) { other in other.withStream { other.send(base, count: count, on: $0) } }
                }
            } else {
                // Safe: nothing else holds the buffer this read was lent.
                PacketBuffer.unsafeReclaim(base).release()
                worker.bufferReleased()
            }
            return
        }
        if let base = memory.baseAddress {
            // Safe: `memory` is the buffer readBuffer lent for this read; nothing else holds it.
            PacketBuffer.unsafeReclaim(base).release()
            worker.bufferReleased()
        }
        guard count < 0 else { return }
        let status = Int32(count)
        let action: SessionAction
        if status == UVError.endOfFile {
            action = session.machine.readEnded(on: side)
        } else if status == UVError.noBufferSpace {
            WorkerCounters.add(worker.counters.bufferWaits)
            if declinedForShare {
                declinedForShare = false
                action = session.machine.declinedBuffer(on: side)
            } else {
                action = session.machine.outOfBuffers(on: side)
                // Every pool is empty and this session holds nothing: it must not wait on
                // clients that stopped reading. The worker frees its longest-stalled queue.
                if session.machine.queuedBuffers == 0 { worker.evictLongestStalled(sparing: session) }
            }
        } else {
            session.log(UVError(status, side == .client ? "read from client" : "read from upstream"))
            action = session.machine.readFailed(on: side, now: worker.loop.nowMilliseconds)
        }
        session.perform(action)
    }

    // MARK: Writing

    /// Writes a lent buffer's first `count` bytes to this side (`stream`, this connection's
    /// socket) and owns the buffer from now on.
    ///
    /// Not inlined, and the stream passed in: called on the connection (echo: the one whose read
    /// callback runs, with the stream that callback got), its session, worker and counters are
    /// borrowed, not retained and released around the write (measured: 4 retain/release pairs
    /// per message when inlined into `didRead`).
    @inline(never)
    func send(_ base: UnsafeMutableRawPointer, count: Int, on stream: TCPStream) {
        do {
            // Safe: the buffer stays lent (untouched by anyone else) until the write completes;
            // its address is the token that lets the completion reclaim it.
            let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(start: base, count: count),
                                          token: UInt(bitPattern: base))
            if queued == 0 {
                PacketBuffer.unsafeReclaim(base).release()
                worker.bufferReleased()
                WorkerCounters.add(worker.counters.bytesSent, UInt64(count))
                bytesWritten &+= UInt64(count)
                return
            }
            WorkerCounters.add(worker.counters.bytesSent, UInt64(count - queued))
            bytesWritten &+= UInt64(count - queued)
            // The header carries the queued length to the completion (for the byte count).
            var buffer = PacketBuffer.unsafeReclaim(base)
            buffer.length = queued
            _ = buffer.unsafeLend()
            session.perform(session.machine.writeQueued(to: side, share: worker.queueShare(), now: worker.loop.nowMilliseconds))
        } catch {
            PacketBuffer.unsafeReclaim(base).release()
            worker.bufferReleased()
            session.log(error)
            session.perform(session.machine.writeFailed(to: side, wasQueued: false, now: worker.loop.nowMilliseconds))
        }
    }

    /// The token of a write from the session's header area (not a pool buffer: a buffer's token
    /// is its base address, never 1).
    static let headerToken: UInt = 1

    /// Writes a PROXY header from the session's header area (`Session.sendProxyHeader`). Not
    /// counted as relayed bytes. A rest the socket did not take at once is a queued write to
    /// the state machine (so a close waits for it, and a stall is seen); a failure fails this
    /// side. Returns whether the header was written or queued.
    func sendHeader(_ bytes: UnsafeRawBufferPointer) -> Bool {
        do {
            // Safe: the session's header area stays valid and unchanged until the connection
            // ends, so until any queued rest completes.
            let queued = try stream.write(unsafeBytes: bytes, token: SessionConnection.headerToken)
            if queued > 0 {
                session.perform(session.machine.writeQueued(to: side, share: worker.queueShare(), now: worker.loop.nowMilliseconds))
            }
            return true
        } catch {
            session.log(error)
            session.perform(session.machine.writeFailed(to: side, wasQueued: false, now: worker.loop.nowMilliseconds))
            return false
        }
    }

    override func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        if token == SessionConnection.headerToken {
            // The rest of a PROXY header the socket did not take at once (a new connection's
            // empty send buffer takes it all, so this is rare): no buffer to give back.
            let now = worker.loop.nowMilliseconds
            if status != 0 && status != UVError.cancelled {
                session.log(UVError(status, "write to upstream"))
                session.perform(session.machine.writeFailed(to: side, wasQueued: true, now: now))
            } else {
                session.perform(session.machine.writeCompleted(to: side, cancelled: status != 0, lowWatermark: worker.lowWatermarkBuffers, now: now))
            }
            return
        }
        // Safe: the token is the base address of the buffer send(_:count:) lent to this write.
        let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: token)!)
        let length = buffer.length
        buffer.release()
        worker.bufferReleased()
        let now = worker.loop.nowMilliseconds
        if status == 0 {
            WorkerCounters.add(worker.counters.bytesSent, UInt64(length))
            bytesWritten &+= UInt64(length)
        }
        if status != 0 && status != UVError.cancelled {
            session.log(UVError(status, side == .client ? "write to client" : "write to upstream"))
            session.perform(session.machine.writeFailed(to: side, wasQueued: true, now: now))
        } else {
            session.perform(session.machine.writeCompleted(to: side, cancelled: status != 0, lowWatermark: worker.lowWatermarkBuffers, now: now))
        }
    }

    // MARK: Connecting and ending

    override func stream(_ stream: TCPStream, didConnect status: Int32) {
        session.upstreamDidConnect(status: status)
    }

    override func stream(_ stream: TCPStream, didShutdown status: Int32) {
        session.perform(session.machine.shutdownCompleted(on: side, failed: status < 0 && status != UVError.cancelled,
                                                          now: session.worker.loop.nowMilliseconds))
    }

    override func streamDidClose(_ stream: TCPStream) {
        session.perform(session.machine.closed(side))
    }
}
