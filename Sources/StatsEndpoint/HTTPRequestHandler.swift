import CHTTPParser

/// One stats connection's HTTP without the socket: bytes in, http_parser, the routes, whole
/// responses out, and the decision to keep reading, to finish (flush, half-close, close) or to
/// close. `HTTPConnection` drives it from libuv; tests and the fuzzer drive it directly.
///
/// ```swift
/// let handler = HTTPRequestHandler(limits: StatsLimits(), source: source, now: 0)
/// switch handler.receive(bytes, now: 5) {
/// case .write(let answers): ...           // write them, keep reading
/// case .writeAndFinish(let answers): ...  // write them, then half-close and close
/// case .close: ...                        // close now
/// }
/// ```
///
/// Times are milliseconds of any monotonic clock (the endpoint uses its loop's). Not thread
/// safe: one thread at a time drives a handler.
public final class HTTPRequestHandler {
    /// What the driver does after an event.
    public enum Action: Equatable, Sendable {
        /// Write these bytes (whole responses in request order, possibly none); keep reading.
        case write([UInt8])
        /// Write these bytes (whole responses, the last one with `Connection: close`), then
        /// half-close and close. The handler parses and answers nothing more.
        case writeAndFinish([UInt8])
        /// Close now; nothing more is sent.
        case close
    }

    private enum State {
        /// No request byte since `since` (the last response, or the start).
        case idle(since: UInt64)
        /// Request bytes arrived from `since` on; the request must be whole within the timeout.
        case receiving(since: UInt64)
        /// No more requests (a final response, or the end of the input); a flush that has not
        /// ended by the timeout counted from `since` is cut short.
        case finished(since: UInt64)
    }

    public let limits: StatsLimits
    private let source: any StatsSource
    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)
    private var state: State
    /// Responses made during the current event, handed out in its action.
    private var output: [UInt8] = []
    /// The time of the current event (for callbacks).
    private var now: UInt64
    private var url: [UInt8] = []
    private var headerBytes = 0
    private var requests = 0

    public init(limits: StatsLimits, source: any StatsSource, now: UInt64) {
        self.limits = limits
        self.source = source
        self.now = now
        state = .idle(since: now)
        http_parser_init(parser, HTTP_REQUEST)
        // Safe: the parser lives exactly as long as this handler (freed in deinit), and its
        // callbacks run only inside http_parser_execute, called from receive() on self.
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        parser.deallocate()
    }

    /// True once a close decision is made: nothing more is parsed or answered.
    public var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// The time of the last response (or the start) while no request byte has arrived since;
    /// nil while a request is in progress or once finished.
    public var idleSince: UInt64? {
        if case .idle(let since) = state { return since }
        return nil
    }

    /// Bytes from the client (any split: a request may come in many pieces, or many in one).
    public func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64) -> Action {
        guard !isFinished, let base = bytes.baseAddress, bytes.count > 0 else { return .write([]) }
        self.now = now
        if case .idle = state { state = .receiving(since: now) }
        // Safe: `bytes` is valid for this call; http_parser reads it as chars only inside it.
        let parsed = base.withMemoryRebound(to: CChar.self, capacity: bytes.count) { data in
            withUnsafePointer(to: HTTPRequestHandler.settings) { http_parser_execute(parser, $0, data, bytes.count) }
        }
        if isFinished { return .writeAndFinish(takeOutput()) }  // a callback answered for the last time
        let errno = fastalloc_http_errno(parser)
        if errno != HPE_OK.rawValue && errno != HPE_PAUSED.rawValue || parsed != bytes.count && errno == HPE_OK.rawValue {
            respondAndFinish(HTTPResponse(status: 400, body: "bad request: \(String(cString: http_errno_description(http_errno(errno))))\n"))
        } else if fastalloc_http_upgrade(parser) != 0 {
            respondAndFinish(HTTPResponse(status: 400, body: "bad request: upgrades are not supported\n"))
        }
        return isFinished ? .writeAndFinish(takeOutput()) : .write(takeOutput())
    }

    /// The timeout check (the endpoint's sweep calls it): nil before the deadline. After it, an
    /// idle connection closes, a request still arriving gets 408 and a finish, and a flush that
    /// has not ended closes.
    public func timeout(now: UInt64) -> Action? {
        let limit = UInt64(limits.idleTimeout * 1000)
        switch state {
        case .idle(let since):
            guard now &- since >= limit else { return nil }
            state = .finished(since: since)
            return .close
        case .receiving(let since):
            guard now &- since >= limit else { return nil }
            respondAndFinish(HTTPResponse(status: 408, body: "request not received in time\n"))
            return .writeAndFinish(takeOutput())
        case .finished(let since):
            guard now &- since >= limit else { return nil }
            return .close
        }
    }

    /// The client sent its last byte (a half-close): nothing more is parsed; a request not yet
    /// whole is not answered.
    public func endOfInput() {
        switch state {
        case .idle(let since), .receiving(let since): state = .finished(since: since)
        case .finished: break
        }
    }

    private func takeOutput() -> [UInt8] {
        defer { output = [] }  // the next event's answers start a new array (no copy of this one)
        return output
    }

    /// Answers and ends the connection (the request cannot be parsed further).
    private func respondAndFinish(_ response: HTTPResponse) {
        switch state {
        case .idle(let since), .receiving(let since):
            response.serialize(into: &output, head: false, close: true)
            state = .finished(since: since)
        case .finished:
            break  // the final answer is out already
        }
    }

    // MARK: Parser callbacks (C function pointers; the handler comes from parser.data)

    static let settings: http_parser_settings = {
        var settings = http_parser_settings()
        settings.on_message_begin = { parser in
            HTTPRequestHandler.from(parser).messageBegan()
        }
        settings.on_url = { parser, at, length in
            HTTPRequestHandler.from(parser).urlBytes(at, length)
        }
        settings.on_header_field = { parser, _, length in
            HTTPRequestHandler.from(parser).headerBytes(length)
        }
        settings.on_header_value = { parser, _, length in
            HTTPRequestHandler.from(parser).headerBytes(length)
        }
        settings.on_headers_complete = { parser in
            HTTPRequestHandler.from(parser).headersComplete()
        }
        settings.on_body = { parser, _, _ in
            HTTPRequestHandler.from(parser).bodyArrived()
        }
        settings.on_message_complete = { parser in
            HTTPRequestHandler.from(parser).messageComplete()
        }
        return settings
    }()

    private static func from(_ parser: UnsafeMutablePointer<http_parser>?) -> HTTPRequestHandler {
        // Safe: `data` was set in init to this handler, which outlives the parse call.
        Unmanaged<HTTPRequestHandler>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    private func messageBegan() -> Int32 {
        url.removeAll(keepingCapacity: true)
        headerBytes = 0
        if case .idle = state { state = .receiving(since: now) }
        return 0
    }

    private func urlBytes(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        if url.count + length > limits.maxURLBytes {
            respondAndFinish(HTTPResponse(status: 414, body: "request target longer than \(limits.maxURLBytes) bytes\n"))
            return 1  // an error: http_parser stops
        }
        // Safe: http_parser passes `length` bytes at `at`, inside the buffer being parsed.
        if let at { url.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length)) }
        return headerBytes(length)
    }

    private func headerBytes(_ length: Int) -> Int32 {
        headerBytes += length
        if headerBytes > limits.maxHeaderBytes {
            respondAndFinish(HTTPResponse(status: 431, body: "request line and headers longer than \(limits.maxHeaderBytes) bytes\n"))
            return 1  // an error: http_parser stops
        }
        return 0
    }

    private func headersComplete() -> Int32 {
        let length = fastalloc_http_content_length(parser)
        let chunked = UInt32(parser.pointee.flags) & F_CHUNKED.rawValue != 0
        if chunked || length > 0 && length != UInt64.max {
            respondAndFinish(HTTPResponse(status: 413, body: "this endpoint takes no request body\n"))
            // Returning 1 from on_headers_complete would only mean "no body" (http_parser.h):
            // the parser would go on to on_message_complete and the next request. Pausing
            // makes http_parser_execute return now; the handler is finished and never resumes it.
            http_parser_pause(parser, 1)
        }
        return 0
    }

    private func bodyArrived() -> Int32 {
        // Not reached: requests with a body are refused in headersComplete. A defence all the same.
        respondAndFinish(HTTPResponse(status: 413, body: "this endpoint takes no request body\n"))
        return 1
    }

    private func messageComplete() -> Int32 {
        guard !isFinished else { return 1 }  // finishing: nothing more is answered; stop
        requests += 1
        var path = String(decoding: url, as: UTF8.self)
        if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        let method = fastalloc_http_method(parser)
        let keepAlive = http_should_keep_alive(parser) != 0 && requests < limits.maxRequestsPerConnection
        let response = StatsRoutes.respond(to: HTTPRequest(method: method, path: path, keepAlive: keepAlive), source: source)
        response.serialize(into: &output, head: method == HTTP_HEAD.rawValue, close: !keepAlive)
        if keepAlive {
            state = .idle(since: now)
            return 0
        }
        state = .finished(since: now)
        return 1  // an error: http_parser stops; nothing after this request is answered
    }
}
