import UVLoop

/// One stats connection: the bytes libuv reads go to its `HTTPRequestHandler`, whose answers go
/// to the socket, in order; the handler's decisions end the connection (flush, half-close,
/// close).
final class HTTPConnection: TCPStreamDelegate {
    private enum State: Equatable {
        /// Reading requests, writing answers.
        case open
        /// No more requests: queued answers go out, then a FIN (the shutdown), then the close.
        case finishing
        /// uv_close is called; the stream's close callback follows.
        case closed
    }

    unowned(unsafe) let endpoint: StatsLoop  // Safe: the loop owns its connections and outlives them.
    let stream: TCPStream
    let handler: HTTPRequestHandler
    private let readMemory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    /// Answers queued to libuv, by token (their bytes must live until the write completes).
    private var pending: [UInt: UnsafeMutableRawBufferPointer] = [:]
    private var nextToken: UInt = 1
    private var state = State.open
    /// Where the endpoint keeps it in its list of open connections.
    var index = 0
    /// Its place in the order of accepts (the endpoint's tie-break between equally idle ones).
    let serial: UInt64

    init(endpoint: StatsLoop, stream: TCPStream, serial: UInt64, handler: HTTPRequestHandler) {
        self.endpoint = endpoint
        self.stream = stream
        self.serial = serial
        self.handler = handler
        super.init()
        stream.delegate = self
    }

    deinit {
        readMemory.deallocate()
        for (_, bytes) in pending { bytes.deallocate() }
    }

    func start() {
        do { try stream.startReading() } catch { close() }
    }

    /// Since when the connection has been idle, when it may be evicted for a new one: open, no
    /// request bytes since its last answer, nothing left to write. Nil otherwise.
    var evictableSince: UInt64? {
        state == .open && pending.isEmpty ? handler.idleSince : nil
    }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        readMemory
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard count > 0 else {
            if count == Int(UVError.endOfFile) && (state != .open || !pending.isEmpty) {
                // The client finished sending (a half-close): answers already queued still go
                // out, then the connection closes (finish: shutdown after the queued writes;
                // if a shutdown is under way already, its completion closes).
                handler.endOfInput()
                finish()
            } else if count < 0 {
                close()  // an error, or EOF with nothing left to send
            }
            return
        }
        guard state == .open else { return }  // a final answer is on its way; ignore the rest
        // Safe: libuv filled the first `count` bytes of `buffer` (readMemory, ours) for this call.
        perform(handler.receive(UnsafeRawBufferPointer(rebasing: buffer[..<count]), now: stream.loop.nowMilliseconds))
    }

    /// The endpoint's sweep: the handler's deadlines.
    func checkTimeout(now: UInt64) {
        if let action = handler.timeout(now: now) { perform(action) }
    }

    private func perform(_ action: HTTPRequestHandler.Action) {
        switch action {
        case .write(let bytes):
            write(bytes)
        case .writeAndFinish(let bytes):
            write(bytes)
            finish()
        case .close:
            close()
        }
    }

    // MARK: Writing and closing

    private func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty, state != .closed else { return }
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        memory.copyBytes(from: bytes)
        let token = nextToken
        nextToken += 1
        do {
            // Safe: `memory` stays allocated and untouched until the completion for `token`.
            let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(memory), token: token)
            if queued == 0 { memory.deallocate() } else { pending[token] = memory }
        } catch {
            memory.deallocate()
            close()
        }
    }

    override func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        pending.removeValue(forKey: token)?.deallocate()
        if status < 0 { close() }
    }

    /// No more requests: flush, send FIN, and close once the flush is done.
    private func finish() {
        guard state == .open else { return }
        state = .finishing
        do { try stream.shutdown() } catch { close() }
    }

    override func stream(_ stream: TCPStream, didShutdown status: Int32) {
        close()
    }

    /// Closes at once (queued answers are dropped). Also the endpoint's eviction and stop.
    func close() {
        guard state != .closed else { return }
        state = .closed
        stream.close()
        endpoint.connectionIsClosing(self)
    }

    override func streamDidClose(_ stream: TCPStream) {
        endpoint.connectionDidClose(self)
    }
}
