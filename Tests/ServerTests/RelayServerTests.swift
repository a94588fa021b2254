import LoadClient
import PacketBuffers
import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Relay mode end to end: the upstream is an in-process echo server or a plain socket that
/// misbehaves on purpose.
@Suite struct RelayServerTests {
    @Test(arguments: [1, 1000, 16 * 1024 + 7, 1 << 20])
    func relay_toEcho_returnsEveryByte(size: Int) throws {
        let upstream = try startServer(.echo)
        let relay = try startServer(.relay, upstream: upstream.address)
        var load = LoadConfig(target: relay.address)
        load.connections = 4
        load.size = size
        load.depth = 2
        load.messagesPerConnection = size >= 1 << 20 ? 3 : 40
        let report = try runLoad(load)
        #expect(report.succeeded, "\(report.summary())")
        let relayFinal = finish(relay)
        finish(upstream)
        let bytes = UInt64(4 * load.messagesPerConnection! * size)
        // The relay read each byte twice (from the client, from the upstream) and wrote it twice.
        #expect(relayFinal.bytesReceived == 2 * bytes)
        #expect(relayFinal.bytesSent == 2 * bytes)
        #expect(relayFinal.connectionsAccepted == 4)
    }

    @Test func reusedSessionsAndStreams_stayExact() throws {
        // One worker each, so the rounds after the first run on sessions, connections and
        // streams (client and upstream) that the worker kept from the round before.
        let upstream = try startServer(.echo) { $0.workers = 1 }
        let relay = try startServer(.relay, upstream: upstream.address) { $0.workers = 1 }
        for round in 0..<5 {
            var load = LoadConfig(target: relay.address)
            load.connections = 10
            load.size = 700 + round
            load.depth = 2
            load.messagesPerConnection = 20
            load.seed = UInt64(round + 1)
            let report = try runLoad(load)
            #expect(report.succeeded, "round \(round): \(report.summary())")
        }
        let final = finish(relay)
        #expect(final.connectionsAccepted == 50)
        finish(upstream)
    }

    @Test func halfClose_propagatesBothWays() throws {
        let upstream = try TestListener()
        let relay = try startServer(.relay, upstream: upstream.address)
        let client = try TestSocket(connectingTo: relay.address)
        let peer = try upstream.accept()
        let request = pattern(100_000, seed: 1)
        try client.sendAll(request)
        client.shutdownWrite()
        // The upstream sees every byte, then EOF (the client's half-close went through) ...
        #expect(try peer.receiveUntilEOF() == request)
        // ... and can still answer: the client's read side stays open until the upstream ends.
        let answer = pattern(70_000, seed: 2)
        try peer.sendAll(answer)
        peer.shutdownWrite()
        #expect(try client.receiveUntilEOF() == answer)
        client.close()
        peer.close()
        finish(relay)
    }

    @Test func upstreamRefuses_clientIsClosedCleanly_andCounted() throws {
        // A port that was free a moment ago: nothing listens there.
        let closedPort = try TestListener().address
        let relay = try startServer(.relay, upstream: closedPort)
        let client = try TestSocket(connectingTo: relay.address)
        try client.sendAll(pattern(100))
        // A clean end (EOF, not a reset), with nothing relayed.
        #expect(try client.receiveUntilEOF() == [])
        #expect(relay.statistics().upstreamConnectFailures == 1)
        client.close()
        finish(relay)
    }

    @Test func upstreamNeverAccepts_connectTimesOut() throws {
        // A listener with a backlog of 0 that never accepts: once its queue is full the kernel
        // drops new SYNs and connecting hangs until the relay's connect timeout.
        let upstream = try TestListener(backlog: 0)
        var fillers: [TestSocket] = []
        for _ in 0..<4 { if let filler = try? TestSocket(connectingTo: upstream.address, timeout: 0.3) { fillers.append(filler) } }
        let relay = try startServer(.relay, upstream: upstream.address) { $0.connectTimeout = 0.3 }
        let client = try TestSocket(connectingTo: relay.address)
        let start = EventLoop.hrtime()
        #expect(try client.receiveUntilEOF() == [])
        let waited = Double(EventLoop.hrtime() - start) / 1e9
        #expect(waited >= 0.25 && waited < 5, "closed after \(waited) s")
        #expect(relay.statistics().upstreamConnectFailures == 1)
        client.close()
        fillers.removeAll()
        finish(relay)
    }

    @Test func upstreamResetsMidStream_clientGetsWhatWasSent_thenAClose() throws {
        let upstream = try TestListener()
        let relay = try startServer(.relay, upstream: upstream.address)
        let client = try TestSocket(connectingTo: relay.address)
        let peer = try upstream.accept()
        try client.sendAll(pattern(1000))
        _ = try peer.receive(exactly: 1000)
        let answer = pattern(50_000, seed: 3)
        try peer.sendAll(answer)
        peer.reset()  // RST, not FIN
        // Every byte the upstream sent before the reset arrives, then the connection ends.
        var received: [UInt8] = []
        do {
            received = try client.receiveUntilEOF()
        } catch {
            Issue.record("the client should get a clean end, got \(error)")
        }
        #expect(received == answer)
        // Counted as a reset when the relay's read saw ECONNRESET. libuv may instead report a
        // hang-up that follows a partial read as EOF (its POLLHUP shortcut), which is then an
        // ordinary half-close: either way the client got every byte and a clean end.
        #expect(relay.statistics().upstreamResets <= 1)
        client.close()
        finish(relay)
    }

    @Test func relay_isNeverAnOpenProxy_upstreamIsRequired() {
        var config = ServerConfig(mode: .relay)
        #expect(performing: { try config.validate() }, throws: ConfigErrorMatcher.field("--upstream"))
        config.mode = .echo
        config.upstream = SocketAddress(host: "127.0.0.1", port: 9)
        #expect(performing: { try config.validate() }, throws: ConfigErrorMatcher.field("--upstream"))
    }
}
