import LoadClient
@testable import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The relay in front of several upstreams, end to end with real servers on 127.0.0.1 (and
/// ::1): the spread, failover when an upstream dies and comes back, connect retries that keep
/// the client's early bytes, IPv6, and a client that finds every upstream down.
@Suite(.serialized) struct UpstreamTests {
    /// A relay over `upstreams`, with `configure` applied.
    static func relay(_ upstreams: [SocketAddress], _ configure: (inout ServerConfig) -> Void = { _ in }) throws -> Server {
        try startServer(.relay) { config in
            config.upstreams = upstreams.map { UpstreamSpec($0) }
            configure(&config)
        }
    }

    /// `count` connections, one after another, each sending `size` bytes and reading them back.
    static func sequentialRoundTrips(_ address: SocketAddress, count: Int, size: Int = 100) throws -> Int {
        var served = 0
        for index in 0..<count {
            let client = try TestSocket(connectingTo: address)
            let bytes = pattern(size, seed: index)
            try client.sendAll(bytes)
            if (try? client.receive(exactly: size)) == bytes { served += 1 }
            client.close()
        }
        return served
    }

    /// Waits (bounded) until `condition` holds for the relay's upstream figures.
    static func eventually(_ relay: Server, within seconds: Double, _ condition: ([UpstreamStatistics]) -> Bool) -> Bool {
        let deadline = EventLoop.hrtime() + UInt64(seconds * 1e9)
        while EventLoop.hrtime() < deadline {
            if condition(relay.statistics().upstreams) { return true }
            usleep(10_000)  // polling a condition with a deadline, not waiting out a race
        }
        return condition(relay.statistics().upstreams)
    }

    @Test func roundrobin_spreadsExactly_overThreeUpstreams() throws {
        let upstreams = try (0..<3).map { _ in try startServer(.echo) }
        let relay = try Self.relay(upstreams.map(\.address)) { $0.balance = .roundrobin }
        #expect(try Self.sequentialRoundTrips(relay.address, count: 30) == 30)
        let figures = relay.statistics().upstreams
        #expect(figures.map(\.selected) == [10, 10, 10])
        finish(relay)
        #expect(upstreams.map { finish($0).connectionsAccepted } == [10, 10, 10])
    }

    @Test func hash_keepsAClientOnOneUpstream() throws {
        let upstreams = try (0..<3).map { _ in try startServer(.echo) }
        let relay = try Self.relay(upstreams.map(\.address)) { $0.balance = .hash }
        #expect(try Self.sequentialRoundTrips(relay.address, count: 20) == 20)
        // Every client here is 127.0.0.1: all on the same upstream.
        #expect(relay.statistics().upstreams.map(\.selected).sorted() == [0, 0, 20])
        finish(relay)
        for upstream in upstreams { finish(upstream) }
    }

    /// An upstream dies under held connections and new ones: its clients get a clean end and
    /// are counted; every new connection is served; health marks it down within fall ×
    /// interval; when it returns it is marked up and gets its share again.
    @Test func deadUpstream_failsOver_isMarkedDown_andComesBack() throws {
        var upstreams = try (0..<3).map { _ in try startServer(.echo) }
        let relay = try Self.relay(upstreams.map(\.address)) { config in
            config.balance = .roundrobin
            config.healthCheck = .tcp
            config.healthCheckInterval = 0.1
            config.fall = 2
            config.rise = 2
        }
        // 30 held connections, 10 on each upstream, each proven with a round trip.
        let held = try (0..<30).map { index in
            let client = try TestSocket(connectingTo: relay.address)
            try client.sendAll(pattern(10, seed: index))
            #expect(try client.receive(exactly: 10) == pattern(10, seed: index))
            return client
        }
        let deadAddress = upstreams[0].address
        upstreams[0].stop()
        finishWithoutChecks(upstreams[0])
        // Its 10 clients (every third: the rotation started with it) see a clean end of stream
        // (a FIN, no reset); the other 20 still get their bytes back.
        var ended = 0
        var alive = 0
        for (index, client) in held.enumerated() {
            if index % 3 == 0 {
                if let rest = try? client.receiveUntilEOF(limit: 1), rest.isEmpty { ended += 1 }
            } else {
                try client.sendAll(pattern(10, seed: 100 + index))
                if (try? client.receive(exactly: 10)) == pattern(10, seed: 100 + index) { alive += 1 }
            }
        }
        #expect(ended == 10 && alive == 20, "ended cleanly \(ended), alive \(alive)")
        #expect(relay.statistics().upstreamResets == 10)
        // Down within fall × interval (with room for a loaded machine).
        #expect(Self.eventually(relay, within: 2) { $0[0].up == false }, "\(relay.statistics().upstreams[0])")
        // Every new connection is served: retries cover the tries that still land on it.
        #expect(try Self.sequentialRoundTrips(relay.address, count: 300) == 300)
        #expect(relay.statistics().upstreamUnavailable == 0)
        // It comes back on the same port: up again within rise × interval, and it gets its share.
        upstreams[0] = try startServer(.echo) { $0.listen = deadAddress }
        #expect(Self.eventually(relay, within: 2) { $0[0].up }, "\(relay.statistics().upstreams[0])")
        let before = relay.statistics().upstreams.map(\.selected)
        #expect(try Self.sequentialRoundTrips(relay.address, count: 30) == 30)
        let after = relay.statistics().upstreams.map(\.selected)
        #expect(zip(after, before).map { $0 - $1 } == [10, 10, 10])
        for client in held { client.close() }
        finish(relay)
        for upstream in upstreams { finish(upstream) }
    }

    /// The first try is refused: the connect is retried on the live upstream, and what the
    /// client sent before any upstream was connected arrives intact.
    @Test func refusedFirstTry_isRetried_andTheEarlyBytesSurvive() throws {
        let live = try startServer(.echo)
        let closed = try RefusingPort()
        let relay = try Self.relay([closed.address, live.address]) { config in
            config.balance = .roundrobin
            config.fall = 100  // stays "up", so that every other connection tries it first
        }
        for index in 0..<20 {
            let client = try TestSocket(connectingTo: relay.address)
            let bytes = pattern(50_000, seed: index)
            try client.sendAll(bytes)  // sent at once: before the relay has an upstream
            #expect(try client.receive(exactly: bytes.count) == bytes, "connection \(index)")
            client.close()
        }
        let figures = finish(relay)
        // Exact rotation counts every pick, retries included: with two members, each
        // connection's first pick lands on the refusing one.
        #expect(figures.upstreams[0].connectRefused == 20)
        #expect(figures.upstreamConnectFailures == 20 && figures.upstreamUnavailable == 0)
        #expect(finish(live).connectionsAccepted == 20)
    }

    @Test func everyUpstreamDown_theClientGetsACleanEnd_andIsCounted() throws {
        let ports = try (0..<2).map { _ in try RefusingPort() }
        let relay = try Self.relay(ports.map(\.address)) { $0.connectRetries = 1 }
        let client = try TestSocket(connectingTo: relay.address)
        try client.sendAll(pattern(100))
        #expect(try client.receiveUntilEOF() == [], "a FIN, no reset, nothing echoed")
        client.close()
        let figures = finish(relay)  // after the session has ended
        #expect(figures.upstreamConnectFailures == 2 && figures.upstreamUnavailable == 1)
    }

    @Test func echoAndRelay_onIPv6Loopback() throws {
        let echo = try startServer(.echo) { $0.listen = try SocketAddress(parsing: "[::1]:0") }
        #expect(echo.address.family == .ipv6)
        let relay = try startServer(.relay) { config in
            config.listen = try SocketAddress(parsing: "[::1]:0")
            config.upstreams = [UpstreamSpec(echo.address)]
        }
        var load = LoadConfig(target: relay.address)
        load.connections = 4
        load.size = 1000
        load.messagesPerConnection = 50
        let report = try runLoad(load)
        #expect(report.succeeded, "\(report.summary())")
        #expect(relay.statistics().upstreams[0].address == echo.address.description)
        finish(relay)
        #expect(finish(echo).connectionsAccepted == 4)
    }
}

/// Waits for a server that was stopped (its connections reset, so no zero-connection check).
func finishWithoutChecks(_ server: Server) {
    server.wait()
}

/// A port on 127.0.0.1 that refuses connections: bound (so no other socket takes it) but not
/// listening, so a connect gets a reset (ECONNREFUSED).
final class RefusingPort {
    let fd: Int32
    let address: SocketAddress

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = TestSocket.socketAddress(SocketAddress(host: "127.0.0.1", port: 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                Glibc.bind(fd, raw, length) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else { throw SocketError.failed("bind", errno) }
        address = SocketAddress(host: "127.0.0.1", port: Int(UInt16(bigEndian: addr.sin_port)))
    }

    deinit { Glibc.close(fd) }
}
