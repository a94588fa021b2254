import LoadClient
import PacketBuffers
import ServerCore
import Synchronization
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Echo mode end to end: in-process servers on 127.0.0.1, real sockets, bounded runs.
@Suite struct EchoServerTests {
    func fixedCount(_ server: Server, connections: Int, size: Int, depth: Int = 1, messages: Int) -> LoadConfig {
        var load = LoadConfig(target: server.address)
        load.connections = connections
        load.size = size
        load.depth = depth
        load.messagesPerConnection = messages
        load.threads = 1
        return load
    }

    @Test(arguments: [1, 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 200_000, 1 << 20])
    func echo_returnsEveryByteInOrder(size: Int) throws {
        let server = try startServer()
        let messages = size >= 200_000 ? 4 : 50
        let report = try runLoad(fixedCount(server, connections: 4, size: size, depth: 2, messages: messages))
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 4 * messages)
        #expect(report.mismatchedBytes == 0)
        let final = finish(server)
        #expect(final.bytesReceived == UInt64(4 * messages * size))
        #expect(final.bytesSent == final.bytesReceived)
    }

    @Test func echo_plainSocket_halfClose_getsEverythingThenEOF() throws {
        let server = try startServer()
        let socket = try TestSocket(connectingTo: server.address)
        let sent = pattern(300_000)
        try socket.sendAll(sent)
        socket.shutdownWrite()  // EOF from the client: the server flushes, then ends its side
        let received = try socket.receiveUntilEOF()
        #expect(received == sent)
        socket.close()
        finish(server)
    }

    @Test func manyConnections_spreadOverWorkers() throws {
        let server = try startServer()
        let report = try runLoad(fixedCount(server, connections: 200, size: 64, messages: 20))
        #expect(report.succeeded, "\(report.summary())")
        let final = finish(server)
        #expect(final.connectionsAccepted == 200)
        // SO_REUSEPORT hashes connections over the workers' listeners: with 200 connections
        // each of the 2 workers gets some (all on one would happen with probability 2^-199).
        for worker in final.workers { #expect(worker.connectionsAccepted > 0, "worker \(worker.worker)") }
    }

    @Test func poolExhaustion_slowsReaders_neverLosesBytes() throws {
        // 1 KiB buffers: 2 per worker and an overflow pool of at most 4, so 8 in all. A buffer
        // is held only while its write is queued, so clients that send and never read (with a
        // small receive buffer) are what holds them. Each such client's share shrinks as the
        // pools fill (to 1 buffer, and none of the reserve), so only more of them than there
        // are buffers can empty the pools: 12 of them.
        let server = try startServer { config in
            config.buffers = try PacketBufferConfig(bufferSize: 1024, localBuffers: 2, overflowInitial: 1,
                                                    overflowGrowth: .linear(1), overflowMax: 4)
            config.highWatermark = 4096
            config.lowWatermark = 1024
        }
        var hogs: [TestSocket] = []
        for _ in 0..<12 {
            let hog = try TestSocket(connectingTo: server.address, receiveBuffer: 2048)
            hog.setTimeout(0.3)
            let chunk = pattern(16 * 1024)
            for _ in 0..<(16 << 20) / chunk.count {  // until the server stops reading it
                guard (try? hog.sendAll(chunk)) != nil else { break }
            }
            hogs.append(hog)
        }
        let held = server.statistics()
        #expect(held.buffers.workers.reduce(0) { $0 + $1.failedDraws } > 0, "the pools ran dry: \(held.buffers)")
        #expect(held.bufferWaits > 0, "and readers waited")
        #expect(held.buffers.overflow.capacity <= 4)
        // Another client now finds no buffer until the hogs let go; its bytes are late, not lost.
        let report = loadWhileHogsLetGo(server.address, hogs: hogs)
        #expect(report?.succeeded == true, "\(report?.summary() ?? "no report")")
        #expect(report?.messages == 80)
        finish(server)
    }

    @Test func clientThatNeverReads_isBounded_andOthersAreServed() throws {
        let server = try startServer { config in
            config.highWatermark = 64 * 1024
            config.lowWatermark = 16 * 1024
        }
        // Send until the kernel and the server refuse more (send times out): the server must
        // stop reading this client instead of queueing without end.
        let hog = try TestSocket(connectingTo: server.address)
        hog.setTimeout(0.5)
        let chunk = pattern(64 * 1024)
        var sent = 0
        while sent < 256 << 20 {
            do { try hog.sendAll(chunk) } catch { break }
            sent += chunk.count
        }
        #expect(sent < 256 << 20, "the server kept reading a client that never reads")
        let during = server.statistics()
        // The hog holds at most the high watermark in queued buffers (+1 being written).
        #expect(during.buffers.totalInUse <= 64 / 16 + 2, "buffers held: \(during.buffers.totalInUse)")
        #expect(during.backpressurePauses >= 1)
        // Meanwhile other clients are served.
        let report = try runLoad(fixedCount(server, connections: 8, size: 512, messages: 50))
        #expect(report.succeeded, "\(report.summary())")
        hog.reset()
        finish(server)
    }

    @Test func maxConnections_closesTheExtraAtOnce_andCountsIt() throws {
        let server = try startServer { $0.maxConnections = 3 }
        var open: [TestSocket] = []
        for index in 0..<3 {
            let socket = try TestSocket(connectingTo: server.address)
            try socket.sendAll([UInt8(index)])
            #expect(try socket.receive(exactly: 1) == [UInt8(index)])  // accepted and served
            open.append(socket)
        }
        let extra = try TestSocket(connectingTo: server.address)
        // Closed at once: EOF (or a reset) without any byte.
        #expect(throws: (any Error).self) { _ = try extra.receive(exactly: 1) }
        #expect(server.statistics().connectionsRejected == 1)
        // Closing one makes room again.
        open.removeLast().close()
        var admitted = false
        for _ in 0..<200 where !admitted {  // the close reaches the worker asynchronously
            let again = try TestSocket(connectingTo: server.address)
            if (try? again.sendAll([9])) != nil, (try? again.receive(exactly: 1)) == [9] { admitted = true }
        }
        #expect(admitted)
        open.removeAll()
        finish(server)
    }

    @Test func idleTimeout_closesASilentConnection() throws {
        let server = try startServer { $0.idleTimeout = 0.2 }
        let socket = try TestSocket(connectingTo: server.address)
        let start = EventLoop.hrtime()
        let received = try socket.receiveUntilEOF()  // the server closes it
        let waited = Double(EventLoop.hrtime() - start) / 1e9
        #expect(received.isEmpty)
        #expect(waited >= 0.19, "closed after \(waited) s, before the idle timeout")
        #expect(server.statistics().idleTimeouts == 1)
        finish(server)
    }
}
