import TestSupport
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The libuv layer's pieces the load client does not exercise by itself: errors, signals,
/// the cross-thread wake-up, shutdown with end-of-stream, and listening on a taken port.
@Suite struct UVLoopTests {
    @Test func errors_carryCodeNameAndMessage() {
        let error = UVError(-111, "connect 127.0.0.1:1")
        #expect(error.name == "ECONNREFUSED")
        #expect(error.message == "connection refused")
        #expect(error.description == "connect 127.0.0.1:1: ECONNREFUSED (connection refused)")
    }

    @Test func signalWatcher_runsOnTheLoop() throws {
        let loop = try EventLoop()
        var received: Int32 = 0
        let watcher = try SignalWatcher(loop: loop, signal: SIGUSR1) { watcher, number in
            received = number
            watcher.close()
        }
        let kick = try Timer(loop: loop)
        kick.start(after: 1) { timer in
            kill(getpid(), SIGUSR1)  // to the process: a test thread may block signals
            timer.close()
        }
        loop.run()
        #expect(received == SIGUSR1)
        #expect(watcher.isClosing)
    }

    @Test func preciseTimer_firesNoEarlierThanItsDeadline_andCanBeArmedAgain() throws {
        let loop = try EventLoop()
        var deadlines: [UInt64] = []
        var fired: [UInt64] = []
        let timer = try PreciseTimer(loop: loop) { timer in
            fired.append(EventLoop.hrtime())
            #expect(timer.deadline == 0)  // one-shot: fired means disarmed
            if fired.count == 3 {
                timer.close()
            } else {
                deadlines.append(EventLoop.hrtime() + 300_000)
                timer.arm(at: deadlines.last!)
            }
        }
        deadlines.append(EventLoop.hrtime() + 300_000)
        timer.arm(at: deadlines.last!)
        #expect(timer.deadline == deadlines[0])
        loop.run()
        #expect(fired.count == 3)
        for (deadline, time) in zip(deadlines, fired) { #expect(time >= deadline) }
    }

    @Test func preciseTimer_rearmingReplacesTheDeadline_andDisarmStopsIt() throws {
        let loop = try EventLoop()
        let far = EventLoop.hrtime() + 600 * 1_000_000_000
        var firedAt: UInt64 = 0
        let replaced = try PreciseTimer(loop: loop) { timer in
            firedAt = EventLoop.hrtime()
            timer.close()
        }
        replaced.arm(at: far)
        replaced.arm(at: 1)  // long past: fires on the loop's first turn, not in ten minutes
        var disarmedFired = false
        let disarmed = try PreciseTimer(loop: loop) { _ in disarmedFired = true }
        disarmed.arm(at: 1)
        disarmed.disarm()
        #expect(disarmed.deadline == 0)
        let end = try Timer(loop: loop)
        end.start(after: 20) { timer in  // well after a past deadline would have fired
            disarmed.close()
            timer.close()
        }
        loop.run()
        #expect(firedAt > 0 && firedAt < far)
        #expect(!disarmedFired)
    }

    @Test func asyncWake_fromAnotherThread_runsOnTheLoopThread() throws {
        let loop = try EventLoop()
        let loopThread = pthread_self()
        var ranOnLoopThread = false
        let wake = try AsyncWake(loop: loop) { wake in
            ranOnLoopThread = pthread_equal(pthread_self(), loopThread) != 0
            wake.close()
        }
        let sender = ThreadHandle.start { wake.send() }
        loop.run()  // returns once the wake-up ran and closed its handle
        sender.join()
        #expect(ranOnLoopThread)
    }

    @Test func shutdown_deliversEndOfStreamToThePeer() throws {
        let loop = try EventLoop()
        let listener = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
        let server = Recorder()
        listener.delegate = server
        let client = try TCPStream(loop: loop)
        let clientSide = Recorder()
        client.delegate = clientSide
        clientSide.onConnect = { stream in
            "hello".utf8CString.withUnsafeBytes { bytes in
                _ = try? stream.write(unsafeBytes: UnsafeRawBufferPointer(rebasing: bytes.dropLast()), token: 1)
            }
            try? stream.shutdown()
        }
        server.onEnd = { stream in
            stream.close()
            client.close()
            listener.close()
        }
        try client.connect(to: listener.localAddress)
        loop.run()
        #expect(String(decoding: server.bytes, as: UTF8.self) == "hello")
        #expect(server.sawEnd)
        #expect(clientSide.shutdownStatus == 0)
    }

    /// libuv runs expired timers before it polls: a loop that stalls in a callback past a
    /// deadline runs a plain timer before it sees a connect that completed meanwhile. A
    /// `PostPollTimer` (the server's timeout sweep) runs after that poll and sees it.
    @Test func postPollTimer_judgesADeadlineAfterTheEventsThatWereReady() throws {
        let loop = try EventLoop()
        let listener = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
        let server = Recorder()
        listener.delegate = server
        let client = try TCPStream(loop: loop)
        let clientSide = Recorder()
        client.delegate = clientSide
        var connected = false
        clientSide.onConnect = { _ in connected = true }
        var connectError: UVError?
        var plainSaw: Bool?
        var postPollSaw: Bool?
        let plain = try Timer(loop: loop)
        let deadline = try PostPollTimer(loop: loop)
        var handles: [Handle] = []
        func closeAll() {
            for stream in server.accepted { stream.close() }
            for handle in handles { handle.close() }
            deadline.close()
        }
        // Bounds the test if the post-poll timer never runs (its poll blocking for good).
        var watchdogFired = false
        let watchdog = try Timer(loop: loop)
        watchdog.start(after: 30_000) { _ in
            watchdogFired = true
            closeAll()
        }
        // Stalls in an I/O callback (a PreciseTimer is a watched timerfd) that starts the connect:
        // its completion can only be delivered by the next poll.
        let stall = try PreciseTimer(loop: loop) { _ in
            do throws(UVError) {
                try client.connect(to: listener.localAddress)
            } catch {
                connectError = error
            }
            plain.start(after: 20) { _ in plainSaw = connected }
            deadline.start(after: 20) {
                postPollSaw = connected
                closeAll()
            }
            // The stall lasts past both deadlines and until the kernel has completed the
            // handshake (the connection waits in the listener's accept queue), 10 s at most.
            let start = EventLoop.hrtime()
            var listening = pollfd(fd: listener.descriptor ?? -1, events: Int16(POLLIN), revents: 0)
            while EventLoop.hrtime() - start < 50_000_000
                    || (poll(&listening, 1, 0) == 0 && EventLoop.hrtime() - start < 10_000_000_000) {}
        }
        handles = [client, listener, plain, watchdog, stall]
        stall.arm(at: EventLoop.hrtime())
        loop.run()
        #expect(!watchdogFired, "the post-poll timer ran within 30 s")
        #expect(connectError == nil)
        #expect(plainSaw == false, "libuv's order: a plain timer is judged before the poll")
        #expect(postPollSaw == true, "the post-poll timer saw the connect that completed in time")
    }

    /// The poll after an expiry does not block (an idle handle is active until the body ran): the
    /// body runs at its deadline, not a whole period later when the next timer wakes the loop.
    @Test func postPollTimer_onAnIdleLoop_runsAtItsDeadline_notAPeriodLate() throws {
        let loop = try EventLoop()
        let timer = try PostPollTimer(loop: loop)
        let started = EventLoop.hrtime()
        var ranAfter: UInt64?
        timer.start(after: 5, repeat: 60_000) {
            ranAfter = EventLoop.hrtime() - started
            timer.close()
        }
        loop.run()
        let elapsed = try #require(ranAfter)
        #expect(elapsed < 30_000_000_000, "ran after \(elapsed / 1_000_000) ms: waited for the next period")
    }

    /// Stopped between its expiry and the check phase (by a timer due at the same time, which
    /// libuv runs after it): the waiting run does not happen.
    @Test func postPollTimer_stoppedAfterItsExpiry_doesNotRun() throws {
        let loop = try EventLoop()
        let timer = try PostPollTimer(loop: loop)
        var ran = false
        timer.start(after: 5) { ran = true }
        let stopper = try Timer(loop: loop)
        stopper.start(after: 5) { _ in timer.stop() }  // started second: runs second
        let end = try Timer(loop: loop)
        end.start(after: 40) { end in
            end.close()
            stopper.close()
            timer.close()
        }
        loop.run()
        #expect(!ran)
    }

    /// Restarted from inside its own body with another period and body (as a reload does with
    /// the timeout sweep): the new body runs, at the new period.
    @Test func postPollTimer_restartedFromItsBody_runsTheNewBody() throws {
        let loop = try EventLoop()
        let timer = try PostPollTimer(loop: loop)
        var runs: [String] = []
        timer.start(after: 1, repeat: 60_000) {
            runs.append("first")
            timer.start(after: 2, repeat: 2) {
                runs.append("second")
                if runs.count == 3 { timer.close() }
            }
        }
        loop.run()
        #expect(runs == ["first", "second", "second"])
    }

    @Test func listeningOnATakenPort_failsWithEADDRINUSE() throws {
        let loop = try EventLoop()
        let first = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
        defer {
            first.close()
            loop.run()
        }
        #expect(throws: UVError.self) {
            _ = try TCPListener(loop: loop, address: first.localAddress)
        }
        do {
            _ = try TCPListener(loop: loop, address: first.localAddress)
        } catch {
            #expect(error.name == "EADDRINUSE")
        }
    }

    @Test func reusePort_letsTwoListenersShareAnAddress() throws {
        let loop = try EventLoop()
        let first = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0), reusePort: true)
        let second = try TCPListener(loop: loop, address: first.localAddress, reusePort: true)
        #expect(second.localAddress == first.localAddress)
        first.close()
        second.close()
        loop.run()
    }
}

/// Records what a stream or listener sees.
final class Recorder: TCPStreamDelegate, TCPListenerDelegate {
    var bytes: [UInt8] = []
    var sawEnd = false
    var shutdownStatus: Int32?
    var onConnect: ((TCPStream) -> Void)?
    var onEnd: ((TCPStream) -> Void)?
    /// The streams a listener accepted, to close at the end.
    var accepted: [TCPStream] = []
    let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    deinit { memory.deallocate() }

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        accepted.append(stream)
        stream.delegate = self
        try? stream.startReading()
    }
    func listener(_ listener: TCPListener, acceptFailed error: UVError) {}

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer { memory }
    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        if count > 0 {
            bytes += buffer[0..<count]
        } else if count == Int(UVError.endOfFile) {
            sawEnd = true
            onEnd?(stream)
        }
    }
    override func stream(_ stream: TCPStream, didConnect status: Int32) {
        if status == 0 { onConnect?(stream) }
    }
    override func stream(_ stream: TCPStream, didShutdown status: Int32) { shutdownStatus = status }
}
