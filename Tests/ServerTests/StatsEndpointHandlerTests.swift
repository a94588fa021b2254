import StatsEndpoint
import Testing

/// A stand-in for the server's figures: fixed text, a draining switch, and a count of renders.
final class FakeStatsSource: StatsSource {
    var draining = false
    private(set) var renders = 0

    func prometheusText() -> String {
        renders += 1
        return "# TYPE fake_total counter\nfake_total 1\n"
    }

    func jsonDocument() -> String {
        renders += 1
        return "{\"fake\":1}"
    }

    var isDraining: Bool { draining }
}

/// One response cut out of a handler's bytes.
struct HandlerResponse {
    var status: Int
    var headers: [String: String]
    var body: String
    var closes: Bool { headers["connection"] == "close" }
}

/// Splits `bytes` into whole responses; `head` says which answer HEAD requests (no body).
/// Records an issue for anything that is not a whole response.
func handlerResponses(_ bytes: [UInt8], head: Set<Int> = [], sourceLocation: SourceLocation = #_sourceLocation) -> [HandlerResponse] {
    var responses: [HandlerResponse] = []
    var rest = bytes[...]
    while !rest.isEmpty {
        guard let end = rest.indices.first(where: { rest[$0...].starts(with: [13, 10, 13, 10]) }) else {
            Issue.record("a response head without its end: \(String(decoding: rest.prefix(80), as: UTF8.self))",
                         sourceLocation: sourceLocation)
            return responses
        }
        let lines = String(decoding: rest[..<end], as: UTF8.self).split(separator: "\r\n")
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = String(line[line.index(after: colon)...].dropFirst())
        }
        let length = head.contains(responses.count) ? 0 : Int(headers["content-length"] ?? "") ?? -1
        let bodyStart = end + 4
        guard lines.first?.hasPrefix("HTTP/1.1 ") == true, length >= 0, rest.endIndex - bodyStart >= length else {
            Issue.record("not a whole response: \(String(decoding: rest.prefix(80), as: UTF8.self))", sourceLocation: sourceLocation)
            return responses
        }
        responses.append(HandlerResponse(status: Int(lines[0].split(separator: " ")[1]) ?? -1, headers: headers,
                                         body: String(decoding: rest[bodyStart..<bodyStart + length], as: UTF8.self)))
        rest = rest[(bodyStart + length)...]
    }
    return responses
}

extension HTTPRequestHandler {
    func receive(_ text: String, now: UInt64 = 0) -> Action {
        Array(text.utf8).withUnsafeBytes { receive($0, now: now) }
    }
}

extension HTTPRequestHandler.Action {
    var bytes: [UInt8] {
        switch self {
        case .write(let bytes), .writeAndFinish(let bytes): return bytes
        case .close: return []
        }
    }

    var finishes: Bool {
        if case .writeAndFinish = self { return true }
        return false
    }
}

/// The socket-free request handler: bytes in, answers and decisions out, no socket.
@Suite struct StatsEndpointHandlerTests {
    @Test func pipelinedRequests_areAnsweredInOrder_andTheConnectionStaysOpen() throws {
        let source = FakeStatsSource()
        let handler = HTTPRequestHandler(limits: StatsLimits(), source: source, now: 0)
        let action = handler.receive("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n"
                                         + "HEAD /stats HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n")
        #expect(!action.finishes)
        let responses = handlerResponses(action.bytes, head: [2])
        #expect(responses.map(\.status) == [200, 200, 200, 404, 200])
        try #require(responses.count == 5)
        #expect(responses.map(\.body) == ["ok\n", "# TYPE fake_total counter\nfake_total 1\n", "", responses[3].body, "ready\n"])
        #expect(responses[2].headers["content-length"] == "10")  // HEAD: the length of the GET's body
        #expect(responses.allSatisfy { !$0.closes })
        #expect(source.renders == 2)
        #expect(handler.idleSince == 0)
    }

    @Test func everyRoute_answersFromTheSource() {
        let source = FakeStatsSource()
        func get(_ path: String) -> HandlerResponse? {
            let handler = HTTPRequestHandler(limits: StatsLimits(), source: source, now: 0)
            return handlerResponses(handler.receive("GET \(path) HTTP/1.1\r\n\r\n").bytes).first
        }
        #expect(get("/stats")?.body == "{\"fake\":1}")
        #expect(get("/stats")?.headers["content-type"] == "application/json")
        #expect(get("/metrics")?.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        #expect(get("/")?.body.contains("<canvas") == true)
        #expect(get("/readyz")?.status == 200)
        source.draining = true
        #expect(get("/readyz")?.status == 503)
        #expect(get("/healthz?x=1")?.status == 200)
        let handler = HTTPRequestHandler(limits: StatsLimits(), source: source, now: 0)
        let delete = handlerResponses(handler.receive("DELETE / HTTP/1.1\r\n\r\n").bytes).first
        #expect(delete?.status == 405 && delete?.headers["allow"] == "GET, HEAD")
    }

    @Test func anySplitOfTheInput_givesTheSameAnswers() {
        let input = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /readyz HTTP/1.0\r\n\r\n".utf8)
        let whole = HTTPRequestHandler(limits: StatsLimits(), source: FakeStatsSource(), now: 0)
        let expected = input.withUnsafeBytes { whole.receive($0, now: 0) }
        #expect(expected.finishes)  // HTTP/1.0 without keep-alive: the last request
        for split in 0...input.count {
            let handler = HTTPRequestHandler(limits: StatsLimits(), source: FakeStatsSource(), now: 0)
            let first = input.withUnsafeBytes { handler.receive(UnsafeRawBufferPointer(rebasing: $0[..<split]), now: 0) }
            let second = input.withUnsafeBytes { handler.receive(UnsafeRawBufferPointer(rebasing: $0[split...]), now: 0) }
            #expect(first.bytes + second.bytes == expected.bytes, "split at \(split)")
            #expect(second.finishes || first.finishes && second == .write([]), "split at \(split)")
        }
        // Byte by byte, too.
        let handler = HTTPRequestHandler(limits: StatsLimits(), source: FakeStatsSource(), now: 0)
        var bytes: [UInt8] = []
        for byte in input { bytes += [byte].withUnsafeBytes { handler.receive($0, now: 0) }.bytes }
        #expect(bytes == expected.bytes)
    }

    // Regression (issue 14): returning 1 from on_headers_complete only skips the body, so the
    // parser went on to answer the request after its 413, and then the next one.
    @Test func requestWithABody_gets413Once_andNothingElseIsParsedOrAnswered() {
        let requests = [
            "POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /healthz HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "GET /stats HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
        ]
        for request in requests {
            let source = FakeStatsSource()
            let handler = HTTPRequestHandler(limits: StatsLimits(), source: source, now: 0)
            let action = handler.receive(request)
            let responses = handlerResponses(action.bytes)
            #expect(action.finishes, "\(request.prefix(30))")
            #expect(responses.map(\.status) == [413], "\(request.prefix(30))")
            #expect(responses.first?.closes == true)
            #expect(source.renders == 0, "\(request.prefix(30)): a route was rendered after the 413")
            #expect(handler.isFinished)
            #expect(handler.receive("GET /healthz HTTP/1.1\r\n\r\n") == .write([]))
        }
        // The body in a later read: still one 413, at the headers.
        let handler = HTTPRequestHandler(limits: StatsLimits(), source: FakeStatsSource(), now: 0)
        let headers = handler.receive("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n")
        #expect(headers.finishes && handlerResponses(headers.bytes).map(\.status) == [413])
        #expect(handler.receive("helloGET /healthz HTTP/1.1\r\n\r\n") == .write([]))
    }

    @Test func errors_areAnsweredOnce_withAClose() {
        var limits = StatsLimits()
        limits.maxURLBytes = 16
        limits.maxHeaderBytes = 64
        let cases: [(String, Int)] = [
            ("this is not http\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost x\r\n\r\n", 400),
            ("GET /\(String(repeating: "a", count: 20)) HTTP/1.1\r\n\r\n", 414),
            ("GET / HTTP/1.1\r\nX: \(String(repeating: "a", count: 70))\r\n\r\n", 431),
        ]
        for (request, status) in cases {
            let handler = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 0)
            let action = handler.receive(request + "GET /healthz HTTP/1.1\r\n\r\n")
            let responses = handlerResponses(action.bytes)
            #expect(action.finishes && responses.map(\.status) == [status] && responses[0].closes, "\(request.prefix(30))")
        }
    }

    @Test func maxRequestsPerConnection_closesAfterTheLastAnswer() {
        var limits = StatsLimits()
        limits.maxRequestsPerConnection = 2
        let handler = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 0)
        let action = handler.receive(String(repeating: "GET /healthz HTTP/1.1\r\n\r\n", count: 3))
        let responses = handlerResponses(action.bytes)
        #expect(action.finishes)
        #expect(responses.map(\.status) == [200, 200])
        #expect(responses.map(\.closes) == [false, true])
    }

    @Test func deadlines_idleCloses_slowRequestGets408_stuckFlushCloses() {
        var limits = StatsLimits()
        limits.idleTimeout = 1
        // Idle: nothing before the deadline, a close after it, without an answer.
        let idle = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 100)
        #expect(idle.idleSince == 100)
        #expect(idle.timeout(now: 1099) == nil)
        #expect(idle.timeout(now: 1100) == .close)
        #expect(idle.isFinished)
        // A request in progress counts from its first byte, even when it keeps trickling in.
        let slow = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 0)
        #expect(slow.receive("GET /hea", now: 500) == .write([]))
        #expect(slow.idleSince == nil)
        #expect(slow.receive("lth", now: 1400) == .write([]))
        #expect(slow.timeout(now: 1499) == nil)
        let timedOut = slow.timeout(now: 1500)
        #expect(timedOut?.finishes == true)
        #expect(handlerResponses(timedOut?.bytes ?? []).map(\.status) == [408])
        #expect(slow.receive("z HTTP/1.1\r\n\r\n", now: 1500) == .write([]))
        // After an answer the idle time starts again.
        let served = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 0)
        _ = served.receive("GET /healthz HTTP/1.1\r\n\r\n", now: 900)
        #expect(served.idleSince == 900)
        #expect(served.timeout(now: 1800) == nil)
        // A finished connection whose flush does not end is closed at the deadline.
        let finished = HTTPRequestHandler(limits: limits, source: FakeStatsSource(), now: 0)
        #expect(finished.receive("GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n", now: 200).finishes)
        #expect(finished.timeout(now: 1199) == nil)
        #expect(finished.timeout(now: 1200) == .close)
    }

    @Test func endOfInput_leavesAPartialRequestUnanswered() {
        let handler = HTTPRequestHandler(limits: StatsLimits(), source: FakeStatsSource(), now: 0)
        #expect(handler.receive("GET /healthz HTTP/1.1\r\n") == .write([]))
        handler.endOfInput()
        #expect(handler.isFinished)
        #expect(handler.receive("\r\n") == .write([]))
    }
}
