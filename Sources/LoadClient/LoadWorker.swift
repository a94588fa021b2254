import Histogram
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// One thread's share of the connections, on its own event loop.
final class LoadWorker {
    let job: LoadWorkerJob
    let config: LoadConfig
    let loop: EventLoop
    let ring: PatternRing
    /// Every read lands here: reads are processed before the callback returns, so one buffer
    /// serves every connection of the thread.
    let readBuffer: UnsafeMutableRawBufferPointer
    let warmupEnd: UInt64
    let endTime: UInt64
    var result = LoadWorkerResult()
    var connections: [Connection] = []
    var openConnections = 0
    var stopping = false
    var stoppedAt: UInt64 = 0
    var lastCompletion: UInt64 = 0
    var timers: [Timer] = []
    /// Open loop only: fires when the next message is due.
    var pacer: PreciseTimer?
    /// Open loop: nanoseconds between two messages of one connection.
    let interval: UInt64

    init(job: LoadWorkerJob) throws(UVError) {
        self.job = job
        config = job.config
        ring = job.ring
        loop = try EventLoop()
        readBuffer = .allocate(byteCount: 256 * 1024, alignment: 64)
        // Clamped conversions and saturating sums: no configuration makes these trap.
        let warmupEnd = saturatingAdd(job.startTime, config.warmupNanoseconds)
        self.warmupEnd = warmupEnd
        endTime = config.durationNanoseconds.map { saturatingAdd(warmupEnd, $0) } ?? UInt64.max
        interval = config.intervalNanoseconds
    }

    deinit { readBuffer.deallocate() }

    func run() -> LoadWorkerResult {
        let mine = Array(stride(from: job.index, to: config.connections, by: config.threads))
        let share = UInt64(max(1, mine.count))
        for (position, index) in mine.enumerated() {
            let connection = Connection(index: index, worker: self, depth: config.depth)
            // Open loop: spread the first sends evenly over one interval.
            // interval × position / share, in 128 bits: position < share, so the quotient is
            // below the interval and fits (the product alone may not).
            let offset = share.dividingFullWidth(interval.multipliedFullWidth(by: UInt64(position))).quotient
            connection.nextIntended = saturatingAdd(job.startTime, offset)
            connections.append(connection)
            do {
                let stream = try TCPStream(loop: loop)
                connection.stream = stream
                stream.delegate = connection
                stream.setNoDelay(true)
                try stream.connect(to: config.target)
                openConnections += 1
            } catch {
                connection.stream?.close()
                connection.stream = nil
                fail(connection, connect: true, error)
            }
        }
        startTimers()
        if openConnections == 0 { stop() }
        loop.run()
        // Every connection is closed now: break the worker <-> connection cycle (see
        // `Connection.worker`).
        connections.removeAll()
        result.windowStart = warmupEnd
        result.windowEnd = config.messagesPerConnection != nil ? max(lastCompletion, warmupEnd) : min(stoppedAt, endTime)
        return result
    }

    private func startTimers() {
        do {
            if endTime != UInt64.max {
                let stopTimer = try Timer(loop: loop)
                stopTimer.start(after: (endTime - min(endTime, EventLoop.hrtime())) / 1_000_000 + 1) { [unowned self] _ in stop() }
                timers.append(stopTimer)
            }
            let connectTimer = try Timer(loop: loop)
            connectTimer.start(after: config.connectTimeoutMilliseconds) { [unowned self] timer in
                for connection in connections where !connection.connected && connection.stream != nil {
                    fail(connection, connect: true, UVError.timedOut("connect \(config.target)"))
                }
                timer.close()
            }
            timers.append(connectTimer)
            let progressTimer = try Timer(loop: loop)
            progressTimer.start(after: job.progressMilliseconds, repeat: job.progressMilliseconds) { [unowned self] _ in publish() }
            timers.append(progressTimer)
            if interval > 0 {
                // Paced to the microsecond: a 1 ms libuv timer would send up to a millisecond
                // late, and that lateness would count as latency (it is measured from the
                // intended time).
                let pacer = try PreciseTimer(loop: loop) { [unowned self] _ in sendDue() }
                self.pacer = pacer
                pacer.arm(at: job.startTime)
            }
        } catch {
            result.errors.append("\(error)")
            stop()
        }
    }

    /// Open loop: sends every message whose intended time has come, within each connection's
    /// depth, then arms the pacer for the earliest next one. A connection held back by its depth
    /// sends when an answer frees a slot (`Connection.sendDue(now:)`).
    private func sendDue() {
        let now = EventLoop.hrtime()
        var next = UInt64.max
        for connection in connections where connection.connected && !connection.closed {
            connection.sendDue(now: now)
            if connection.canSend { next = min(next, connection.nextIntended) }
        }
        if next != .max { pacer?.arm(at: next) }
    }

    /// Open loop: messages due within this many nanoseconds go out together, so that at high
    /// rates one wake-up sends several messages instead of one.
    static let pacingWindow: UInt64 = 20_000

    /// Makes sure the pacer fires no later than `instant`.
    func wake(noLaterThan instant: UInt64) {
        guard let pacer, !stopping else { return }
        if pacer.deadline == 0 || instant < pacer.deadline { pacer.arm(at: instant) }
    }

    private func publish() {
        let published = job.published[job.index]
        published.messages.store(result.messages, ordering: .relaxed)
        published.warmupMessages.store(result.warmupMessages, ordering: .relaxed)
        published.p99.store(result.histogram.totalCount > 0 ? result.histogram.valueAtPercentile(99) : 0, ordering: .relaxed)
        guard job.index == 0, let progress = job.progress else { return }
        let now = EventLoop.hrtime()
        let elapsed = Double(now &- job.startTime) / 1e9  // the clock is monotonic: now >= startTime
        if now < warmupEnd {
            // The warm-up's own rate: nothing is measured yet, and "0 msg/s  p99 0 µs" would
            // read as a server that does not answer. (The other threads' counts are as they
            // published them at their last tick, at most one interval old.)
            let messages = job.published.reduce(0) { $0 + $1.warmupMessages.load(ordering: .relaxed) }
            progress(LoadProgress(elapsed: elapsed, warmingUp: true, rate: elapsed > 0 ? Double(messages) / elapsed : 0, p99: 0))
            return
        }
        let measured = Double(now - warmupEnd) / 1e9
        let messages = job.published.reduce(0) { $0 + $1.messages.load(ordering: .relaxed) }
        let p99 = job.published.reduce(UInt64(0)) { max($0, $1.p99.load(ordering: .relaxed)) }
        progress(LoadProgress(elapsed: elapsed, warmingUp: false, rate: measured > 0 ? Double(messages) / measured : 0, p99: p99))
    }

    /// Ends the run: closes every connection and timer; the loop then returns.
    func stop() {
        guard !stopping else { return }
        stopping = true
        stoppedAt = EventLoop.hrtime()
        for connection in connections where !connection.closed { connection.close() }
        for timer in timers where !timer.isClosing { timer.close() }
        pacer?.close()
    }

    /// A connection is done (finished, failed or closed by the peer).
    func connectionClosed() {
        openConnections -= 1
        if openConnections == 0 { stop() }
    }

    func fail(_ connection: Connection, connect: Bool, _ error: UVError) {
        if connect { result.connectFailures += 1 } else if !stopping { result.earlyCloses += 1 }
        if result.errors.count < 10 { result.errors.append("connection \(connection.index): \(error)") }
        if !connection.closed && connection.stream != nil {
            connection.close()
        } else if connection.stream == nil {
            connection.closed = true
        }
    }
}

/// One connection: sends the pattern, checks every echoed byte, times every message.
final class Connection: TCPStreamDelegate {
    let index: Int
    /// Strong, not `unowned`: an unowned reference costs an atomic retain and release at every
    /// use, and `process` uses it per read (perf: about 2 % of the client's CPU at 64 B). The
    /// cycle this makes is broken when the worker's loop returns (`LoadWorker.run`).
    let worker: LoadWorker
    /// The worker's, kept here for the per-message path.
    let ring: PatternRing
    let verifies: Bool
    let closedLoop: Bool
    var stream: TCPStream?
    let depth: Int
    let size: Int
    let limit: Int
    /// Bytes after which a fixed-count connection is done (Int.max: never).
    let limitBytes: Int
    /// Messages written so far; message k is stream bytes k*size ..< (k+1)*size.
    var sent = 0
    /// Echoed bytes received so far.
    var received = 0
    /// Send (or intended send) time of each message in flight, by message number % depth.
    let sendTimes: UnsafeMutablePointer<UInt64>
    var connected = false
    var closed = false
    var nextIntended: UInt64 = 0

    init(index: Int, worker: LoadWorker, depth: Int) {
        self.index = index
        self.worker = worker
        self.depth = depth
        size = worker.config.size
        limit = worker.config.messagesPerConnection ?? Int.max
        limitBytes = worker.config.bytesPerConnection ?? Int.max
        ring = worker.ring
        verifies = worker.config.verify
        closedLoop = worker.interval == 0
        sendTimes = .allocate(capacity: depth)
        sendTimes.initialize(repeating: 0, count: depth)
    }

    deinit { sendTimes.deallocate() }

    var inFlight: Int { sent - received / size }
    var canSend: Bool { !worker.stopping && !closed && inFlight < depth && sent < limit }

    func close() {
        guard !closed else { return }
        closed = true
        stream?.close()
    }

    func send(at time: UInt64) {
        sendTimes[sent % depth] = time
        let window = ring.window(connection: index, offset: sent &* size % PatternRing.period, count: size)
        sent += 1
        do {
            _ = try stream!.write(unsafeBytes: window, token: 0)
        } catch {
            worker.fail(self, connect: false, error)
        }
    }

    // MARK: TCPStreamDelegate

    override func stream(_ stream: TCPStream, didConnect status: Int32) {
        guard !closed else { return }
        guard status >= 0 else {
            worker.fail(self, connect: true, UVError(status, "connect \(worker.config.target)"))
            return
        }
        connected = true
        do {
            try stream.startReading()
        } catch {
            worker.fail(self, connect: false, error)
            return
        }
        let now = EventLoop.hrtime()
        if closedLoop {
            while canSend { send(at: now) }
        } else {
            sendDue(now: now)
            if canSend { worker.wake(noLaterThan: nextIntended) }
        }
    }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        worker.readBuffer
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        if count > 0 {
            // Safe: libuv reports `count` <= the buffer's length bytes read into it.
            process(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        } else if count < 0 {
            if received < sent * size || (sent < limit && !worker.stopping) {
                worker.fail(self, connect: false, UVError(Int32(count), "read (after \(received) bytes)"))
            } else {
                close()
            }
        }
    }

    override func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        if status < 0 && !closed { worker.fail(self, connect: false, UVError(status, "write")) }
    }

    override func streamDidClose(_ stream: TCPStream) {
        self.stream = nil
        worker.connectionClosed()
    }

    /// Checks and counts echoed bytes; completes messages; keeps the pipeline full.
    private func process(_ bytes: UnsafeRawBufferPointer) {
        var bytes = bytes
        let expected = sent &* size - received
        if bytes.count > expected {  // more than was sent: all of the excess is wrong
            worker.noteMismatch(connection: index, offset: received + expected, count: bytes.count - expected)
            bytes = UnsafeRawBufferPointer(rebasing: bytes[0..<expected])  // Safe: expected < bytes.count
        }
        if verifies { verify(bytes) }
        let before = received / size
        received += bytes.count
        let after = received / size
        guard after > before else { return }
        let now = EventLoop.hrtime()
        for message in before..<after {
            worker.complete(latency: now &- sendTimes[message % depth], at: now)
        }
        if received == limitBytes {
            close()
            return
        }
        if closedLoop {
            while canSend { send(at: now) }
        } else if canSend {
            sendDue(now: now)
            if canSend { worker.wake(noLaterThan: nextIntended) }
        }
    }

    /// Open loop: sends the messages whose intended time has come, or comes within
    /// `LoadWorker.pacingWindow`, as far as the depth allows. A message sent early is timed from
    /// when it was really sent, one sent late from when it should have been: a stall of the
    /// client or the server counts, an early send never shortens a latency.
    func sendDue(now: UInt64) {
        while nextIntended <= now &+ LoadWorker.pacingWindow && canSend {
            send(at: min(nextIntended, now))
            nextIntended = saturatingAdd(nextIntended, worker.interval)
        }
    }

    /// Compares against the pattern in windows no longer than a message (the ring's margin).
    private func verify(_ bytes: UnsafeRawBufferPointer) {
        var done = 0
        while done < bytes.count {
            let count = min(size, bytes.count - done)
            let offset = received + done
            let expected = ring.window(connection: index, offset: offset % PatternRing.period, count: count)
            // Safe: done + count <= bytes.count, and the pattern window holds `count` bytes.
            if memcmp(bytes.baseAddress! + done, expected.baseAddress!, count) != 0 {
                var first = -1
                var wrong = 0
                for position in 0..<count where bytes[done + position] != expected[position] {
                    if first < 0 { first = position }
                    wrong += 1
                }
                worker.noteMismatch(connection: index, offset: offset + first, count: wrong)
            }
            done += count
        }
    }
}

extension LoadWorker {
    func noteMismatch(connection: Int, offset: Int, count: Int) {
        result.mismatchedBytes += count
        if result.firstMismatch == nil { result.firstMismatch = (connection, offset) }
    }

    @inline(__always)
    func complete(latency: UInt64, at now: UInt64) {
        lastCompletion = now
        if now < warmupEnd {
            result.warmupMessages += 1
        } else if now <= endTime {
            result.messages += 1
            result.bytes += config.size
            _ = result.histogram.record(latency)
        }
    }
}
