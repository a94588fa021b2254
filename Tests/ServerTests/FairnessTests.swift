import Foundation
import PacketBuffers
@testable import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Clients that send and never read must not starve anyone: each one's share of the buffers
/// shrinks as the pools fill, the last of them are kept for connections that hold none, and a
/// fresh client is served at once.
@Suite(.serialized) struct FairnessTests {
    /// Opens `count` clients that send as fast as the server takes bytes and never read, until
    /// the server has stopped reading every one of them (a pass in which no hog could send a
    /// byte, twice). Non-blocking sends, so one slow hog does not hold up the others.
    /// (A small send buffer keeps the bytes each hog sends down, at the price of speed: with
    /// its 16 KiB each send waits for acknowledgements; `smallSendBuffer: false` is 20x faster
    /// per hog, with twice the bytes.)
    func openHogs(_ count: Int, to address: SocketAddress, quietPass: UInt32 = 100_000,
                  smallSendBuffer: Bool = true) throws -> (hogs: [TestSocket], bytes: Int) {
        var hogs: [TestSocket] = []
        for _ in 0..<count {
            let hog = try TestSocket(connectingTo: address, receiveBuffer: 4096)
            var size: Int32 = 16 * 1024
            if smallSendBuffer { setsockopt(hog.fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
            _ = fcntl(hog.fd, F_SETFL, fcntl(hog.fd, F_GETFL) | O_NONBLOCK)
            hogs.append(hog)
        }
        let chunk = pattern(64 * 1024)
        var total = 0
        var idlePasses = 0
        let deadline = EventLoop.hrtime() + 120_000_000_000
        while idlePasses < 2 && EventLoop.hrtime() < deadline {
            var sentThisPass = 0
            for hog in hogs {
                while true {
                    let sent = chunk.withUnsafeBytes { send(hog.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
                    guard sent > 0 else { break }  // EAGAIN: its buffers are full for now
                    sentThisPass += sent
                }
            }
            total += sentThisPass
            if sentThisPass == 0 {
                idlePasses += 1
                usleep(quietPass)  // let the server catch up before the next look
            } else {
                idlePasses = 0
            }
        }
        #expect(idlePasses == 2, "the hogs never stopped sending: the server kept reading them")
        return (hogs, total)
    }

    /// One fresh client's round trip of 64 bytes, in seconds (or nil if it failed).
    func freshEcho(_ address: SocketAddress, seed: Int) -> Double? {
        let start = EventLoop.hrtime()
        guard let client = try? TestSocket(connectingTo: address, timeout: 5) else { return nil }
        let message = pattern(64, seed: seed)
        guard (try? client.sendAll(message)) != nil, (try? client.receive(exactly: 64)) == message else { return nil }
        client.close()
        return Double(EventLoop.hrtime() - start) / 1e9
    }

    @Test(arguments: [ServerMode.echo, .relay])
    func fourHundredNeverReadingClients_freshClientsServedAtOnce(mode: ServerMode) throws {
        // The default pools (2 workers: 2 x 128 local buffers and an overflow pool of 1,024, all
        // of 64 KiB), as the problem was reported: each hog used to hold up to the high
        // watermark, and 400 of them took every buffer.
        var upstreamServer: Server?
        if mode == .relay {
            upstreamServer = try startServer { $0.buffers = try PacketBufferConfig() }
        }
        let server = try startServer(mode, upstream: upstreamServer?.address) { config in
            config.buffers = try PacketBufferConfig()
            config.idleTimeout = 120
            config.writeTimeout = 0  // nothing is reset for stalling here: the shares must do it
        }
        let (hogs, bytes) = try openHogs(400, to: server.address)
        let held = server.statistics()
        let reachable = 2 * 128 + 1024
        print("fairness (\(mode)): 400 hogs sent \(bytes >> 20) MiB; buffers in use \(held.buffers.totalInUse) of \(reachable); buffer waits \(held.bufferWaits); pauses \(held.backpressurePauses)")
        #expect(held.buffers.totalInUse <= reachable - Worker.reserve(reachable: 128 + 1024),
                "the hogs reached into the reserve: \(held.buffers.totalInUse) of \(reachable) buffers in use")

        var latencies: [Double] = []
        for index in 0..<20 {
            let latency = freshEcho(server.address, seed: index)
            #expect(latency != nil, "fresh client \(index) got no echo")
            if let latency {
                #expect(latency <= 0.5, "fresh client \(index) waited \(latency) s for its echo")
                latencies.append(latency)
            }
        }
        latencies.sort()
        if !latencies.isEmpty {
            print("fairness (\(mode)): fresh clients' echo: median \(Int(latencies[latencies.count / 2] * 1e6)) µs, max \(Int(latencies.last! * 1e6)) µs")
        }

        for hog in hogs { hog.reset() }
        let final = finish(server)  // every buffer back once the hogs have gone
        #expect(final.connectionsAccepted == 420)
        if let upstreamServer { finish(upstreamServer) }
    }

    @Test func moreNeverReadingClientsThanBuffers_arrivingOneByOne_freshClientsStillServed() throws {
        let mode = ServerMode.echo
        // 96 buffers (2 x 16 local + 64 overflow) and 120 clients that never read, each filled
        // until the server stops reading it before the next one connects: the early ones get
        // the biggest shares, the later ones take the reserve, the last ones find no buffer at
        // all. Then a new client's read finds every pool empty: the worker resets its
        // longest-stalled connection for it instead of letting it wait for --write-timeout.
        // (Echo: through a relay, the upstream's own pools take the bytes, and the relay's are
        // not the ones that run out.)
        let server = try startServer(mode) { config in
            config.buffers = try PacketBufferConfig(bufferSize: 16 * 1024, localBuffers: 16, overflowInitial: 16, overflowMax: 64)
            config.highWatermark = 64 * 1024
            config.lowWatermark = 16 * 1024
            config.writeTimeout = 0  // only the eviction can free buffers here
            config.idleTimeout = 120
        }
        var hogs: [TestSocket] = []
        for _ in 0..<120 {
            let (one, _) = try openHogs(1, to: server.address, quietPass: 20_000, smallSendBuffer: false)
            hogs += one
        }
        let held = server.statistics()
        print("fairness (\(mode), one by one): buffers in use \(held.buffers.totalInUse) of 96; stalled evictions so far \(held.stalledEvictions)")
        var latencies: [Double] = []
        for index in 0..<20 {
            let latency = freshEcho(server.address, seed: index)
            #expect(latency != nil, "fresh client \(index) got no echo")
            if let latency {
                #expect(latency <= 0.5, "fresh client \(index) waited \(latency) s for its echo")
                latencies.append(latency)
            }
        }
        latencies.sort()
        let after = server.statistics()
        print("fairness (\(mode), one by one): fresh clients' echo: median \(Int((latencies.isEmpty ? 0 : latencies[latencies.count / 2]) * 1e6)) µs, max \(Int((latencies.last ?? 0) * 1e6)) µs; stalled evictions \(after.stalledEvictions)")
        #expect(after.stalledEvictions > 0, "more hogs than buffers: some had to be reset")
        for hog in hogs { hog.reset() }
        finish(server)
    }

    @Test func writeTimeout_resetsAClientThatStoppedReading_andCountsIt() throws {
        let server = try startServer { config in
            config.writeTimeout = 0.3
            config.highWatermark = 32 * 1024
            config.lowWatermark = 16 * 1024
        }
        let hog = try TestSocket(connectingTo: server.address, receiveBuffer: 4096)
        _ = fcntl(hog.fd, F_SETFL, fcntl(hog.fd, F_GETFL) | O_NONBLOCK)
        let chunk = pattern(64 * 1024)
        // Send until the server resets it (EPIPE/ECONNRESET) or a bound; never read.
        var failure: Int32 = 0
        let deadline = EventLoop.hrtime() + 20_000_000_000
        while failure == 0 && EventLoop.hrtime() < deadline {
            let sent = chunk.withUnsafeBytes { send(hog.fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 && errno != EAGAIN { failure = errno } else if sent <= 0 { usleep(5_000) }
        }
        #expect(failure == ECONNRESET || failure == EPIPE, "send ended with errno \(failure)")
        #expect(eventually(timeout: 10) { server.statistics().writeTimeouts == 1 }, "\(server.statistics().summary)")
        #expect(eventually(timeout: 10) { server.statistics().buffers.totalInUse == 0 }, "its buffers came back")
        // Others are served as before.
        #expect(freshEcho(server.address, seed: 1) != nil)
        finish(server)
    }

    @Test func lingeringClose_endsEvenWithNoIdleTimeout() throws {
        // The upstream refuses: the client gets a FIN and is drained of input (a lingering
        // close). With --idle-timeout 0 only the linger deadline can end it.
        let upstream = try TestListener().address  // closed again at once: connects are refused
        let server = try startServer(.relay, upstream: upstream) { config in
            config.idleTimeout = 0
            config.lingerTimeout = 0.5
        }
        let client = try TestSocket(connectingTo: server.address, timeout: 10)
        // The client keeps sending and never closes its side.
        #expect(try client.receiveUntilEOF() == [], "a clean end (FIN), not a reset")
        let start = EventLoop.hrtime()
        #expect(eventually(timeout: 10) { server.statistics().connectionsActive == 0 }, "the lingering close never ended")
        let waited = Double(EventLoop.hrtime() - start) / 1e9
        #expect(waited < 5, "ended after \(waited) s")
        let final = finish(server)
        #expect(final.lingerTimeouts == 1)
        #expect(final.upstreamConnectFailures == 1)
        client.close()
    }
}

/// TCP_NODELAY and keepalive on the server's sockets, read back from the sockets themselves
/// (the server runs in this process, so its descriptors are ours to inspect). Accepted clients
/// inherit them from the listener; the upstream socket gets them once connected.
@Suite struct KeepaliveTests {
    struct Settings: Equatable, CustomStringConvertible {
        var noDelay: Bool, keepAlive: Bool, idle: Int32, interval: Int32, probes: Int32
        var description: String { "nodelay \(noDelay) keepalive \(keepAlive) idle \(idle) interval \(interval) probes \(probes)" }
    }

    /// The settings of this process's end of `client`'s connection (the server's socket), found
    /// through /proc/self/fd by the whole address pair: its peer is `client`'s address and its
    /// own address is `client`'s peer. (The peer alone is not enough: tests run in parallel in
    /// this process, and Linux gives the same ephemeral port to connections to different
    /// destinations, so another test's accepted socket can have the same peer.)
    func settings(ofServerEndOf client: TestSocket) -> Settings? {
        let peer = address(of: client.fd, getsockname)
        let local = address(of: client.fd, getpeername)
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return nil }
        for entry in entries {
            guard let fd = Int32(entry), fd != client.fd else { continue }
            let itsPeer = address(of: fd, getpeername)
            let itsLocal = address(of: fd, getsockname)
            guard let itsPeer, let itsLocal, let peer, let local,
                  itsPeer.sin_port == peer.sin_port, itsPeer.sin_addr.s_addr == peer.sin_addr.s_addr,
                  itsLocal.sin_port == local.sin_port, itsLocal.sin_addr.s_addr == local.sin_addr.s_addr else { continue }
            func option(_ level: Int32, _ name: Int32) -> Int32 {
                var value: Int32 = -1
                var size = socklen_t(MemoryLayout<Int32>.size)
                return getsockopt(fd, level, name, &value, &size) == 0 ? value : -1
            }
            let tcp = Int32(IPPROTO_TCP)
            return Settings(noDelay: option(tcp, Int32(TCP_NODELAY)) == 1, keepAlive: option(SOL_SOCKET, SO_KEEPALIVE) == 1,
                            idle: option(tcp, TCP_KEEPIDLE), interval: option(tcp, TCP_KEEPINTVL),
                            probes: option(tcp, TCP_KEEPCNT))
        }
        return nil
    }

    /// `fd`'s own (`getsockname`) or peer (`getpeername`) IPv4 address; nil for anything else.
    func address(of fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> sockaddr_in? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let found = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &length) == 0 }
        }
        return found && address.sin_family == sa_family_t(AF_INET) ? address : nil
    }

    /// `--tcp-keepalive 7`: probes after 7 s, every 10 s, 6 of them; no Nagle.
    let expected = Settings(noDelay: true, keepAlive: true, idle: 7, interval: 10, probes: 6)

    /// The upstream socket gets keepalive only where it can act before the session's idle
    /// timeout: `--tcp-keepalive 7` finds a dead peer after 7 + 6 x 10 = 67 s, so with
    /// `--idle-timeout 60` (the default) the timeout always comes first and the upstream socket
    /// gets TCP_NODELAY alone; with no idle timeout, or one of 66 s (plus a second of sweep
    /// lateness, not before 67 s), it gets keepalive too. The client's socket inherits keepalive
    /// from the listener in every case.
    @Test(arguments: [(0.0, true), (60.0, false), (66.0, true)])
    func relay_upstreamSocket_getsKeepaliveWhereTheIdleTimeoutDoesNotComeFirst(idleTimeout: Double, keepalive: Bool) throws {
        let upstream = try TestListener()
        let server = try startServer(.relay, upstream: upstream.address) {
            $0.tcpKeepalive = 7
            $0.idleTimeout = idleTimeout
        }
        let client = try TestSocket(connectingTo: server.address)
        let peer = try upstream.accept()
        try client.sendAll([1])
        #expect(try peer.receive(exactly: 1) == [1])  // both connections are ready
        #expect(settings(ofServerEndOf: client) == expected, "the server's socket to the client")
        let upstreamSide = settings(ofServerEndOf: peer)
        if keepalive {
            #expect(upstreamSide == expected, "the server's socket to the upstream")
        } else {
            #expect(upstreamSide?.noDelay == true && upstreamSide?.keepAlive == false,
                    "the server's socket to the upstream: \(String(describing: upstreamSide))")
        }
        client.close()
        peer.close()
        finish(server)
    }

    /// The rule itself, at the defaults (keepalive after 60 s, then 6 probes 10 s apart: 120 s).
    @Test func keepaliveIsInert_exactlyWhenTheIdleTimeoutEndsTheSessionFirst() {
        let options = TCPSocketOptions(noDelay: true, keepAliveSeconds: 60)
        #expect(options.detectionMilliseconds == 120_000)
        #expect(Worker.keepaliveIsInert(options, idleTimeout: 60_000))
        #expect(Worker.keepaliveIsInert(options, idleTimeout: 118_999))
        #expect(!Worker.keepaliveIsInert(options, idleTimeout: 119_000), "a second of sweep lateness reaches 120 s")
        #expect(!Worker.keepaliveIsInert(options, idleTimeout: 0), "no idle timeout: only keepalive finds the dead peer")
        #expect(!Worker.keepaliveIsInert(TCPSocketOptions(noDelay: true), idleTimeout: 60_000), "keepalive off")
    }

    @Test func echo_acceptedSockets_inheritThem_everyOne() throws {
        // Set once on the listener: every accepted socket (new or on a reused stream) has them.
        let server = try startServer { $0.tcpKeepalive = 7 }
        for round in 0..<3 {
            let clients = try (0..<4).map { _ in try TestSocket(connectingTo: server.address) }
            for client in clients {
                try client.sendAll([2])
                #expect(try client.receive(exactly: 1) == [2])
                #expect(settings(ofServerEndOf: client) == expected, "round \(round)")
            }
            for client in clients { client.close() }
            #expect(eventually(timeout: 10) { server.statistics().connectionsActive == 0 })
        }
        finish(server)
    }

    @Test func keepaliveZero_isOff_noDelayStaysOn() throws {
        let server = try startServer { $0.tcpKeepalive = 0 }
        let client = try TestSocket(connectingTo: server.address)
        try client.sendAll([1])
        #expect(try client.receive(exactly: 1) == [1])
        let serverSide = settings(ofServerEndOf: client)
        #expect(serverSide?.keepAlive == false && serverSide?.noDelay == true, "\(String(describing: serverSide))")
        client.close()
        finish(server)
    }
}
