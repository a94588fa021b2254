import Dispatch
import Foundation
import ProxyProtocol
import ServerCore
import Synchronization
import Testing
import UVLoop

/// Reload (SIGHUP, `Server.reload`): what may change applies to new connections while the
/// established ones go on; what may not is refused whole, named and counted.
@Suite(.serialized) struct ReloadTests {
    /// A relay under a churn of short connections (200-byte exchanges, one after another) and
    /// with 4 long streams that send and verify for the whole test; meanwhile 10 reloads
    /// alternate its upstream between two echo servers. Not one exchange may fail, every stream
    /// byte must come back, and after each reload the pool is the new set and new connections
    /// go there.
    ///
    /// (It runs under the sanitizers again. Under ThreadSanitizer it once took 10 minutes, mostly
    /// in system time, while each 200-byte exchange and each 4 KiB chunk built a 64 KiB pattern
    /// (`patternStream`); with `pattern(200)` it takes about 5 s there. Why the pattern cost so
    /// much system time under the sanitizer was not profiled.)
    @Test
    func tenReloads_underChurn_newConnectionsFollow_streamsIntact() throws {
        let a = try startServer()
        let b = try startServer()
        let relay = try startServer(.relay, upstream: a.address)
        let churn = Churn(address: relay.address, threads: 1)
        let streams = try (0..<4).map { try LongStream(address: relay.address, seed: $0) }
        // Every stream moving before the first reload, and again after the last.
        for stream in streams { try stream.waitForMore(4096) }
        for round in 0..<10 {
            let target = round % 2 == 0 ? b : a
            var next = relay.currentConfig
            next.upstream = target.address
            #expect(try relay.reload(next) == .applied(["upstream"]), "round \(round)")
            #expect(relay.statistics().upstreams.map(\.address) == ["\(target.address)"], "round \(round): the pool is the new set")
            let before = target.statistics().connectionsAccepted
            for check in 0..<5 {
                let client = try TestSocket(connectingTo: relay.address)
                try client.sendAll(pattern(200, seed: check))
                #expect(try client.receive(exactly: 200) == pattern(200, seed: check))
                client.close()
            }
            #expect(target.statistics().connectionsAccepted >= before + 5, "round \(round): new connections go to the new set")
            // Let the churn run across each reload.
            try churn.waitForMore(20)
        }
        for stream in streams { try stream.waitForMore(4096) }  // the long streams go on after 10 reloads
        // A change a reload cannot make: refused whole, named, counted; nothing changes.
        var workers = relay.currentConfig
        workers.workers = 3
        workers.upstream = a.address
        #expect(throws: ReloadError.self) { try relay.reload(workers) }
        do {
            try relay.reload(workers)
        } catch {
            #expect(error.needRestart == ["workers"] && error.notReloadable.isEmpty)
            #expect("\(error)" == "reload refused, nothing changed: --workers cannot change while running (an upgrade (SIGUSR2) or a restart applies it)")
        }
        #expect(relay.statistics().upstreams.map(\.address) == ["\(a.address)"], "the last applied set stays")
        let reloads = relay.statistics().reloads
        #expect(reloads.reloads == 10 && reloads.failures == 2 && reloads.generation == 11)
        let (done, failures) = churn.stop()
        #expect(failures.isEmpty, "\(failures.prefix(5))")
        #expect(done >= 200)
        // Each stream ends cleanly after its last byte came back.
        for (number, stream) in streams.enumerated() { #expect(stream.finish(), "stream \(number): \(stream.failure ?? "")") }
        finish(relay)
        finish(a)
        finish(b)
    }

    /// A reload that gives an entry `proxy-protocol=v2` (none had one at start): new
    /// connections' headers carry their clients' addresses (the accept reads them from then on).
    @Test func reloadTurningHeadersOn_sendsTheClientsAddress() throws {
        let upstream = try TestListener()
        let relay = try startServer(.relay, upstream: upstream.address)
        var next = relay.currentConfig
        next.upstreams = [try UpstreamSpec(parsing: "\(upstream.address) proxy-protocol=v2")]
        #expect(try relay.reload(next) == .applied(["upstream"]))
        let client = try TestSocket(connectingTo: relay.address)
        try client.sendAll(Array("hi".utf8))
        let peer = try upstream.accept()
        var bytes: [UInt8] = []
        var header: ProxyHeader?
        while header == nil, bytes.count < ProxyHeader.decisionBytes {
            bytes += try peer.receive(exactly: 1)
            if case .header(let parsed) = ProxyHeader.parse(bytes) { header = parsed }
        }
        #expect(header?.command == .proxy(source: RawSocketAddress(client.localAddress), destination: RawSocketAddress(relay.address)))
        #expect(try peer.receive(exactly: 2) == Array("hi".utf8))
        client.close()
        peer.close()
        finish(relay)
    }

    @Test func unchangedConfiguration_isAReloadThatChangesNothing() throws {
        let upstream = try startServer()
        let relay = try startServer(.relay, upstream: upstream.address)
        #expect(try relay.reload(relay.currentConfig) == .unchanged)
        let stats = relay.statistics().reloads
        #expect(stats.reloads == 1 && stats.generation == 1 && stats.failures == 0)
        finish(relay)
        finish(upstream)
    }

    /// Every option of the table is classified: a reload applies it, or only an upgrade or a
    /// restart can (an option added later without a decision would be refused as "not
    /// reloadable in this version": this test asks for the decision).
    @Test func everyOption_isReloadableOrRestartOnly() {
        let names = Set(ServerConfig.options.map(\.name)).subtracting(["config"])
        #expect(names.subtracting(Server.reloadableOptions).subtracting(Server.restartOptions).isEmpty)
        #expect(Server.reloadableOptions.isDisjoint(with: Server.restartOptions))
        #expect(Server.reloadableOptions.union(Server.restartOptions).isSubset(of: names))
    }

    /// A refused change names every option that needs an upgrade or a restart, and nothing of
    /// the reload applies (not even its reloadable part).
    @Test func restartOnlyOptions_areRefusedByName_andNothingApplies() throws {
        let server = try startServer()
        var next = server.currentConfig
        next.workers = 3
        next.highWatermark = 512 * 1024
        next.idleTimeout = 5
        do {
            try server.reload(next)
            Issue.record("a reload that changes --workers was applied")
        } catch {
            #expect(error.needRestart == ["high-watermark", "workers"] && error.notReloadable.isEmpty)
            #expect("\(error)" == "reload refused, nothing changed: --high-watermark, --workers cannot change while running "
                    + "(an upgrade (SIGUSR2) or a restart applies them)")
        }
        #expect(server.currentConfig.idleTimeout == 20 && server.statistics().reloads.generation == 1)
        finish(server)
    }

    /// A shorter idle timeout applies to connections accepted after the reload: an idle
    /// connection accepted before keeps its 20 s, one accepted after is closed after 0.3 s.
    @Test func idleTimeout_newConnectionsOnly() throws {
        let server = try startServer()
        let old = try TestSocket(connectingTo: server.address)
        try old.sendAll(pattern(10))
        #expect(try old.receive(exactly: 10) == pattern(10))
        var next = server.currentConfig
        next.idleTimeout = 0.3
        #expect(try server.reload(next) == .applied(["idle-timeout"]))
        let new = try TestSocket(connectingTo: server.address)
        try new.sendAll(pattern(10))
        #expect(try new.receive(exactly: 10) == pattern(10))
        #expect(throws: SocketError.endOfFile(after: 0)) { try new.receive(exactly: 1) }  // closed for idleness (10 s socket timeout)
        #expect(server.statistics().idleTimeouts == 1)
        // The old connection has been idle longer than 0.3 s and still echoes.
        try old.sendAll(pattern(20, seed: 3))
        #expect(try old.receive(exactly: 20) == pattern(20, seed: 3))
        #expect(server.statistics().idleTimeouts == 1)
        old.close()
        new.close()
        finish(server)
    }

    /// roundrobin before, hash after: new connections from one address all go to one upstream.
    @Test func balance_changesForNewConnections() throws {
        let a = try startServer()
        let b = try startServer()
        let relay = try startServer(.relay) { config in
            config.upstreams = [try UpstreamSpec(parsing: "\(a.address)"), try UpstreamSpec(parsing: "\(b.address)")]
            config.balance = .roundrobin
        }
        func connections(_ count: Int) throws -> (a: UInt64, b: UInt64) {
            let beforeA = a.statistics().connectionsAccepted
            let beforeB = b.statistics().connectionsAccepted
            for index in 0..<count {
                let client = try TestSocket(connectingTo: relay.address)
                try client.sendAll(pattern(50, seed: index))
                #expect(try client.receive(exactly: 50) == pattern(50, seed: index))
                client.close()
            }
            return (a.statistics().connectionsAccepted - beforeA, b.statistics().connectionsAccepted - beforeB)
        }
        let established = try TestSocket(connectingTo: relay.address)
        try established.sendAll(pattern(5))
        #expect(try established.receive(exactly: 5) == pattern(5))
        let before = try connections(6)
        #expect(before.a == 3 && before.b == 3, "roundrobin alternates: \(before)")
        var next = relay.currentConfig
        next.balance = .hash
        #expect(try relay.reload(next) == .applied(["balance"]))
        let after = try connections(6)
        #expect((after.a == 6 && after.b == 0) || (after.a == 0 && after.b == 6), "hash: one address, one upstream: \(after)")
        try established.sendAll(pattern(7))
        #expect(try established.receive(exactly: 7) == pattern(7), "the established connection goes on")
        established.close()
        finish(relay)
        finish(a)
        finish(b)
    }

    /// Health checks off at start (no checker thread); a reload turns them on every 50 ms: the
    /// checks run (more than 10 within 5 s); a reload to a 1 h interval leaves the one round
    /// a restarted checker makes at once; off stops them.
    @Test func healthSettings_startChangeAndStopTheChecker() throws {
        let upstream = try startServer()
        let relay = try startServer(.relay, upstream: upstream.address)
        func checks() -> UInt64 { relay.statistics().upstreams.first?.checksPassed ?? 0 }
        #expect(checks() == 0)
        var next = relay.currentConfig
        next.healthCheck = .tcp
        next.healthCheckInterval = 0.05
        #expect(try relay.reload(next) == .applied(["health-check", "health-check-interval"]))
        #expect(eventually(timeout: 5) { checks() >= 10 }, "checks: \(checks())")
        next.healthCheckInterval = 3600
        next.rise = 5
        let atReload = checks()
        #expect(try relay.reload(next) == .applied(["health-check-interval", "rise"]))
        // The new checker's first round runs at once; then nothing for an hour. Wait for that
        // round, then 20 old intervals: at most the one round.
        #expect(eventually(timeout: 5) { checks() >= atReload + 1 })
        let settled = checks()
        usleep(1_000_000)  // 20 of the old intervals: what would run if the old checker still did
        #expect(checks() <= settled + 1, "the old 50 ms checker has stopped: \(settled) then \(checks())")
        next.healthCheck = .off
        #expect(try relay.reload(next) == .applied(["health-check"]))
        let client = try TestSocket(connectingTo: relay.address)
        try client.sendAll(pattern(10))
        #expect(try client.receive(exactly: 10) == pattern(10))
        client.close()
        finish(relay)
        finish(upstream)
    }

    /// 0 (no limit) at start, with two connections open from 127.0.0.1; a reload sets 1: the
    /// two are not counted (nor cut); the first new one is admitted, the second refused; when
    /// the first ends, a third is admitted.
    @Test func perClientLimit_fromZero_countsNewConnections() throws {
        let server = try startServer()
        let old = try (0..<2).map { _ in try TestSocket(connectingTo: server.address) }
        for socket in old {
            try socket.sendAll(pattern(3))
            #expect(try socket.receive(exactly: 3) == pattern(3))
        }
        var next = server.currentConfig
        next.maxConnectionsPerClient = 1
        #expect(try server.reload(next) == .applied(["max-connections-per-client"]))
        let first = try TestSocket(connectingTo: server.address)
        try first.sendAll(pattern(4))
        #expect(try first.receive(exactly: 4) == pattern(4))
        let second = try TestSocket(connectingTo: server.address)
        #expect(throws: (any Error).self) { _ = try second.receive(exactly: 1) }  // closed at once
        // Counted just after the close (the socket is closed first): wait for the count.
        #expect(eventually(timeout: 10) { server.statistics().clientLimitRejections == 1 })
        first.close()
        #expect(eventually(timeout: 10) { server.statistics().connectionsActive == 2 })
        let third = try TestSocket(connectingTo: server.address)
        try third.sendAll(pattern(5))
        #expect(try third.receive(exactly: 5) == pattern(5))
        for socket in old {
            try socket.sendAll(pattern(6))
            #expect(try socket.receive(exactly: 6) == pattern(6), "connections open before the limit go on")
        }
        for socket in old + [second, third] { socket.close() }
        finish(server)
    }

    /// The access log off at start, then a file (text), then another file (JSON): every
    /// connection accepted while it is on gets exactly one line, in the file in effect when it
    /// ended; a connection accepted while it was off gets none.
    @Test func accessLog_offThenFileThenOtherFile_everyConnectionOnce() throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let server = try startServer()
        func exchange(_ client: TestSocket) throws {
            try client.sendAll(pattern(8))
            #expect(try client.receive(exactly: 8) == pattern(8))
        }
        func closed(_ clients: [TestSocket]) throws -> [Int] {
            let ports = clients.map(AccessLogTests.localPort)
            let before = server.statistics().connectionsClosed
            for client in clients { client.close() }
            #expect(eventually(timeout: 10) { server.statistics().connectionsClosed >= before + UInt64(clients.count) })
            return ports
        }
        let unlogged = try TestSocket(connectingTo: server.address)  // accepted while off
        try exchange(unlogged)
        var next = server.currentConfig
        next.accessLog = .file(directory + "/first.log")
        #expect(try server.reload(next) == .applied(["access-log"]))
        let spanning = try TestSocket(connectingTo: server.address)  // accepted under the first file, ends under the second
        try exchange(spanning)
        let firstBatch = try (0..<3).map { _ in try TestSocket(connectingTo: server.address) }
        for client in firstBatch { try exchange(client) }
        let firstPorts = try closed(firstBatch)
        let unloggedPort = try closed([unlogged])
        next.accessLog = .file(directory + "/second.log")
        next.accessLogFormat = .json
        #expect(try server.reload(next) == .applied(["access-log", "access-log-format"]))
        let secondBatch = try (0..<3).map { _ in try TestSocket(connectingTo: server.address) }
        for client in secondBatch { try exchange(client) }
        let secondPorts = try closed(secondBatch) + closed([spanning])
        finish(server)  // the writer writes what is left, then ends
        func ports(_ file: String, _ format: AccessLogFormat) throws -> [Int] {
            try AccessLogTests.lines(directory + "/" + file).map { Int(try AccessLogTests.fields($0, format)["client_port"] ?? "") ?? -1 }
        }
        let first = try ports("first.log", .text)
        let second = try ports("second.log", .json)
        #expect(first.sorted() == firstPorts.sorted(), "first: \(first), expected \(firstPorts)")
        #expect(second.sorted() == secondPorts.sorted(), "second: \(second), expected \(secondPorts)")
        #expect(!(first + second).contains(unloggedPort[0]))
    }

    /// A file turned off: connections that end after the reload get no line, and the file is
    /// closed (its lines are the ones before).
    @Test func accessLog_fileThenOff_stopsWriting() throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        let server = try startServer { $0.accessLog = .file(path) }
        func connection() throws {
            let client = try TestSocket(connectingTo: server.address)
            try client.sendAll(pattern(8))
            #expect(try client.receive(exactly: 8) == pattern(8))
            let before = server.statistics().connectionsClosed
            client.close()
            #expect(eventually(timeout: 10) { server.statistics().connectionsClosed > before })
        }
        try connection()
        var next = server.currentConfig
        next.accessLog = .off
        #expect(try server.reload(next) == .applied(["access-log"]))
        #expect(AccessLogTests.lines(path).count == 1, "the line of the connection that ended before is written at the switch")
        try connection()
        next.accessLog = .file(path)
        #expect(try server.reload(next) == .applied(["access-log"]))
        try connection()
        finish(server)
        #expect(AccessLogTests.lines(path).count == 2, "\(AccessLogTests.lines(path))")
    }

    /// After `wait()` (the access log and the checker have ended) a reload is refused: it would
    /// start a log writer or a checker nobody stops.
    @Test func reloadAfterTheEnd_isRefused() throws {
        let server = try startServer()
        finish(server)
        var next = server.currentConfig
        next.accessLog = .stderr
        #expect(throws: ReloadError.self) { try server.reload(next) }
        #expect(server.currentConfig.accessLog == .off)
    }

    /// An access log file that cannot be opened refuses the reload, naming the option.
    @Test func accessLog_unopenableFile_refusesTheReload() throws {
        let server = try startServer()
        var next = server.currentConfig
        next.accessLog = .file("/proc/fastalloc-cannot-create.log")
        next.idleTimeout = 7
        do {
            try server.reload(next)
            Issue.record("applied")
        } catch {
            #expect("\(error)".contains("--access-log: /proc/fastalloc-cannot-create.log"), "\(error)")
        }
        #expect(server.currentConfig.idleTimeout == 20 && server.statistics().reloads.failures == 1)
        finish(server)
    }

    /// --accept-proxy by reload: without --trusted-proxies it is refused (a header from anyone
    /// could forge any address); with them, connections accepted after must send a header
    /// (one without is closed), while one accepted before goes on without.
    @Test func acceptProxy_byReload_needsTrustedProxies_thenNewConnectionsNeedAHeader() throws {
        let server = try startServer()
        let old = try TestSocket(connectingTo: server.address)
        try old.sendAll(pattern(4))
        #expect(try old.receive(exactly: 4) == pattern(4))
        var next = server.currentConfig
        next.acceptProxy = true
        do {
            try server.reload(next)
            Issue.record("--accept-proxy without --trusted-proxies was applied")
        } catch {
            #expect(error.invalid?.field == "--trusted-proxies", "\(error)")
        }
        next.trustedProxies = [try AddressRange(parsing: "127.0.0.1/32")]
        next.proxyProtocolTimeout = 2
        #expect(try server.reload(next) == .applied(["accept-proxy", "proxy-protocol-timeout", "trusted-proxies"]))
        let bare = try TestSocket(connectingTo: server.address)
        try bare.sendAll(Array("hello, no header\r\n".utf8))
        #expect(throws: (any Error).self) { _ = try bare.receive(exactly: 1) }  // closed: not a PROXY header
        let proxied = try TestSocket(connectingTo: server.address)
        try proxied.sendAll(Array("PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n".utf8) + pattern(9))
        #expect(try proxied.receive(exactly: 9) == pattern(9))
        #expect(eventually(timeout: 10) { server.statistics().proxyProtocolErrors == 1 })  // counted just after the close
        #expect(server.statistics().proxyHeadersReceived == 1)
        try old.sendAll(pattern(6))
        #expect(try old.receive(exactly: 6) == pattern(6), "accepted before the reload: no header needed")
        for socket in [old, bare, proxied] { socket.close() }
        finish(server)
    }

    /// --proxy-protocol-upstream v1 by reload: a new connection's upstream gets the header; an
    /// upstream connection made before got none.
    @Test func proxyProtocolUpstream_byReload_headersOnNewConnections() throws {
        let upstream = try TestListener()
        let relay = try startServer(.relay, upstream: upstream.address)
        let before = try TestSocket(connectingTo: relay.address)
        try before.sendAll(Array("one".utf8))
        let farBefore = try upstream.accept()
        #expect(try farBefore.receive(exactly: 3) == Array("one".utf8))
        var next = relay.currentConfig
        next.proxyProtocolUpstream = .v1
        #expect(try relay.reload(next) == .applied(["proxy-protocol-upstream"]))
        let after = try TestSocket(connectingTo: relay.address)
        try after.sendAll(Array("two".utf8))
        let far = try upstream.accept()
        let line = "PROXY TCP4 127.0.0.1 \(relay.address.host) \(AccessLogTests.localPort(after)) \(relay.address.port)\r\n"
        #expect(try far.receive(exactly: line.utf8.count + 3) == Array((line + "two").utf8))
        try before.sendAll(Array("three".utf8))
        #expect(try farBefore.receive(exactly: 5) == Array("three".utf8), "no header midway in an established connection")
        for socket in [before, after, far, farBefore] { socket.close() }
        finish(relay)
    }

    /// The real binary: SIGHUP reads the file again; a new upstream set applies, a --workers
    /// change is refused, the log level changes (at `error` the reload's own notice is not
    /// logged; back at `info` it is), a broken file is refused; the server keeps serving and
    /// exits 0.
    @Test func sighup_readsTheFileAgain() throws {
        let first = try TestListener()
        let second = try TestListener()
        let scratch = try ConfigFileProcessTests.Scratch()
        func file(_ upstream: SocketAddress, workers: Int = 1, logLevel: String = "info") -> String {
            "mode: relay\nlisten: 127.0.0.1:0\nupstream:\n  - \(upstream)\nhealth-check: 'off'\nworkers: \(workers)\nstats: 'off'\n"
                + "log-level: \(logLevel)\n"
        }
        let path = try scratch.write("relay.yaml", file(first.address))
        let server = try ServerProcess(["--config", path])
        let address = try server.waitUntilListening()
        func exchange(via upstream: TestListener) throws {
            let client = try TestSocket(connectingTo: address)
            try client.sendAll(Array("ping".utf8))
            let far = try upstream.accept()
            #expect(try far.receive(exactly: 4) == Array("ping".utf8))
            client.close()
            far.close()
        }
        try exchange(via: first)
        _ = try scratch.write("relay.yaml", file(second.address))
        kill(server.pid, SIGHUP)
        #expect(server.read(timeout: 10) { _ in server.errors.contains("reload: --upstream applied to new connections (configuration generation 2)") },
                "stderr: \(server.errors)")
        try exchange(via: second)
        _ = try scratch.write("relay.yaml", file(first.address, workers: 2))
        kill(server.pid, SIGHUP)
        #expect(server.read(timeout: 10) { _ in server.errors.contains(
            "reload refused, nothing changed: --workers cannot change while running (an upgrade (SIGUSR2) or a restart applies it)") },
                "stderr: \(server.errors)")
        func refusals() -> Int { server.errors.components(separatedBy: "--workers cannot change while running").count - 1 }
        // Log level error: the reload's own notice is below it. It also moves the upstream back
        // to `first`, so that a new connection reaching `first` shows the file was read before it
        // is written again (rewritten sooner, both signals could read the later content).
        _ = try scratch.write("relay.yaml", file(first.address, logLevel: "error"))
        kill(server.pid, SIGHUP)
        var applied = false
        for _ in 0..<40 where !applied {
            let client = try TestSocket(connectingTo: address)
            try client.sendAll(Array("ping".utf8))
            if let far = try? first.accept(timeout: 0.25) {
                applied = true
                far.close()
            } else if let far = try? second.accept(timeout: 5) {
                far.close()  // not read yet: the old set
            }
            client.close()
        }
        #expect(applied, "the reload to log level error never reached first: \(server.errors)")
        // A refused reload (an error line) still shows at level error.
        _ = try scratch.write("relay.yaml", file(first.address, workers: 3, logLevel: "error"))
        kill(server.pid, SIGHUP)
        #expect(server.read(timeout: 10) { _ in refusals() == 2 }, "stderr: \(server.errors)")
        #expect(!server.errors.contains("reload: --log-level"), "at level error, no notice: \(server.errors)")
        _ = try scratch.write("relay.yaml", file(first.address, logLevel: "info"))
        kill(server.pid, SIGHUP)
        #expect(server.read(timeout: 10) { _ in
            server.errors.contains("reload: --log-level applied to new connections (configuration generation 4)")
        }, "stderr: \(server.errors)")
        _ = try scratch.write("relay.yaml", "mode: relay\nupstream: [\n")
        kill(server.pid, SIGHUP)
        #expect(server.read(timeout: 10) { _ in server.errors.contains("reload failed, the running configuration stays: \(path):3: YAML syntax error") },
                "stderr: \(server.errors)")
        try exchange(via: first)  // still the last good reload's set
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
    }
}
