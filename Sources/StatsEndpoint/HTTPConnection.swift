import CHTTPParser
import CLibUV
import UVLoop

/// A request the parser finished: method, path (query string dropped), and whether the
/// connection may stay open after the response.
struct HTTPRequest {
    var method: UInt32
    var path: String
    var keepAlive: Bool
}

/// An HTTP response: status, headers and body (omitted for HEAD).
struct HTTPResponse {
    var status: Int
    var contentType: String = "text/plain; charset=utf-8"
    var body: [UInt8]
    var extraHeaders: [(String, String)] = []

    init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String, extraHeaders: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = Array(body.utf8)
        self.extraHeaders = extraHeaders
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 431: return "Request Header Fields Too Large"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }

    func serialized(head: Bool, close: Bool) -> [UInt8] {
        var text = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\n"
        text += "Content-Type: \(contentType)\r\nContent-Length: \(body.count)\r\nCache-Control: no-store\r\n"
        for (name, value) in extraHeaders { text += "\(name): \(value)\r\n" }
        if close { text += "Connection: close\r\n" }
        text += "\r\n"
        var bytes = Array(text.utf8)
        if !head { bytes += body }
        return bytes
    }
}

/// The limits that keep the stats port from being used to exhaust the server.
public struct StatsLimits: Sendable {
    /// Stats connections open at once; beyond, new ones are closed at once.
    public var maxConnections = 64
    /// Bytes of request line and headers.
    public var maxHeaderBytes = 8192
    /// Bytes of the request target.
    public var maxURLBytes = 2048
    /// Requests served on one connection before it is closed (keep-alive).
    public var maxRequestsPerConnection = 1000
    /// Seconds a connection may sit between requests, and a request may take to arrive whole.
    public var idleTimeout: Double = 10
    public init() {}
}

/// One stats connection: bytes in, http_parser, a response per request, in order.
final class HTTPConnection: TCPStreamDelegate {
    unowned(unsafe) let endpoint: StatsLoop  // Safe: the loop owns its connections and outlives them.
    let stream: TCPStream
    let limits: StatsLimits
    private let parser = UnsafeMutablePointer<http_parser>.allocate(capacity: 1)
    private let readMemory = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    /// Responses queued to libuv, by token (their bytes must live until the write completes).
    private var pending: [UInt: UnsafeMutableRawBufferPointer] = [:]
    private var nextToken: UInt = 1
    private var url: [UInt8] = []
    private var headerBytes = 0
    private var inMessage = false
    private var requests = 0
    private var closing = false
    /// Loop time (ms) of the last completed response, or of the start of the current request.
    var lastActivity: UInt64
    var requestStartedAt: UInt64?
    var index = 0

    init(endpoint: StatsLoop, stream: TCPStream, limits: StatsLimits) {
        self.endpoint = endpoint
        self.stream = stream
        self.limits = limits
        lastActivity = stream.loop.nowMilliseconds
        http_parser_init(parser, HTTP_REQUEST)
        // Safe: the parser lives as long as this connection; callbacks run inside
        // http_parser_execute, called only from didRead while self is alive.
        parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        stream.delegate = self
    }

    deinit {
        parser.deallocate()
        readMemory.deallocate()
        for (_, bytes) in pending { bytes.deallocate() }
    }

    func start() {
        do { try stream.startReading() } catch { stream.close() }
    }

    func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        readMemory
    }

    func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard count > 0 else {
            if count == Int(UVError.endOfFile) && (closing || !pending.isEmpty) {
                // The client finished sending (a half-close): answers already queued still go
                // out, then the connection closes (finish: shutdown after the queued writes;
                // if a shutdown is under way already, its completion closes).
                finish()
            } else if count < 0 {
                close()  // an error, or EOF with nothing left to send
            }
            return
        }
        guard !closing else { return }  // a final response is on its way; ignore the rest
        let now = stream.loop.nowMilliseconds
        if !inMessage && requestStartedAt == nil { requestStartedAt = now }
        let parsed = buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: count) { bytes in
            withUnsafePointer(to: HTTPConnection.settings) { http_parser_execute(parser, $0, bytes, count) }
        }
        if closing { return }  // a callback already answered with an error and is closing
        let errno = fastalloc_http_errno(parser)
        if errno != HPE_OK.rawValue && errno != HPE_PAUSED.rawValue || parsed != count && errno == HPE_OK.rawValue {
            respondAndClose(HTTPResponse(status: 400, body: "bad request: \(String(cString: http_errno_description(http_errno(errno))))\n"))
            return
        }
        if fastalloc_http_upgrade(parser) != 0 {
            respondAndClose(HTTPResponse(status: 400, body: "bad request: upgrades are not supported\n"))
        }
    }

    // MARK: Parser callbacks (C function pointers; the connection comes from parser.data)

    static let settings: http_parser_settings = {
        var settings = http_parser_settings()
        settings.on_message_begin = { parser in
            HTTPConnection.from(parser).messageBegan()
        }
        settings.on_url = { parser, at, length in
            HTTPConnection.from(parser).urlBytes(at, length)
        }
        settings.on_header_field = { parser, at, length in
            HTTPConnection.from(parser).headerBytes(length)
        }
        settings.on_header_value = { parser, at, length in
            HTTPConnection.from(parser).headerBytes(length)
        }
        settings.on_headers_complete = { parser in
            HTTPConnection.from(parser).headersComplete()
        }
        settings.on_body = { parser, _, _ in
            // Bodies are refused in headersComplete; the parser never gets here with one.
            HTTPConnection.from(parser).bodyArrived()
        }
        settings.on_message_complete = { parser in
            HTTPConnection.from(parser).messageComplete()
        }
        return settings
    }()

    private static func from(_ parser: UnsafeMutablePointer<http_parser>?) -> HTTPConnection {
        // Safe: `data` was set in init to this connection, which outlives the parse call.
        Unmanaged<HTTPConnection>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    private func messageBegan() -> Int32 {
        inMessage = true
        url.removeAll(keepingCapacity: true)
        headerBytes = 0
        if requestStartedAt == nil { requestStartedAt = stream.loop.nowMilliseconds }
        return 0
    }

    private func urlBytes(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        if url.count + length > limits.maxURLBytes {
            respondAndClose(HTTPResponse(status: 414, body: "request target longer than \(limits.maxURLBytes) bytes\n"))
            return 1
        }
        if let at { url.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length)) }
        return headerBytes(length)
    }

    private func headerBytes(_ length: Int) -> Int32 {
        headerBytes += length
        if headerBytes > limits.maxHeaderBytes {
            respondAndClose(HTTPResponse(status: 431, body: "request line and headers longer than \(limits.maxHeaderBytes) bytes\n"))
            return 1
        }
        return 0
    }

    private func headersComplete() -> Int32 {
        let length = fastalloc_http_content_length(parser)
        if length > 0 && length != UInt64.max {
            respondAndClose(HTTPResponse(status: 413, body: "this endpoint takes no request body\n"))
            return 1  // stop: the body is not wanted (also for chunked bodies, below)
        }
        return 0
    }

    private func bodyArrived() -> Int32 {
        respondAndClose(HTTPResponse(status: 413, body: "this endpoint takes no request body\n"))
        return 1
    }

    private func messageComplete() -> Int32 {
        inMessage = false
        requestStartedAt = nil
        requests += 1
        var path = String(decoding: url, as: UTF8.self)
        if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        let method = fastalloc_http_method(parser)
        let keepAlive = http_should_keep_alive(parser) != 0 && requests < limits.maxRequestsPerConnection
        let response = endpoint.respond(to: HTTPRequest(method: method, path: path, keepAlive: keepAlive))
        write(response.serialized(head: method == HTTP_HEAD.rawValue, close: !keepAlive))
        lastActivity = stream.loop.nowMilliseconds
        if !keepAlive {
            finish()
            return 1  // stop parsing: nothing after this request is answered
        }
        return 0
    }

    // MARK: Writing and closing

    private func write(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        memory.copyBytes(from: bytes)
        let token = nextToken
        nextToken += 1
        do {
            // Safe: `memory` stays allocated and untouched until the completion for `token`.
            let queued = try stream.write(unsafeBytes: UnsafeRawBufferPointer(memory), token: token)
            if queued == 0 { memory.deallocate() } else { pending[token] = memory }
        } catch {
            memory.deallocate()
            close()
        }
    }

    func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        pending.removeValue(forKey: token)?.deallocate()
        if status < 0 { close() }
    }

    /// Answers and ends the connection (errors: the request cannot be parsed further).
    func respondAndClose(_ response: HTTPResponse) {
        guard !closing else { return }
        write(response.serialized(head: false, close: true))
        finish()
    }

    /// No more requests: flush, send FIN, and close once the flush is done.
    private func finish() {
        guard !closing else { return }
        closing = true
        do { try stream.shutdown() } catch { close() }
    }

    func stream(_ stream: TCPStream, didShutdown status: Int32) {
        close()
    }

    func close() {
        closing = true
        stream.close()
    }

    func streamDidClose(_ stream: TCPStream) {
        endpoint.connectionDidClose(self)
    }

    /// Called by the loop's sweep.
    func timedOut(now: UInt64) -> Bool {
        if let started = requestStartedAt {
            return now &- started >= UInt64(limits.idleTimeout * 1000)
        }
        return now &- lastActivity >= UInt64(limits.idleTimeout * 1000)
    }

    func expire() {
        if requestStartedAt != nil && !closing {
            respondAndClose(HTTPResponse(status: 408, body: "request not received in time\n"))
        } else {
            close()
        }
    }
}
