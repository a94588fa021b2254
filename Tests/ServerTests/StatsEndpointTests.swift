import Foundation
import LoadClient
import PacketBuffers
import ServerCore
import StatsEndpoint
import Testing
import TestSupport
import UVLoop

/// A parsed HTTP response, as a test reads it off a plain socket.
struct TestResponse {
    var status: Int
    var headers: [String: String]
    var body: String
}

extension TestSocket {
    /// Reads one response: status line and headers, then the body its Content-Length announces
    /// (none for the answer to a HEAD request, whose Content-Length describes the GET's body).
    func readResponse(head: Bool = false) throws -> TestResponse {
        var bytes: [UInt8] = []
        while !(bytes.count >= 4 && bytes.suffix(4) == [13, 10, 13, 10]) { bytes += try receive(exactly: 1) }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\r\n")
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = head ? 0 : Int(headers["content-length"] ?? "0")!
        let body = length > 0 ? try receive(exactly: length) : []
        return TestResponse(status: Int(lines[0].split(separator: " ")[1])!, headers: headers,
                            body: String(decoding: body, as: UTF8.self))
    }
}

/// One GET on a new connection.
func get(_ address: SocketAddress, _ path: String) throws -> TestResponse {
    let socket = try TestSocket(connectingTo: address)
    try socket.sendAll(Array("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".utf8))
    return try socket.readResponse()
}

/// The value of one Prometheus sample line `name{labels} value`, summed over the matching lines.
func metricSum(_ text: String, _ name: String, labels: String? = nil) -> Double {
    text.split(separator: "\n").filter { line in
        !line.hasPrefix("#") && (line.hasPrefix(name + " ") || line.hasPrefix(name + "{"))
            && (labels == nil || line.contains(labels!))
    }.reduce(0) { $0 + (Double($1.split(separator: " ").last!) ?? .nan) }
}

@Suite struct StatsEndpointTests {
    func start(_ configure: (inout ServerConfig) throws -> Void = { _ in }, limits: StatsLimits = StatsLimits()) throws -> (Server, StatsEndpoint) {
        let server = try startServer(.echo, configure)
        let stats = try StatsEndpoint(server: server, address: SocketAddress(host: "127.0.0.1", port: 0), limits: limits,
                                      logger: quietLogger)
        return (server, stats)
    }

    @Test func routes_answerWithTheirStatus() throws {
        let (server, stats) = try start()
        #expect(try get(stats.address, "/healthz").status == 200)
        let ready = try get(stats.address, "/readyz")
        #expect(ready.status == 200 && ready.body == "ready\n")
        let metrics = try get(stats.address, "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(metrics.body.contains("# TYPE fastalloc_bytes_received_total counter"))
        let json = try get(stats.address, "/stats?pretty=0")  // a query string is ignored
        #expect(json.status == 200 && json.headers["content-type"] == "application/json")
        #expect((try JSONSerialization.jsonObject(with: Data(json.body.utf8))) is [String: Any])
        let page = try get(stats.address, "/")
        #expect(page.status == 200 && page.body.contains("<canvas") && !page.body.contains("http://") && !page.body.contains("https://"))
        let missing = try get(stats.address, "/nope")
        #expect(missing.status == 404)
        finish(server)
        stats.stop()
    }

    @Test func readyz_is503WhileDraining() throws {
        let (server, stats) = try start()
        // A connection that stays open keeps the drain going while we ask.
        let client = try TestSocket(connectingTo: server.address)
        try client.sendAll([1])
        _ = try client.receive(exactly: 1)
        server.drain()
        // A drain lets open connections flow until they end (6e766cb): this one still echoes.
        try client.sendAll([2])
        #expect(try client.receive(exactly: 1) == [2])
        let ready = try get(stats.address, "/readyz")
        #expect(ready.status == 503)
        #expect(try get(stats.address, "/healthz").status == 200)
        #expect(metricSum(try get(stats.address, "/metrics").body, "fastalloc_draining") == 1)
        client.close()
        finish(server)
        stats.stop()
    }

    @Test func readyz_is503AfterStop_too() throws {
        let (server, stats) = try start()
        server.stop()
        #expect(server.statistics().shutdownPhase == .stopping)
        let ready = try get(stats.address, "/readyz")
        #expect(ready.status == 503 && ready.body == "draining\n")
        #expect(metricSum(try get(stats.address, "/metrics").body, "fastalloc_draining") == 1)
        finish(server)
        stats.stop()
    }

    @Test func badRequests_get4xx() throws {
        let (server, stats) = try start()
        func send(_ text: String) throws -> TestResponse {
            let socket = try TestSocket(connectingTo: stats.address)
            try socket.sendAll(Array(text.utf8))
            return try socket.readResponse()
        }
        #expect(try send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").status == 405)
        #expect(try send("DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").headers["allow"] == "GET, HEAD")
        #expect(try send("this is not http\r\n\r\n").status == 400)
        #expect(try send("GET / HTTP/1.1\r\nHost x\r\n\r\n").status == 400)
        #expect(try send("GET /metrics HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 9000))\r\n\r\n").status == 431)
        #expect(try send("GET /\(String(repeating: "a", count: 3000)) HTTP/1.1\r\n\r\n").status == 414)
        #expect(try send("GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").status == 413)
        finish(server)
        stats.stop()
    }

    // Regression (issue 14): on_headers_complete returned 1, which http_parser takes as "no
    // body", so it went on to complete the request, whose answer was built and written after
    // the 413 had closed the write side; that write failed and closed the connection at once,
    // dropping the answers still queued, the 413 among them.
    @Test func requestWithABody_behindPipelinedRequests_gets413Once_thenTheClose() throws {
        let (server, stats) = try start()
        // 900 dashboards (about 7 MB) to a client with a small receive window: more than the
        // kernel's buffers take, so many are still queued when the request with a body arrives.
        let socket = try TestSocket(connectingTo: stats.address, receiveBuffer: 4096)
        try socket.sendAll(Array((String(repeating: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", count: 900)
                                  + "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                                  + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").utf8))
        var statuses: [Int] = []
        while statuses.count < 903, let response = try? socket.readResponse() {
            statuses.append(response.status)
            if response.status == 413 { #expect(response.headers["connection"] == "close") }
        }
        #expect(statuses.count == 901)
        #expect(statuses.dropLast().allSatisfy { $0 == 200 })
        #expect(statuses.last == 413)
        #expect(try socket.receiveUntilEOF() == [])  // nothing after the 413, then the close
        finish(server)
        stats.stop()
    }

    @Test func requestWithABody_thenAPipelinedRequest_getsOnly413_thenTheClose() throws {
        let (server, stats) = try start()
        let requests = [
            "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n",
            // Chunked, with data and with an empty body: both declare a body.
            "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        ]
        for request in requests {
            let socket = try TestSocket(connectingTo: stats.address)
            try socket.sendAll(Array(request.utf8))
            let answer = String(decoding: try socket.receiveUntilEOF(), as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 413 "), "\(request.prefix(50)): \(answer.prefix(40))")
            #expect(answer.components(separatedBy: "HTTP/1.1 ").count == 2, "\(request.prefix(50)): more than one answer")
            #expect(answer.hasSuffix("this endpoint takes no request body\n"), "\(request.prefix(50))")
        }
        finish(server)
        stats.stop()
    }

    @Test func answers_revealNoPathTraceOrEnvironment() throws {
        let (server, stats) = try start()
        // Every kind of answer, good and bad, read whole (the body and the headers).
        let requests = ["GET / HTTP/1.1\r\n\r\n", "GET /metrics HTTP/1.1\r\n\r\n", "GET /stats HTTP/1.1\r\n\r\n",
                        "GET /../../etc/passwd HTTP/1.1\r\n\r\n", "GET /%00%ff HTTP/1.1\r\n\r\n", "\u{1}\u{2}garbage\r\n\r\n",
                        "GET /\(String(repeating: "a", count: 3000)) HTTP/1.1\r\n\r\n", "PUT / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
                        "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"]
        let forbidden = ["/work/", "/home/", "/root/", "/tmp/", "/usr/", ".swift", "Fatal error", "Stack dump",
                         "PATH=", "HOME=", "FASTALLOC_", "libswift", "0x0000"]
        for request in requests {
            let socket = try TestSocket(connectingTo: stats.address)
            try socket.sendAll(Array(request.utf8))
            socket.shutdownWrite()
            let answer = String(decoding: try socket.receiveUntilEOF(), as: UTF8.self)
            #expect(answer.hasPrefix("HTTP/1.1 "), "\(request.prefix(40)): \(answer.prefix(80))")
            for word in forbidden {
                #expect(!answer.contains(word), "the answer to \(request.prefix(40)) contains \(word)")
            }
        }
        finish(server)
        stats.stop()
    }

    @Test func halfClose_afterPipelinedRequests_stillGetsEveryAnswer() throws {
        // Found while writing Fuzz/fuzz-http: a client that sends its requests and half-closes
        // lost the answers still queued (EOF closed the connection at once). 900 dashboards
        // (about 7 MB) to a client with a small receive window are more than the kernel's
        // send buffer takes, so most are still queued when the EOF arrives.
        let (server, stats) = try start()
        let socket = try TestSocket(connectingTo: stats.address, receiveBuffer: 4096)
        try socket.sendAll(Array(String(repeating: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", count: 900).utf8))
        socket.shutdownWrite()
        var answers = 0
        var complete = true
        while answers < 901, let response = try? socket.readResponse() {
            complete = complete && response.status == 200 && response.body.contains("</html>")
            answers += 1
        }
        #expect(complete)
        #expect(answers == 900)
        finish(server)
        stats.stop()
    }

    @Test func head_hasTheHeadersAndNoBody_keepAliveAndPipelining() throws {
        let (server, stats) = try start()
        let socket = try TestSocket(connectingTo: stats.address)
        try socket.sendAll(Array("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        let head = try socket.readResponse(head: true)
        #expect(head.status == 200 && head.headers["content-length"] == "3")
        // Same connection (keep-alive), then three requests in one write (pipelining): three
        // answers, in order.
        try socket.sendAll(Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(try socket.readResponse().body == "ok\n")
        #expect(try socket.readResponse().status == 404)
        #expect(try socket.readResponse().body == "ready\n")
        socket.close()
        finish(server)
        stats.stop()
    }

    @Test func slowAndHalfOpenClients_areTimedOut_andConnectionsAreBounded() throws {
        var limits = StatsLimits()
        limits.idleTimeout = 0.3
        limits.maxConnections = 2
        let (server, stats) = try start(limits: limits)
        // A half-open client: connects and sends nothing. It is closed. (It connects first:
        // a client whose first bytes the endpoint has not read yet looks idle too.)
        let silent = try TestSocket(connectingTo: stats.address)
        // A slow client: half a request line, then nothing. It gets 408 and a close.
        let slow = try TestSocket(connectingTo: stats.address)
        try slow.sendAll(Array("GET /metr".utf8))
        // The limit: a third connection takes the place of the idle one, which is closed
        // without an answer (before issue 14 the third was refused; a new connection is refused
        // only when every open one has a request in progress: StatsEndpointLimitTests).
        let third = try TestSocket(connectingTo: stats.address)
        try third.sendAll(Array("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n".utf8))
        #expect(try third.readResponse().status == 200)
        #expect(try slow.readResponse().status == 408)
        #expect(try silent.receiveUntilEOF() == [])
        // Once they are gone, new clients are served again.
        slow.close()
        silent.close()
        var served = false
        for _ in 0..<100 where !served { served = (try? get(stats.address, "/healthz").status) == 200 }
        #expect(served)
        finish(server)
        stats.stop()
    }

    @Test func figures_matchTheTrafficSent_inMetricsAndJSON() throws {
        let (server, stats) = try start()
        var load = LoadConfig(target: server.address)
        load.connections = 4
        load.size = 1000
        load.messagesPerConnection = 25
        let report = try runLoad(load)
        #expect(report.succeeded)
        let bytes = Double(4 * 25 * 1000)
        let metrics = try get(stats.address, "/metrics").body
        #expect(metricSum(metrics, "fastalloc_bytes_received_total") == bytes)
        #expect(metricSum(metrics, "fastalloc_bytes_sent_total") == bytes)
        #expect(metricSum(metrics, "fastalloc_connections_accepted_total") == 4)
        #expect(metricSum(metrics, "fastalloc_buffer_size_bytes") == 16384)
        #expect(metricSum(metrics, "process_resident_memory_bytes") > 0)
        #expect(metricSum(metrics, "process_open_fds") > 0)
        for family in ["fastalloc_buffers_capacity", "fastalloc_buffers_in_use", "fastalloc_buffers_high_water",
                       "fastalloc_overflow_draws_total", "fastalloc_overflow_draw_failures_total",
                       "fastalloc_pool_growth_events_total", "fastalloc_lock_acquisitions_total", "fastalloc_lock_contended_total",
                       "fastalloc_lock_wait_seconds_total", "fastalloc_backpressure_pauses_total", "fastalloc_connections_active",
                       "fastalloc_connections_rejected_total", "fastalloc_upstream_connect_failures_total",
                       "process_cpu_seconds_total", "process_start_time_seconds"] {
            #expect(metrics.contains("# HELP \(family) ") && metrics.contains("# TYPE \(family) "), "\(family)")
        }
        let json = try JSONSerialization.jsonObject(with: Data(try get(stats.address, "/stats").body.utf8)) as! [String: Any]
        let totals = json["totals"] as! [String: Any]
        #expect((totals["bytes_received"] as! NSNumber).doubleValue == bytes)
        #expect((totals["bytes_sent"] as! NSNumber).doubleValue == bytes)
        #expect((json["workers"] as! [Any]).count == 2)
        // The document's shape: every field the dashboard and operators read, with its type.
        for key in ["draining", "monotonic_seconds", "buffer_size_bytes", "totals", "workers", "overflow", "process"] {
            #expect(json[key] != nil, "\(key)")
        }
        for worker in json["workers"] as! [[String: Any]] {
            let buffers = worker["buffers"] as! [String: Any]
            for key in ["capacity", "in_use", "high_water", "utilisation", "overflow_draws", "overflow_draw_failures"] {
                #expect(buffers[key] is NSNumber, "workers[].buffers.\(key)")
            }
            #expect((buffers["utilisation"] as! NSNumber).doubleValue >= 0 && (buffers["utilisation"] as! NSNumber).doubleValue <= 1)
        }
        let overflowJSON = json["overflow"] as! [String: Any]
        for key in ["capacity", "max_capacity", "in_use", "high_water", "utilisation", "draws", "draw_failures", "growth_events"] {
            #expect(overflowJSON[key] is NSNumber, "overflow.\(key)")
        }
        #expect(overflowJSON["recent_growth_events"] is [Any])
        #expect((overflowJSON["lock"] as? [String: Any])?["wait_seconds"] is NSNumber)
        // JSON and Prometheus give the same figures (no traffic between the two reads).
        #expect(metricSum(metrics, "fastalloc_connections_accepted_total") == (totals["connections_accepted"] as! NSNumber).doubleValue)
        #expect(metricSum(metrics, "fastalloc_buffers_capacity", labels: "pool=\"overflow\"")
                    == (overflowJSON["capacity"] as! NSNumber).doubleValue)
        finish(server)
        stats.stop()
    }

    @Test func growthEvents_appearAfterForcedGrowth() throws {
        // One local buffer per worker and an overflow pool that starts at 1 and grows by 1: a
        // client that sends and never reads makes its write queue hold buffers, so the
        // overflow pool must grow.
        let (server, stats) = try start { config in
            config.workers = 1
            config.buffers = try PacketBufferConfig(bufferSize: 1024, localBuffers: 1, overflowInitial: 1,
                                                    overflowGrowth: .linear(1), overflowMax: 8)
            config.highWatermark = 8192
            config.lowWatermark = 1024
        }
        let hog = try TestSocket(connectingTo: server.address, receiveBuffer: 2048)
        hog.setTimeout(0.3)
        let chunk = pattern(16 * 1024)
        for _ in 0..<1024 { guard (try? hog.sendAll(chunk)) != nil else { break } }
        let json = try JSONSerialization.jsonObject(with: Data(try get(stats.address, "/stats").body.utf8)) as! [String: Any]
        let overflow = json["overflow"] as! [String: Any]
        let events = overflow["recent_growth_events"] as! [[String: Any]]
        #expect((overflow["growth_events"] as! NSNumber).intValue >= 1)
        #expect(!events.isEmpty)
        if let first = events.first {
            #expect((first["capacity_after"] as! NSNumber).intValue > (first["capacity_before"] as! NSNumber).intValue)
        }
        let metrics = try get(stats.address, "/metrics").body
        #expect(metricSum(metrics, "fastalloc_pool_growth_events_total") >= 1)
        // The overflow pool was used, so its lock was taken: the lock figures move, and JSON and
        // Prometheus agree (the counters only grow, so the later /metrics is at least the JSON).
        let lock = overflow["lock"] as! [String: Any]
        let acquisitions = (lock["acquisitions"] as! NSNumber).doubleValue
        #expect(acquisitions > 0)
        #expect((lock["contended"] as! NSNumber).doubleValue <= acquisitions)
        #expect(metricSum(metrics, "fastalloc_lock_acquisitions_total") >= acquisitions)
        #expect(metricSum(metrics, "fastalloc_lock_contended_total") <= metricSum(metrics, "fastalloc_lock_acquisitions_total"))
        #expect(metricSum(metrics, "fastalloc_overflow_draws_total") >= (overflow["draws"] as! NSNumber).doubleValue)
        #expect(metricSum(metrics, "fastalloc_buffers_capacity", labels: "pool=\"overflow\"")
                    == (overflow["capacity"] as! NSNumber).doubleValue)
        hog.reset()
        finish(server)
        stats.stop()
    }
    @Test func floodedStatsPort_doesNotStopTheDataPath() throws {
        var limits = StatsLimits()
        limits.maxConnections = 16
        limits.idleTimeout = 0.5
        let (server, stats) = try start(limits: limits)
        // 200 stats connections that send half a request and hold on: the endpoint keeps 16,
        // closes the rest at once, and times the 16 out.
        var flood: [TestSocket] = []
        for _ in 0..<200 {
            guard let socket = try? TestSocket(connectingTo: stats.address, timeout: 2) else { continue }
            try? socket.sendAll(Array("GET /metr".utf8))
            flood.append(socket)
        }
        // Meanwhile the data path serves as usual.
        var load = LoadConfig(target: server.address)
        load.connections = 8
        load.size = 2000
        load.messagesPerConnection = 50
        let report = try runLoad(load)
        #expect(report.succeeded, "\(report.summary())")
        #expect(report.messages == 400)
        flood.removeAll()
        // And the endpoint recovers once the flood is gone.
        var served = false
        for _ in 0..<200 where !served { served = (try? get(stats.address, "/healthz").status) == 200 }
        #expect(served)
        finish(server)
        stats.stop()
    }
}
