import Foundation
import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The access log end to end: real servers (in process, and the executable for SIGUSR1) write
/// it to a temporary file; connections with known bytes and known endings; then every line is
/// parsed (text and JSON) and held against the clients' own sockets and traffic.
@Suite struct AccessLogTests {
    /// A fresh directory for one test's files.
    static func temporaryDirectory() -> String {
        var template = Array("/tmp/fastalloc-alog-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(made != nil, "mkdtemp failed")
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The local port of a client socket (what the server saw as the client's port).
    static func localPort(_ socket: TestSocket) -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket.fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The file's lines, read with open/read: Foundation's `String(contentsOfFile:)` leaks its
    /// buffer (LeakSanitizer: 4 KiB per call) when the file is missing or being written, which
    /// the reopen test polls for.
    static func lines(_ path: String) -> [String] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    /// A line as one dictionary whatever its format: text's `client=IP:PORT` and `upstream=…`
    /// become JSON's `_ip` and `_port`; JSON's numbers, nulls and lists become their text.
    static func fields(_ line: String, _ format: AccessLogFormat) throws -> [String: String] {
        var fields: [String: String] = [:]
        switch format {
        case .text:
            for pair in line.split(separator: " ") {
                let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                try #require(parts.count == 2, "not key=value: \(pair) in \(line)")
                #expect(fields[parts[0]] == nil, "\(parts[0]) twice in \(line)")
                fields[parts[0]] = parts[1]
            }
            for key in ["client", "upstream"] {
                guard let value = fields.removeValue(forKey: key) else { continue }
                if value == "-" {
                    fields[key + "_ip"] = "null"
                    fields[key + "_port"] = key == "client" ? "0" : "null"
                } else {
                    let address = try SocketAddress(parsing: value)
                    fields[key + "_ip"] = address.host
                    fields[key + "_port"] = String(address.port)
                }
            }
        case .json:
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
            let dictionary = try #require(object as? [String: Any], "not a JSON object: \(line)")
            for (key, value) in dictionary {
                switch value {
                case let list as [String]: fields[key] = list.joined(separator: ",")
                case is NSNull: fields[key] = "null"
                case let number as NSNumber: fields[key] = number.stringValue
                default: fields[key] = "\(value)"
                }
            }
        }
        return fields
    }

    /// Waits (bounded) until `condition` holds.
    static func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = EventLoop.hrtime() + UInt64(seconds * 1e9)
        while EventLoop.hrtime() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    /// What the test did with one connection, to find its line by port and check it.
    struct Expected {
        var port: Int
        var received: Int
        var sent: Int
        var reason: String
        var causes: String
        var minimumDuration = 0
    }

    /// Opens connections that end in the three ways a client can see: its FIN, its reset, and
    /// the idle timeout (1 s). Returns what each line must say (echo: the bytes come back).
    static func connectionsWithKnownEnds(_ address: SocketAddress, relay: Bool, server: Server) throws -> [Expected] {
        var expected: [Expected] = []
        let fin = try TestSocket(connectingTo: address)
        try fin.sendAll(pattern(3000))
        #expect(try fin.receive(exactly: 3000) == pattern(3000))
        fin.shutdownWrite()
        #expect(try fin.receiveUntilEOF() == [])
        expected.append(Expected(port: localPort(fin), received: 3000, sent: 3000, reason: "client_fin",
                                 causes: relay ? "client_fin,upstream_fin" : "client_fin"))
        fin.close()

        let reset = try TestSocket(connectingTo: address)
        try reset.sendAll(pattern(1234, seed: 1))
        #expect(try reset.receive(exactly: 1234) == pattern(1234, seed: 1))
        expected.append(Expected(port: localPort(reset), received: 1234, sent: 1234, reason: "client_reset",
                                 causes: relay ? "upstream_fin,client_reset" : "client_reset"))
        reset.reset()

        let idle = try TestSocket(connectingTo: address)
        try idle.sendAll(pattern(77, seed: 2))
        #expect(try idle.receive(exactly: 77) == pattern(77, seed: 2))
        #expect(try idle.receiveUntilEOF() == [], "the idle timeout closes it (a FIN, not a reset)")
        expected.append(Expected(port: localPort(idle), received: 77, sent: 77, reason: "idle_timeout", causes: "idle_timeout",
                                 minimumDuration: 1000))
        idle.close()
        // Every connection has ended on the server's side too (the reset one asynchronously).
        #expect(eventually { server.statistics().connectionsClosed == 3 })
        return expected
    }

    /// Every line parsed; one per expected connection; each exact.
    static func check(_ path: String, format: AccessLogFormat, expected: [Expected], relayTo upstream: SocketAddress? = nil,
                      startedAfter: Int64, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let lines = AccessLogTests.lines(path)
        #expect(lines.count == expected.count, "one line per connection: \(lines)", sourceLocation: sourceLocation)
        let parsed = try lines.map { try fields($0, format) }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        for want in expected {
            let matching = parsed.filter { $0["client_port"] == String(want.port) }
            try #require(matching.count == 1, "a line for port \(want.port): \(lines)", sourceLocation: sourceLocation)
            let line = matching[0]
            let what = "port \(want.port): \(line)"
            #expect(line["client_ip"] == "127.0.0.1", "\(what)", sourceLocation: sourceLocation)
            #expect(line["bytes_received"] == String(want.received), "\(what)", sourceLocation: sourceLocation)
            #expect(line["bytes_sent"] == String(want.sent), "\(what)", sourceLocation: sourceLocation)
            #expect(line["reason"] == want.reason, "\(what)", sourceLocation: sourceLocation)
            #expect(line["causes"] == want.causes, "\(what)", sourceLocation: sourceLocation)
            #expect(["0", "1"].contains(line["worker"] ?? ""), "\(what)", sourceLocation: sourceLocation)
            #expect(Int(line["duration_ms"] ?? "") ?? -1 >= want.minimumDuration, "\(what)", sourceLocation: sourceLocation)
            let start = try #require(line["start_time"], sourceLocation: sourceLocation)
            let date = ISO8601DateFormatter()
            date.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let started = try #require(date.date(from: start), "RFC 3339 with ms: \(start)", sourceLocation: sourceLocation)
            let startedMilliseconds = Int64((started.timeIntervalSince1970 * 1000).rounded())
            #expect(startedMilliseconds >= startedAfter - 5 && startedMilliseconds <= now, "\(what)", sourceLocation: sourceLocation)
            if let upstream {
                #expect(line["mode"] == "relay", "\(what)", sourceLocation: sourceLocation)
                if want.reason == "no_upstream" {
                    #expect(line["connect_ms"] == "-1", "\(what)", sourceLocation: sourceLocation)
                    #expect(line["upstream_bytes_sent"] == "0" && line["upstream_bytes_received"] == "0", "\(what)", sourceLocation: sourceLocation)
                } else {
                    #expect(Int(line["connect_ms"] ?? "") ?? -1 >= 0, "\(what)", sourceLocation: sourceLocation)
                    // Through the relay to an echo server: what went up came back.
                    #expect(line["upstream_bytes_sent"] == String(want.received), "\(what)", sourceLocation: sourceLocation)
                    #expect(line["upstream_bytes_received"] == String(want.sent), "\(what)", sourceLocation: sourceLocation)
                }
                #expect(line["upstream_ip"] == upstream.host && line["upstream_port"] == String(upstream.port), "\(what)",
                        sourceLocation: sourceLocation)
                #expect(line["tries"] == "1", "\(what)", sourceLocation: sourceLocation)
            } else {
                #expect(line["mode"] == "echo" && line["upstream_ip"] == nil && line["tries"] == nil, "\(what)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test(arguments: AccessLogFormat.allCases)
    func echo_aLinePerConnection_withExactBytesAndReasons(format: AccessLogFormat) throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        let started = Int64(Date().timeIntervalSince1970 * 1000)
        let server = try startServer(.echo) {
            $0.accessLog = .file(path)
            $0.accessLogFormat = format
            $0.idleTimeout = 1
        }
        let expected = try AccessLogTests.connectionsWithKnownEnds(server.address, relay: false, server: server)
        let final = finish(server)  // the drain; then the writer flushes what is left
        #expect(final.accessLogDropped == 0)
        try AccessLogTests.check(path, format: format, expected: expected, startedAfter: started)
    }

    @Test(arguments: AccessLogFormat.allCases)
    func relay_aLinePerConnection_withBothSidesBytes_andNoUpstream(format: AccessLogFormat) throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let started = Int64(Date().timeIntervalSince1970 * 1000)
        let upstream = try startServer(.echo)
        let relay = try startServer(.relay, upstream: upstream.address) {
            $0.accessLog = .file(directory + "/relay.log")
            $0.accessLogFormat = format
            $0.idleTimeout = 1
        }
        let expected = try AccessLogTests.connectionsWithKnownEnds(relay.address, relay: true, server: relay)
        finish(relay)
        finish(upstream)
        try AccessLogTests.check(directory + "/relay.log", format: format, expected: expected, relayTo: upstream.address, startedAfter: started)

        // A relay whose only upstream refuses: the client gets a clean end, the line says why.
        let closedPort = try TestListener().address  // bound, then closed when the listener goes
        let refusing = try startServer(.relay, upstream: closedPort) {
            $0.accessLog = .file(directory + "/refused.log")
            $0.accessLogFormat = format
        }
        let client = try TestSocket(connectingTo: refusing.address)
        #expect(try client.receiveUntilEOF() == [])
        let port = AccessLogTests.localPort(client)
        client.close()
        #expect(AccessLogTests.eventually { refusing.statistics().connectionsClosed == 1 })
        finish(refusing)
        try AccessLogTests.check(directory + "/refused.log", format: format, expected: [
            Expected(port: port, received: 0, sent: 0, reason: "no_upstream", causes: "client_fin,no_upstream"),
        ], relayTo: closedPort, startedAfter: started)
    }

    @Test func aMissingDirectory_isRefusedAtStart_namingTheOption() {
        #expect(performing: { try ServerConfig(mode: .echo, values: ["access-log": "/nonexistent-fastalloc-dir/access.log"], environment: [:]) },
                throws: ConfigErrorMatcher.field("--access-log"))
        #expect(performing: { try ServerConfig(mode: .echo, values: ["access-log": ""], environment: [:]) },
                throws: ConfigErrorMatcher.field("--access-log"))
        #expect((try? ServerConfig(mode: .echo, values: ["access-log": "stderr", "access-log-format": "json"], environment: [:]))?
            .accessLog == .stderr)
    }

    /// logrotate's way: rename the file, SIGUSR1, and the next lines go to a new file at the path.
    @Test func sigusr1_reopensTheFile() throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        let server = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--workers", "1", "--stats", "off", "--access-log", path])
        let address = try server.waitUntilListening()
        func connection(_ size: Int) throws -> Int {
            let client = try TestSocket(connectingTo: address)
            try client.sendAll(pattern(size))
            #expect(try client.receive(exactly: size) == pattern(size))
            client.shutdownWrite()
            #expect(try client.receiveUntilEOF() == [])
            return AccessLogTests.localPort(client)
        }
        let first = try connection(10)
        #expect(AccessLogTests.eventually { AccessLogTests.lines(path).count == 1 }, "the writer writes within its interval")
        #expect(rename(path, path + ".1") == 0)
        kill(server.pid, SIGUSR1)
        #expect(AccessLogTests.eventually { access(path, F_OK) == 0 }, "reopened: a new file at the path")
        let second = try connection(20)
        #expect(AccessLogTests.eventually { AccessLogTests.lines(path).count == 1 })
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
        let old = AccessLogTests.lines(path + ".1")
        let new = AccessLogTests.lines(path)
        #expect(old.count == 1 && old.first?.contains("client=127.0.0.1:\(first) ") == true, "\(old)")
        #expect(old.first?.contains(" bytes_received=10 bytes_sent=10 reason=client_fin ") == true, "\(old)")
        #expect(new.count == 1 && new.first?.contains("client=127.0.0.1:\(second) ") == true, "\(new)")
        #expect(new.first?.contains(" bytes_received=20 bytes_sent=20 reason=client_fin ") == true, "\(new)")
    }

    @Test func missingDirectory_stopsTheExecutable_namingTheOption() throws {
        let server = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--access-log", "/nonexistent-fastalloc-dir/a.log"])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("--access-log: /nonexistent-fastalloc-dir/a.log (expected: a file in a directory that exists, stderr or off)"),
                "stderr: \(server.errors)")
    }
}
