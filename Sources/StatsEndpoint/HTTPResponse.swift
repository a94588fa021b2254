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
    var body: String
    var extraHeaders: [(String, String)] = []

    init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String, extraHeaders: [(String, String)] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.extraHeaders = extraHeaders
    }

    /// Every status the endpoint sends, with its reason phrase.
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

    /// Appends the response to `bytes`: status line, headers (`Connection: close` when `close`),
    /// and the body unless it answers a HEAD request. Piece by piece, without building the text
    /// first: this runs for every request (and every input of fuzz-http-handler).
    func serialize(into bytes: inout [UInt8], head: Bool, close: Bool) {
        // Room for the whole response at once, growing geometrically: appending piece by piece
        // to a short array would reallocate it several times per response.
        let needed = bytes.count + 256 + contentType.utf8.count + (head ? 0 : body.utf8.count)
            + extraHeaders.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 4 }
        if bytes.capacity < needed { bytes.reserveCapacity(max(needed, 2 * bytes.capacity)) }
        bytes.append(contentsOf: "HTTP/1.1 ".utf8)
        HTTPResponse.appendDecimal(status, to: &bytes)
        bytes.append(UInt8(ascii: " "))
        bytes.append(contentsOf: HTTPResponse.reason(status).utf8)
        bytes.append(contentsOf: "\r\nContent-Type: ".utf8)
        HTTPResponse.append(contentType, to: &bytes)
        bytes.append(contentsOf: "\r\nContent-Length: ".utf8)
        HTTPResponse.appendDecimal(body.utf8.count, to: &bytes)
        bytes.append(contentsOf: "\r\nCache-Control: no-store\r\n".utf8)
        for (name, value) in extraHeaders {
            bytes.append(contentsOf: name.utf8)
            bytes.append(contentsOf: ": ".utf8)
            bytes.append(contentsOf: value.utf8)
            bytes.append(contentsOf: "\r\n".utf8)
        }
        if close { bytes.append(contentsOf: "Connection: close\r\n".utf8) }
        bytes.append(contentsOf: "\r\n".utf8)
        if !head { HTTPResponse.append(body, to: &bytes) }
    }

    /// Appends a string's UTF-8 in one copy (its contiguous storage), not element by element.
    static func append(_ text: String, to bytes: inout [UInt8]) {
        if text.utf8.withContiguousStorageIfAvailable({ bytes.append(contentsOf: $0) }) == nil {
            bytes.append(contentsOf: text.utf8)
        }
    }

    /// Appends `value` (>= 0) in decimal.
    static func appendDecimal(_ value: Int, to bytes: inout [UInt8]) {
        var divisor = 1
        while divisor <= value / 10 { divisor *= 10 }
        var rest = value
        while divisor > 0 {
            bytes.append(UInt8(ascii: "0") + UInt8(rest / divisor))
            rest %= divisor
            divisor /= 10
        }
    }
}
