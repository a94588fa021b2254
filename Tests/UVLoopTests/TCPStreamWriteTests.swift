import TestSupport
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `TCPStream.write(unsafeBytes:token:)` (uv_try_write first, the rest queued), closing with
/// writes queued, and `reopen()`, against a plain blocking socket on 127.0.0.1 as the peer.
@Suite struct TCPStreamWriteTests {
    /// Bytes whose every position differs from its neighbours', so a lost or repeated slice shows.
    static func pattern(_ count: Int, seed: Int = 0) -> UnsafeMutableRawBufferPointer {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
        for index in 0..<count { bytes[index] = UInt8(truncatingIfNeeded: (index &+ seed) &* 7 &+ (index >> 11)) }
        return bytes
    }

    /// Connects `stream` to `peer` and accepts on the peer's side; returns the peer's socket.
    static func connect(_ stream: TCPStream, _ recorder: WriteRecorder, to peer: borrowing BlockingPeer, on loop: EventLoop) throws -> Int32 {
        try stream.connect(to: SocketAddress(host: "127.0.0.1", port: peer.port))
        while recorder.connectStatus == nil { loop.runOnce() }
        try #require(recorder.connectStatus == 0)
        return try peer.accept()
    }

    @Test func writeTheSocketTakesWhole_returnsZeroQueued_andNoCompletionComes() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer()
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        let socket = try Self.connect(stream, recorder, to: peer, on: loop)
        defer { close(socket) }
        let bytes = Self.pattern(1000)
        defer { bytes.deallocate() }
        let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(bytes), token: 7)
        #expect(queued == 0)
        #expect(stream.queuedWriteBytes == 0)
        #expect(BlockingPeer.read(socket, count: bytes.count) == Array(bytes))  // already in the kernel
        // A queued write always reports, at the latest (cancelled) before the close callback:
        // no report by then means nothing was queued.
        stream.close()
        loop.run()
        #expect(recorder.closed)
        #expect(recorder.completions.isEmpty)
    }

    @Test func writeToAPeerThatDoesNotRead_isQueued_andCompletesOnceThePeerReads() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer(receiveBuffer: 4096)
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        let socket = try Self.connect(stream, recorder, to: peer, on: loop)
        defer { close(socket) }
        // Far more than the socket buffers can hold (the sender's grows to 4 MiB at most here).
        let count = 16 << 20
        let bytes = Self.pattern(count)
        defer { bytes.deallocate() }
        let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(bytes), token: 42)
        #expect(queued > 0 && queued <= count)
        for _ in 0..<10 { loop.runOnce(wait: false) }
        #expect(recorder.completions.isEmpty, "completed while the peer had read nothing")
        #expect(stream.queuedWriteBytes > 0)
        // Now the peer reads everything, on its own thread, while the loop writes the rest.
        let received = Latch<[UInt8]>()
        let reader = ThreadHandle.start { received.set(BlockingPeer.read(socket, count: count)) }
        defer { reader.join() }
        let watchdog = try Timer(loop: loop)
        recorder.onWrite = { _, _ in watchdog.close() }
        watchdog.start(after: 60_000) { timer in  // a hang fails the test instead of the run
            stream.close()
            timer.close()
        }
        while recorder.completions.isEmpty && !watchdog.isClosing { loop.runOnce() }
        try #require(recorder.completions.count == 1)
        #expect(recorder.completions[0].token == 42)
        #expect(recorder.completions[0].status == 0)
        #expect(stream.queuedWriteBytes == 0)
        #expect(received.wait() == Array(bytes))
        stream.close()
        loop.run()
    }

    @Test func closeWithWritesQueued_reportsEveryTokenOnceAsCancelled() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer(receiveBuffer: 4096)
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        let socket = try Self.connect(stream, recorder, to: peer, on: loop)
        defer { close(socket) }
        let count = 8 << 20
        let bytes = Self.pattern(count)
        defer { bytes.deallocate() }
        var queued: [Int] = []
        for token in UInt(1)...3 {
            queued.append(try stream.write(unsafeBytes: UnsafeRawBufferPointer(bytes), token: token))
        }
        #expect(queued[0] > 0)
        #expect(queued[1] == count && queued[2] == count)  // behind a queued write: all queued
        loop.runOnce(wait: false)
        #expect(recorder.completions.isEmpty)
        stream.close()
        loop.run()
        #expect(recorder.completions.map(\.token) == [1, 2, 3])
        #expect(recorder.completions.allSatisfy { $0.status == UVError.cancelled })
        #expect(recorder.completionsAfterClose == 0)  // all before the close callback
        #expect(recorder.closed)
    }

    @Test func reopenedStream_connectsAndExchangesBytes() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer()
        let stream = try TCPStream(loop: loop)
        stream.close()
        loop.run()
        #expect(stream.isClosed)
        try stream.reopen()
        #expect(!stream.isClosed && !stream.isClosing)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        let socket = try Self.connect(stream, recorder, to: peer, on: loop)
        defer { close(socket) }
        try Self.exchange(stream, recorder, socket, on: loop)
    }

    @Test func reopenedStream_acceptsAndExchangesBytes() throws {
        let loop = try EventLoop()
        let stream = try TCPStream(loop: loop)
        stream.close()
        loop.run()
        try stream.reopen()
        let listener = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
        let accepting = Acceptor(stream)
        listener.delegate = accepting
        let socket = try BlockingPeer.connect(port: listener.localAddress.port)
        defer { close(socket) }
        while accepting.accepted == nil && accepting.error == nil { loop.runOnce() }
        #expect(accepting.error == nil)
        #expect(accepting.accepted === stream)  // the reopened object, not a new one
        listener.close()
        let recorder = WriteRecorder()
        stream.delegate = recorder
        try Self.exchange(stream, recorder, socket, on: loop)
    }

    /// Reading started with the connect (as the relay does for its upstream connections): no
    /// read comes before the connect callback, bytes are read after it, and starting again is
    /// a no-op, not an error.
    @Test func readingStartedWithTheConnect_readsOnlyAfterIt_andStartingAgainIsANoOp() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer()
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        try stream.connect(to: SocketAddress(host: "127.0.0.1", port: peer.port))
        try stream.startReading()
        try stream.startReading()  // already reading: nothing happens
        // On loopback the handshake is done in connect(): the peer accepts and writes before
        // the loop's first poll, which then finds the socket writable and readable at once.
        let socket = try peer.accept()
        defer { close(socket) }
        _ = "pong".withCString { Glibc.write(socket, $0, 4) }
        while recorder.connectStatus == nil { loop.runOnce() }
        #expect(recorder.connectStatus == 0)
        #expect(recorder.readsBeforeConnect == 0)
        try stream.startReading()  // as the session does once connected
        while recorder.received.count < 4 && recorder.readError == nil { loop.runOnce() }
        #expect(recorder.received == Array("pong".utf8))
        #expect(recorder.readError == nil)
        stream.close()
        loop.run()
        #expect(recorder.closed)
    }

    /// A refused connect with reading started reports the refusal to the connect callback, and
    /// a stream closed in that loop turn, as every session path closes it (a retry or a give-up),
    /// gets no read. (libuv stops watching only for the connect: left open, the hang-up would be
    /// read on a later turn, as ENOTCONN.)
    @Test func readingStartedWithARefusedConnect_reportsOnlyTheRefusal() throws {
        let loop = try EventLoop()
        let port: Int
        do {
            let closedPeer = try BlockingPeer()  // a port that was free a moment ago, now closed
            port = closedPeer.port
        }
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        try stream.connect(to: SocketAddress(host: "127.0.0.1", port: port))
        try stream.startReading()
        while recorder.connectStatus == nil { loop.runOnce() }
        #expect(recorder.connectStatus == Int32(-ECONNREFUSED))  // libuv's codes are -errno on Linux
        stream.close()
        loop.run()
        #expect(recorder.readCalls == 0)
        #expect(recorder.closed)
    }

    /// With nothing queued the FIN goes at once, after every byte written, and no shutdown
    /// callback comes; while connecting, or with writes queued, it does nothing.
    @Test func shutdownIfNothingQueued_sendsTheFINAfterEveryByte_andOnlyWithNothingQueued() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer(receiveBuffer: 4096)
        let stream = try TCPStream(loop: loop)
        let recorder = WriteRecorder()
        stream.delegate = recorder
        try stream.connect(to: SocketAddress(host: "127.0.0.1", port: peer.port))
        #expect(try stream.shutdownIfNothingQueued() == false)  // not connected yet
        while recorder.connectStatus == nil { loop.runOnce() }
        try #require(recorder.connectStatus == 0)
        let socket = try peer.accept()
        defer { close(socket) }
        // A missing FIN fails the read below after 30 s instead of hanging the run.
        var patience = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &patience, socklen_t(MemoryLayout<timeval>.size))
        let count = 16 << 20  // far more than the socket buffers hold: most of it queued
        let bytes = Self.pattern(count)
        defer { bytes.deallocate() }
        let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(bytes), token: 1)
        #expect(queued > 0)
        #expect(try stream.shutdownIfNothingQueued() == false)
        // Every byte, then one more read: 0 is the end of stream; a missing FIN makes it time out
        // (-1) instead.
        let received = Latch<([UInt8], Int)>()
        let reader = ThreadHandle.start {
            let bytes = BlockingPeer.read(socket, count: count)
            var probe: UInt8 = 0
            received.set((bytes, Glibc.read(socket, &probe, 1)))
        }
        defer { reader.join() }
        while recorder.completions.isEmpty { loop.runOnce() }
        #expect(recorder.completions.first?.status == 0)
        #expect(stream.queuedWriteBytes == 0)
        #expect(try stream.shutdownIfNothingQueued() == true)
        let (got, last) = received.wait()
        #expect(got == Array(bytes))
        #expect(last == 0, "the read after the last byte did not see the end of stream")
        for _ in 0..<5 { loop.runOnce(wait: false) }
        #expect(recorder.shutdowns.isEmpty)
        stream.close()
        loop.run()
        #expect(recorder.shutdowns.isEmpty)
        #expect(recorder.closed)
    }

    /// Writes "ping" from `stream`, reads it on `socket`, answers "pong", reads that on `stream`,
    /// then closes the stream.
    static func exchange(_ stream: TCPStream, _ recorder: WriteRecorder, _ socket: Int32, on loop: EventLoop) throws {
        let ping = Array("ping".utf8)
        let queued = try ping.withUnsafeBytes { try stream.write(unsafeBytes: $0, token: 1) }
        #expect(queued == 0)
        #expect(BlockingPeer.read(socket, count: 4) == ping)
        try stream.startReading()
        _ = "pong".withCString { Glibc.write(socket, $0, 4) }
        while recorder.received.count < 4 && recorder.readError == nil { loop.runOnce() }
        #expect(recorder.received == Array("pong".utf8))
        stream.close()
        loop.run()
        #expect(recorder.closed)
    }

    /// The stream calls its delegate without retaining it; a delegate that gives the stream to
    /// another during its own read callback, and that nothing else holds, must live until that
    /// call returns, then go. (Under AddressSanitizer a use after free here is reported.)
    @Test func delegateReplacedDuringItsOwnRead_livesUntilTheCallReturns_thenGoes() throws {
        let loop = try EventLoop()
        let peer = try BlockingPeer()
        let stream = try TCPStream(loop: loop)
        let next = WriteRecorder()
        stream.delegate = next
        let socket = try Self.connect(stream, next, to: peer, on: loop)
        defer { close(socket) }
        let life = HandOff.Life()
        stream.delegate = HandOff(next: next, life: life)  // held by the stream alone
        try stream.startReading()
        _ = "ping".withCString { Glibc.write(socket, $0, 4) }
        while !life.handedOff { loop.runOnce() }
        #expect(!life.deinitializedDuringTheCall)
        #expect(life.deinitialized)  // gone once the call returned
        #expect(life.bytesSeen == 4)
        _ = "pong".withCString { Glibc.write(socket, $0, 4) }
        while next.received.count < 4 && next.readError == nil { loop.runOnce() }
        #expect(next.received == Array("pong".utf8))  // the new delegate reads from now on
        stream.close()
        loop.run()
        #expect(next.closed)
    }

    @Test func reopen_ofAStreamThatIsNotClosed_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = try! EventLoop()
            let stream = try! TCPStream(loop: loop)
            try? stream.reopen()
        }
        Self.expectMessage(result, "only a closed handle can be reopened")
    }

    @Test func reopen_ofAStreamStillClosing_traps() async {
        await #expect(processExitsWith: .failure) {
            let loop = try! EventLoop()
            let stream = try! TCPStream(loop: loop)
            stream.close()  // the close callback has not run yet
            try? stream.reopen()
        }
    }

    /// A closed stream handed to the listener without `reopen()`: libuv would attach the accepted
    /// socket to a handle it no longer tracks (the descriptor then leaks, since `close()` does
    /// nothing on it); TCPListener traps instead.
    @Test func accept_intoAClosedStreamNotReopened_traps() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let loop = try! EventLoop()
            let stream = try! TCPStream(loop: loop)
            stream.close()
            loop.run()  // closed, and not reopened
            let listener = try! TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
            let accepting = Acceptor(stream)
            listener.delegate = accepting
            let socket = try! BlockingPeer.connect(port: listener.localAddress.port)
            defer { close(socket) }
            while accepting.accepted == nil && accepting.error == nil { loop.runOnce() }
        }
        Self.expectMessage(result, "streamForAccept must return an open")
    }

    /// A trap's stderr says `expected`; checked in debug builds only: optimised builds keep the
    /// check but not precondition's message.
    static func expectMessage(_ result: ExitTest.Result?, _ expected: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #if DEBUG
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains(expected), "stderr: \(stderr.prefix(400))", sourceLocation: sourceLocation)
        #else
        _ = result
        #endif
    }
}

/// Records what a stream reports.
final class WriteRecorder: TCPStreamDelegate {
    var connectStatus: Int32?
    var completions: [(token: UInt, status: Int32)] = []
    var completionsAfterClose = 0
    var closed = false
    var received: [UInt8] = []
    var readError: Int?
    var onWrite: ((UInt, Int32) -> Void)?
    var readCalls = 0
    /// `readCalls` when the connect callback came.
    var readsBeforeConnect: Int?
    var shutdowns: [Int32] = []
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    deinit { memory.deallocate() }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer { memory }
    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        readCalls += 1
        if count > 0 {
            received += buffer[0..<count]
        } else if count < 0 {
            readError = count
        }
    }
    override func stream(_ stream: TCPStream, didConnect status: Int32) {
        connectStatus = status
        readsBeforeConnect = readCalls
    }
    override func stream(_ stream: TCPStream, didShutdown status: Int32) { shutdowns.append(status) }
    override func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        if closed { completionsAfterClose += 1 }
        completions.append((token, status))
        onWrite?(token, status)
    }
    override func streamDidClose(_ stream: TCPStream) { closed = true }
}

/// On its first read, gives the stream to `next`, then reads and writes its own state.
final class HandOff: TCPStreamDelegate {
    final class Life {
        var handedOff = false
        var deinitialized = false
        var deinitializedDuringTheCall = false
        var bytesSeen = 0
    }
    let next: WriteRecorder
    let life: Life
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)

    init(next: WriteRecorder, life: Life) {
        self.next = next
        self.life = life
    }

    deinit {
        memory.deallocate()
        life.deinitialized = true
    }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer { memory }
    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        stream.delegate = next  // the stream's reference to this object goes here
        life.deinitializedDuringTheCall = life.deinitialized
        life.bytesSeen = max(count, 0)
        life.handedOff = true
    }
}

/// Hands the listener one given stream to accept into.
final class Acceptor: TCPListenerDelegate {
    let stream: TCPStream
    var accepted: TCPStream?
    var error: UVError?
    init(_ stream: TCPStream) { self.stream = stream }
    func streamForAccept(_ listener: TCPListener) throws(UVError) -> TCPStream { stream }
    func listener(_ listener: TCPListener, didAccept stream: TCPStream) { accepted = stream }
    func listener(_ listener: TCPListener, acceptFailed error: UVError) { self.error = error }
}

/// The in-process peer: a plain blocking TCP socket on 127.0.0.1.
struct BlockingPeer: ~Copyable {
    let listening: Int32
    let port: Int

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Listens on 127.0.0.1 on a free port; `receiveBuffer` (SO_RCVBUF, set before listening so
    /// accepted sockets inherit it and the window is small from the handshake on) keeps what the
    /// peer takes without reading small.
    init(receiveBuffer: Int32? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        if var size = receiveBuffer {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = BlockingPeer.loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            // Safe: a sockaddr_in begins with the sockaddr header; bind and getsockname use
            // `length` bytes of it at most.
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(fd, raw, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else {
            Glibc.close(fd)
            throw Failure(description: "bind/listen: errno \(errno)")
        }
        listening = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { Glibc.close(listening) }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// Accepts one connection (blocking).
    func accept() throws -> Int32 {
        let socket = Glibc.accept(listening, nil, nil)
        guard socket >= 0 else { throw Failure(description: "accept: errno \(errno)") }
        return socket
    }

    /// A blocking client socket connected to 127.0.0.1:`port`.
    static func connect(port: Int) throws -> Int32 {
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(port: port)
        let status = withUnsafePointer(to: &address) { pointer in
            // Safe: a sockaddr_in begins with the sockaddr header; connect reads it for the call only.
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard socket >= 0, status == 0 else {
            if socket >= 0 { Glibc.close(socket) }
            throw Failure(description: "connect: errno \(errno)")
        }
        return socket
    }

    /// Reads exactly `count` bytes (fewer if the stream ends or fails first).
    static func read(_ socket: Int32, count: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            initialized = 0
            while initialized < count {
                // Safe: the read stays within the buffer's `count` bytes, after the ones already read.
                let got = Glibc.read(socket, buffer.baseAddress! + initialized, count - initialized)
                if got > 0 {
                    initialized += got
                } else if got < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
        }
    }
}
