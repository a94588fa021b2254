import Foundation
import ServerCore
import StatsEndpoint
import Synchronization
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Polls `condition` every 10 ms until it holds or `seconds` pass; returns whether it held.
func waitUntil(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while !condition() {
        if Date() > deadline { return false }
        usleep(10_000)
    }
    return true
}

/// Raises the soft limit on open files to at least `count` (at most the hard limit); returns
/// the soft limit in force.
func raiseFileLimit(to count: Int) -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < rlim_t(count) {
        limit.rlim_cur = min(rlim_t(count), limit.rlim_max)
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}

/// A flag one thread raises and another polls.
final class StopFlag: Sendable {
    private let raised = Atomic<Bool>(false)
    func raise() { raised.store(true, ordering: .relaxed) }
    var isRaised: Bool { raised.load(ordering: .relaxed) }
}

/// A request on a kept-alive connection whose answer proves the endpoint has read what follows
/// it in the same write: a request begun and not finished (a request in progress).
func startRequestInProgress(_ socket: TestSocket) throws {
    try socket.sendAll(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metr".utf8))
    #expect(try socket.readResponse().status == 200)
}

/// The stats port at its connection limit (issue 14): idle connections make room for new ones,
/// so that probes are answered; requests in progress keep their place.
@Suite struct StatsEndpointLimitTests {
    func start(_ limits: StatsLimits) throws -> (Server, StatsEndpoint) {
        let server = try startServer(.echo)
        let stats = try StatsEndpoint(server: server, address: SocketAddress(host: "127.0.0.1", port: 0), limits: limits,
                                      logger: quietLogger)
        return (server, stats)
    }

    @Test func atTheLimit_theLongestIdleConnectionMakesRoom() throws {
        var limits = StatsLimits()
        limits.maxConnections = 2
        let (server, stats) = try start(limits)
        let first = try TestSocket(connectingTo: stats.address)
        try first.sendAll(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try first.readResponse().status == 200)  // answered, kept alive, idle since
        let second = try TestSocket(connectingTo: stats.address)
        try second.sendAll(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try second.readResponse().status == 200)  // idle since, later than the first
        // A third: the first makes room (closed without an answer), the third is served.
        #expect(try get(stats.address, "/healthz").status == 200)
        #expect(try first.receiveUntilEOF() == [])
        try second.sendAll(Array("GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try second.readResponse().body == "ready\n")
        let figures = stats.connectionStatistics
        #expect(figures.evicted >= 1 && figures.refused == 0, "\(figures)")
        second.close()
        #expect(waitUntil { stats.connectionStatistics.open == 0 }, "\(stats.connectionStatistics)")
        finish(server)
        stats.stop()
    }

    @Test func atTheLimit_withARequestInProgressOnEveryConnection_aNewOneIsRefused() throws {
        var limits = StatsLimits()
        limits.maxConnections = 2
        let (server, stats) = try start(limits)
        let first = try TestSocket(connectingTo: stats.address)
        let second = try TestSocket(connectingTo: stats.address)
        try startRequestInProgress(first)
        try startRequestInProgress(second)
        // Both have a request in progress: a third is closed at once, without an answer.
        let third = try TestSocket(connectingTo: stats.address)
        try? third.sendAll(Array("GET /healthz HTTP/1.1\r\n\r\n".utf8))
        #expect(throws: (any Error).self) { _ = try third.readResponse() }
        #expect(stats.connectionStatistics.refused == 1)
        #expect(stats.connectionStatistics.evicted == 0)
        // The first finishes its request: idle again, it makes room for the next one.
        try first.sendAll(Array("ics HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try first.readResponse().status == 200)
        #expect(try get(stats.address, "/healthz").status == 200)
        #expect(try first.receiveUntilEOF() == [])
        #expect(stats.connectionStatistics.evicted == 1)
        // The second's request is still whole when it ends.
        try second.sendAll(Array("ics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        #expect(try second.readResponse().status == 200)
        #expect(waitUntil { stats.connectionStatistics.open == 0 }, "\(stats.connectionStatistics)")
        finish(server)
        stats.stop()
    }

    // Regression (issue 14): 64 idle sockets made a liveness probe fail; the endpoint refused
    // every new connection at its limit.
    @Test func probes_areAnswered_while200IdleAnd200SlowClientsHoldTheStatsPort() throws {
        #expect(raiseFileLimit(to: 4096) >= 2048, "too few file descriptors for 400 clients and the endpoint's sockets")
        var limits = StatsLimits()
        // Room for the 200 slow clients, not for all 400 clients: the idle ones must make room.
        limits.maxConnections = 256
        // Short, so that the slow clients' 408 comes within seconds; long enough for the probes
        // to run while every idle client is still open (the idle timeout would close them).
        limits.idleTimeout = 4
        let (server, stats) = try start(limits)
        let request = Array("GET /healthz HTTP/1.1\r\nHost: slow\r\n\r\n".utf8)
        let opened = Date()
        let idle = try (0..<200).map { _ in try TestSocket(connectingTo: stats.address) }
        let slow = try (0..<200).map { _ in
            let socket = try TestSocket(connectingTo: stats.address, timeout: limits.idleTimeout + 5)
            try socket.sendAll([request[0]])
            return socket
        }
        #expect(waitUntil { let f = stats.connectionStatistics; return f.accepted + f.refused == 400 }, "\(stats.connectionStatistics)")
        // The slow clients go on sending their request a byte per second (they need 37 s).
        let stopSending = StopFlag()
        let sender = ThreadHandle.start {
            var next = 1
            while !stopSending.isRaised && next < request.count {
                // Waits a second in steps, so that the test can stop it at once.
                for _ in 0..<20 where !stopSending.isRaised { usleep(50_000) }
                for socket in slow { try? socket.sendAll([request[next]]) }  // an answered one may be closed
                next += 1
            }
        }
        // 10 probes of each kind, one after the other, each on a new connection.
        struct Probe { var path: String; var seconds: Double; var status: Int?; var complete: Bool; var error: String? }
        var probes: [Probe] = []
        for round in 0..<20 {
            let path = round % 2 == 0 ? "/healthz" : "/metrics"
            let start = Date()
            do {
                let socket = try TestSocket(connectingTo: stats.address, timeout: 2)
                try socket.sendAll(Array("GET \(path) HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".utf8))
                let response = try socket.readResponse()
                let complete = path == "/healthz" ? response.body == "ok\n" : response.body.contains("# TYPE fastalloc_bytes_received_total counter")
                probes.append(Probe(path: path, seconds: Date().timeIntervalSince(start), status: response.status, complete: complete))
            } catch {
                probes.append(Probe(path: path, seconds: Date().timeIntervalSince(start), status: nil, complete: false, error: "\(error)"))
            }
        }
        let probed = Date().timeIntervalSince(opened)
        let during = stats.connectionStatistics
        func median(_ path: String) -> Double {
            let times = probes.filter { $0.path == path }.map(\.seconds).sorted()
            return times[times.count / 2]
        }
        print("""
            stats probes with 200 idle + 200 slow clients: /healthz median \(Int(median("/healthz") * 1000)) ms, \
            /metrics median \(Int(median("/metrics") * 1000)) ms, slowest \(Int((probes.map(\.seconds).max() ?? 0) * 1000)) ms; \
            clients opened and probed in \(Int(probed * 1000)) ms; \(during)
            """)
        for probe in probes {
            #expect(probe.status == 200 && probe.complete, "\(probe.path): \(probe.status.map(String.init) ?? probe.error ?? "?")")
            #expect(probe.seconds < 1, "\(probe.path) took \(probe.seconds) s")
        }
        #expect(median("/healthz") < 0.1)
        #expect(median("/metrics") < 0.1)
        // 144 idle clients made room for the slow ones, more for the probes; none refused.
        #expect(during.evicted >= 145 && during.refused == 0, "\(during)")
        #expect(probed < limits.idleTimeout, "the probes ran after the idle timeout: they did not test the limit")
        // The slow clients still get 408 once their request's time is up, and each idle client
        // was closed without an answer (made room, or its idle time ran out).
        var answers: [Int: Int] = [:]
        for socket in slow { answers[(try? socket.readResponse().status) ?? -1, default: 0] += 1 }
        #expect(answers == [408: 200], "slow clients' answers (-1: none): \(answers)")
        var closedSilently = 0
        for socket in idle where (try? socket.receiveUntilEOF()) == [] { closedSilently += 1 }
        #expect(closedSilently == 200)
        stopSending.raise()
        sender.join()
        // Nothing left open once the clients are gone.
        for socket in idle + slow { socket.close() }
        #expect(waitUntil { stats.connectionStatistics.open == 0 }, "connections left: \(stats.connectionStatistics)")
        finish(server)
        stats.stop()
        #expect(stats.connectionStatistics.open == 0)
    }
}
