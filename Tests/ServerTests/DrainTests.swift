import PacketBuffers
@testable import ServerCore
import Synchronization
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a reader thread saw: every byte until the stream ended, and how it ended.
struct ReadOutcome: Sendable {
    var bytes: [UInt8] = []
    /// 0 for a clean end of stream (EOF), else the errno of the failed read.
    var error: Int32 = 0
}

/// Reads `socket` on a new thread until EOF or an error; `progress` hears of bytes as they come.
func readUntilEnd(_ socket: TestSocket, progress: (@Sendable (Int) -> Void)? = nil) -> (ThreadHandle, Latch<ReadOutcome>) {
    let result = Latch<ReadOutcome>()
    let thread = ThreadHandle.start {
        var outcome = ReadOutcome()
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = chunk.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
            if got == 0 { break }
            if got < 0 {
                outcome.error = errno
                break
            }
            outcome.bytes.append(contentsOf: chunk[0..<got])
            progress?(got)
        }
        result.set(outcome)
    }
    return (thread, result)
}

/// An upstream that echoes what it reads, records all of it, and closes after the relay's EOF.
final class RecordingEchoUpstream: @unchecked Sendable {
    let listener: TestListener
    let received = Latch<ReadOutcome>()
    private var thread: ThreadHandle?
    /// The accepted connection, for tests that inspect how it ended.
    let accepted = Latch<TestSocket?>()

    init(echo: Bool = true) throws {
        listener = try TestListener()
        let listener = self.listener
        let received = self.received
        let accepted = self.accepted
        thread = ThreadHandle.start {
            guard let socket = try? listener.accept() else {
                accepted.set(nil)
                received.set(ReadOutcome(error: ETIMEDOUT))
                return
            }
            socket.setTimeout(30)
            accepted.set(socket)
            var outcome = ReadOutcome()
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let got = chunk.withUnsafeMutableBytes { recv(socket.fd, $0.baseAddress!, $0.count, 0) }
                if got == 0 { break }
                if got < 0 {
                    outcome.error = errno
                    break
                }
                outcome.bytes.append(contentsOf: chunk[0..<got])
                if echo, (try? socket.sendAll(Array(chunk[0..<got]))) == nil { break }
            }
            if outcome.error == 0 { socket.shutdownWrite() }
            received.set(outcome)
        }
    }

    var address: SocketAddress { listener.address }

    func join() {
        thread?.join()
        thread = nil
    }
}

/// SIGTERM's drain (`Server.drain()`): streams in flight finish whole, both ways; what is still
/// open at the deadline is reset on both sides, never ended with a clean FIN.
@Suite struct DrainTests {
    /// Sends `stream` on `socket` in slices; once `trigger` bytes have come back, drains the
    /// server (once) and goes on sending to the end, then half-closes.
    func send(_ stream: [UInt8], on socket: TestSocket, echoed: borrowing Atomic<Int>, drainAfter trigger: Int, _ server: Server) throws {
        var offset = 0
        var drained = false
        let deadline = EventLoop.hrtime() + 20_000_000_000
        while offset < stream.count {
            let end = min(offset + 65536, stream.count)
            try socket.sendAll(Array(stream[offset..<end]))
            offset = end
            if !drained && offset >= 2 * trigger {
                while echoed.load(ordering: .acquiring) < trigger && EventLoop.hrtime() < deadline { sched_yield() }
                #expect(echoed.load(ordering: .acquiring) >= trigger, "echoes were flowing before the drain")
                server.drain()
                drained = true
            }
        }
        socket.shutdownWrite()
    }

    /// The drain's deadline for the 8 MiB streams: longer than any run of them. Under
    /// ThreadSanitizer on a loaded 2-core CI machine the tests take 60-100 s, and with 60 s a
    /// drain that began early was cut before the stream ended (CI on d4621e6: the client's send
    /// failed with EPIPE). A stalled stream still fails, on the sockets' 30 s timeouts.
    static let longDrain: Double = 600

    @Test func echo_eightMiBInFlightAtTheDrain_allArrive() throws {
        let server = try startServer { $0.drainTimeout = Self.longDrain }
        let socket = try TestSocket(connectingTo: server.address, timeout: 30)
        let stream = pattern(8 << 20, seed: 11)
        let echoed = Atomic<Int>(0)
        let (reader, outcome) = readUntilEnd(socket) { echoed.add($0, ordering: .releasing) }
        try send(stream, on: socket, echoed: echoed, drainAfter: 1 << 20, server)
        reader.join()
        let result = outcome.wait()
        #expect(result.error == 0, "the stream ended with errno \(result.error), not a clean end")
        #expect(result.bytes.count == stream.count, "received \(result.bytes.count) of \(stream.count) bytes")
        #expect(result.bytes == stream, "every byte, in order")
        let final = finish(server)
        #expect(final.drainCompleted == 1)
        #expect(final.drainCut == 0)
    }

    @Test func echo_drainRefusesNewConnections_butTheOpenOneFlows() throws {
        let server = try startServer { $0.drainTimeout = 60 }
        let socket = try TestSocket(connectingTo: server.address)
        try socket.sendAll(pattern(1000))
        #expect(try socket.receive(exactly: 1000) == pattern(1000))
        server.drain()
        #expect(server.statistics().shutdownPhase == .draining, "/readyz answers 503 from now on")
        // The listeners close as each worker enters the drain (asynchronously): bounded poll.
        #expect(eventually(timeout: 10) { (try? TestSocket(connectingTo: server.address)) == nil }, "still accepting")
        try socket.sendAll(pattern(5000, seed: 2))
        #expect(try socket.receive(exactly: 5000) == pattern(5000, seed: 2))
        socket.shutdownWrite()
        #expect(try socket.receiveUntilEOF() == [])
        let final = finish(server)
        #expect(final.connectionsAccepted == 1)
        #expect(final.drainCompleted == 1 && final.drainCut == 0)
    }

    @Test func relay_eightMiBInFlightAtTheDrain_upstreamGetsExactlyWhatWasSent() throws {
        let upstream = try RecordingEchoUpstream()
        let server = try startServer(.relay, upstream: upstream.address) { $0.drainTimeout = Self.longDrain }
        let socket = try TestSocket(connectingTo: server.address, timeout: 30)
        let stream = pattern(8 << 20, seed: 5)
        let echoed = Atomic<Int>(0)
        let (reader, outcome) = readUntilEnd(socket) { echoed.add($0, ordering: .releasing) }
        try send(stream, on: socket, echoed: echoed, drainAfter: 1 << 20, server)
        reader.join()
        upstream.join()
        let atUpstream = upstream.received.wait()
        #expect(atUpstream.error == 0, "the upstream's stream ended with errno \(atUpstream.error)")
        #expect(atUpstream.bytes.count == stream.count, "the upstream received \(atUpstream.bytes.count) of \(stream.count) bytes")
        #expect(atUpstream.bytes == stream, "the upstream received exactly what the client sent")
        let atClient = outcome.wait()
        #expect(atClient.error == 0)
        #expect(atClient.bytes == stream, "and the client got every byte of the upstream's answer")
        let final = finish(server)
        #expect(final.drainCompleted == 1 && final.drainCut == 0)
    }

    @Test func echo_openPastTheDrainTimeout_isReset() throws {
        let server = try startServer { $0.drainTimeout = 1 }
        let socket = try TestSocket(connectingTo: server.address, timeout: 10)
        try socket.sendAll([1, 2, 3])
        #expect(try socket.receive(exactly: 3) == [1, 2, 3])
        let start = EventLoop.hrtime()
        server.drain()
        // The client neither sends nor closes: at the deadline the server resets it.
        let (reader, outcome) = readUntilEnd(socket)
        reader.join()
        let waited = Double(EventLoop.hrtime() - start) / 1e9
        #expect(outcome.wait().error == ECONNRESET, "a cut must be a reset, not a clean end (errno \(outcome.wait().error))")
        #expect(waited >= 0.9, "reset after \(waited) s, before the drain timeout")
        let final = finish(server)
        #expect(final.drainCut == 1 && final.drainCompleted == 0)
    }

    @Test func relay_openPastTheDrainTimeout_resetsClientAndUpstream() throws {
        let upstream = try RecordingEchoUpstream()
        let server = try startServer(.relay, upstream: upstream.address) { $0.drainTimeout = 1 }
        let socket = try TestSocket(connectingTo: server.address, timeout: 10)
        try socket.sendAll(pattern(100))
        #expect(try socket.receive(exactly: 100) == pattern(100))
        server.drain()
        let (reader, outcome) = readUntilEnd(socket)
        reader.join()
        upstream.join()
        #expect(outcome.wait().error == ECONNRESET, "the client saw errno \(outcome.wait().error), not a reset")
        let atUpstream = upstream.received.wait()
        #expect(atUpstream.error == ECONNRESET, "the upstream saw errno \(atUpstream.error), not a reset: a half-sent request would look complete")
        #expect(atUpstream.bytes == pattern(100))
        let final = finish(server)
        #expect(final.drainCut == 1 && final.drainCompleted == 0)
    }

    @Test func drainWithManyConnections_someEndSomeAreCut_everyOneCounted() throws {
        let server = try startServer { $0.drainTimeout = 1 }
        var finishing: [TestSocket] = []
        var lingering: [TestSocket] = []
        for index in 0..<40 {
            let socket = try TestSocket(connectingTo: server.address)
            try socket.sendAll([UInt8(index)])
            #expect(try socket.receive(exactly: 1) == [UInt8(index)])
            if index % 2 == 0 { finishing.append(socket) } else { lingering.append(socket) }
        }
        server.drain()
        for socket in finishing {
            socket.shutdownWrite()
            #expect(try socket.receiveUntilEOF() == [])
        }
        for socket in lingering {
            #expect(throws: SocketError.failed("recv", ECONNRESET)) { try socket.receiveUntilEOF() }
        }
        let final = finish(server)
        #expect(final.drainCompleted == 20)
        #expect(final.drainCut == 20)
    }

    @Test func stopAfterDrain_andDrainAfterStop_keepTheLaterPhase() throws {
        let server = try startServer { $0.drainTimeout = 60 }
        let socket = try TestSocket(connectingTo: server.address)
        try socket.sendAll([7])
        #expect(try socket.receive(exactly: 1) == [7])
        server.stop()
        server.drain()  // must not turn the stop back into a 60 s drain
        let start = EventLoop.hrtime()
        let final = server.wait()
        #expect(Double(EventLoop.hrtime() - start) / 1e9 < 30, "the stop was weakened into a drain")
        #expect(final.shutdownPhase == .stopping)
        #expect(final.connectionsActive == 0)
        #expect(final.buffers.totalInUse == 0)
    }
}
