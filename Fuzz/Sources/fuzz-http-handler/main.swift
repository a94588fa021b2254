// Fuzzes the stats endpoint's request handling without a socket: HTTPRequestHandler, the code
// HTTPConnection drives, fed arbitrary bytes in pieces the fuzzer chooses, with a stand-in for
// the server's figures (fixed text: cheap, so every route runs at full speed). The socket
// target, fuzz-http, drives the same code through a live endpoint, far slower.
//
// Input: byte 0 picks the options (bit 0: the server drains; bit 1: small limits; bits 2-4:
// how many split points follow; bit 5: a timeout at the end; bit 6: the client half-closes at
// the end; bit 7: compare with the whole input at once); then one byte per split point, the
// length of each piece; the rest is the last piece.
//
// Properties: every action's bytes are whole HTTP/1.1 responses (a known status with its
// reason, one Content-Length that matches its body, or no body for HEAD), nothing else;
// `Connection: close` on the last answer of a finish and on no other; a finish answers at least
// once; after a finish or a close nothing more is sent; a 408 only when a request was in
// progress at its deadline; no path, trace or environment in an error's body; and the pieces
// give the same statuses and the same decision as the whole input at once (but for which error
// refuses a request that breaks a limit and the syntax both), when bit 7 asks (it costs a second
// parse, so the fuzzer spends it on half of the inputs).
import FuzzSupport
import StatsEndpoint
#if canImport(Glibc)
import Glibc
#endif

final class FakeSource: StatsSource {
    var draining = false
    func prometheusText() -> String { "# HELP fake_total A stand-in.\n# TYPE fake_total counter\nfake_total 1\n" }
    func jsonDocument() -> String { "{\"fake\":1}" }
    var isDraining: Bool { draining }
}

/// One stand-in for every input (inputs run one at a time, on libFuzzer's thread).
nonisolated(unsafe) let source = FakeSource()
let defaultLimits = StatsLimits()
let smallLimits: StatsLimits = {
    var limits = StatsLimits()
    limits.maxURLBytes = 32
    limits.maxHeaderBytes = 128
    limits.maxRequestsPerConnection = 3
    limits.idleTimeout = 1
    return limits
}()

/// The reason phrase the endpoint sends with each status it knows; nil for any other status.
func reason(_ status: Int) -> [UInt8]? {
    switch status {
    case 200: return reasonOK
    case 400: return reason400
    case 404: return reason404
    case 405: return reason405
    case 408: return reason408
    case 413: return reason413
    case 414: return reason414
    case 431: return reason431
    case 503: return reason503
    default: return nil
    }
}
let reasonOK = Array("OK".utf8), reason400 = Array("Bad Request".utf8), reason404 = Array("Not Found".utf8)
let reason405 = Array("Method Not Allowed".utf8), reason408 = Array("Request Timeout".utf8)
let reason413 = Array("Content Too Large".utf8), reason414 = Array("URI Too Long".utf8)
let reason431 = Array("Request Header Fields Too Large".utf8), reason503 = Array("Service Unavailable".utf8)
let contentTypes = ["text/plain; charset=utf-8", "text/plain; version=0.0.4; charset=utf-8", "application/json",
                    "text/html; charset=utf-8"].map { Array($0.utf8) }
/// Headers with a fixed value, and the two with a checked one (their names, to the value).
let fixedHeaders = ["Cache-Control: no-store", "Allow: GET, HEAD"].map { Array($0.utf8) }
let connectionClose = Array("Connection: close".utf8)
let contentTypeName = Array("Content-Type: ".utf8)
let contentLengthName = Array("Content-Length: ".utf8)
let forbidden = ["/work/", "/home/", "/root/", "/tmp/", "/usr/", ".swift", "Fatal error", "Stack dump", "PATH=", "HOME="]
    .map { Array($0.utf8) }
let statusLine = Array("HTTP/1.1 ".utf8)
let headEnd: [UInt8] = [13, 10, 13, 10]

/// Bytes to search and compare with libc (memchr, memcmp): the fuzzer's own checks then cost
/// no coverage-traced comparison per byte, and the time goes to the code under test.
struct Bytes {
    let base: UnsafePointer<UInt8>
    let count: Int

    /// Whether the bytes hold `word` at `at`.
    func holds(_ word: [UInt8], at: Int) -> Bool {
        // Safe: the range is checked against `count` first; `word` is pinned for the call.
        at >= 0 && at + word.count <= count && word.withUnsafeBytes { memcmp(base + at, $0.baseAddress!, word.count) == 0 }
    }

    /// Whether the bytes in `range` are exactly `word`.
    func equal(_ range: Range<Int>, _ word: [UInt8]) -> Bool {
        range.count == word.count && holds(word, at: range.lowerBound)
    }

    /// Where `needle` first occurs in `range` (memchr for its first byte, memcmp for the rest;
    /// Glibc's module has no memmem).
    func find(_ needle: [UInt8], in range: Range<Int>) -> Int? {
        guard range.lowerBound >= 0, range.upperBound <= count else { return nil }
        var from = range.lowerBound
        while range.upperBound - from >= needle.count {
            // Safe: memchr reads only [from, upperBound), inside the buffer (checked above).
            guard let hit = memchr(base + from, Int32(needle[0]), range.upperBound - from) else { return nil }
            let at = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) - base
            if at + needle.count > range.upperBound { return nil }
            if holds(needle, at: at) { return at }
            from = at + 1
        }
        return nil
    }

    func text(_ range: Range<Int>) -> String {
        let range = range.clamped(to: 0..<count)
        // Safe: clamped to the buffer.
        return String(decoding: UnsafeBufferPointer(start: base + range.lowerBound, count: min(range.count, 80)), as: UTF8.self)
    }
}

let crlf: [UInt8] = [13, 10]

/// FuzzSupport's `check`, with the test made here: `check` is in another module and cannot be
/// inlined, so calling it for every comparison would cost a call and two closures each.
@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { check(false, message(), line: line) }
}

/// Checks that `bytes` is a run of whole responses, and calls `each` with every one's status
/// and whether it says `Connection: close`.
func responses(in array: [UInt8], _ each: (_ status: Int, _ closes: Bool) -> Void) {
    array.withUnsafeBufferPointer { buffer in
        guard let base = buffer.baseAddress else { return }
        responses(in: Bytes(base: base, count: buffer.count), each)
    }
}

func responses(in bytes: Bytes, _ each: (_ status: Int, _ closes: Bool) -> Void) {
    var at = 0
    while at < bytes.count {
        require(bytes.holds(statusLine, at: at), "not a response at \(at): \(bytes.text(at..<at + 80))")
        guard let end = bytes.find(headEnd, in: at..<bytes.count) else {
            require(false, "a response head without its end")
            return
        }
        // Status line: HTTP/1.1 NNN Reason
        let code = at + 9
        var status = 0
        for i in code..<min(code + 3, end) where bytes.base[i] >= 48 && bytes.base[i] <= 57 {
            status = status * 10 + Int(bytes.base[i] - 48)
        }
        var line = bytes.find(crlf, in: at..<end + 2) ?? end
        require(code + 4 <= line && bytes.base[code + 3] == 32 && reason(status).map { bytes.equal(code + 4..<line, $0) } == true,
              "status line \(bytes.text(at..<line))")
        // Headers, each known, Content-Length once.
        var length = -1
        var closes = false
        while line < end {
            let start = line + 2
            line = bytes.find(crlf, in: start..<end + 2) ?? end
            if bytes.holds(contentLengthName, at: start) {
                require(length == -1, "two Content-Length headers")
                length = 0
                for i in (start + contentLengthName.count)..<line {
                    require(bytes.base[i] >= 48 && bytes.base[i] <= 57 && length < 1 << 30, "Content-Length \(bytes.text(start..<line))")
                    length = length * 10 + Int(bytes.base[i] - 48)
                }
            } else if bytes.holds(contentTypeName, at: start) {
                let value = (start + contentTypeName.count)..<line
                require(contentTypes.contains { bytes.equal(value, $0) }, "content type \(bytes.text(value))")
            } else if bytes.equal(start..<line, connectionClose) {
                closes = true
            } else {
                require(fixedHeaders.contains { bytes.equal(start..<line, $0) }, "an unexpected header: \(bytes.text(start..<line))")
            }
        }
        require(length >= 0, "no Content-Length")
        let bodyStart = end + 4
        let available = bytes.count - bodyStart
        if available >= length && !(length > 0 && bytes.holds(statusLine, at: bodyStart)) {
            if status != 200 {
                let body = bodyStart..<bodyStart + length
                for word in forbidden {
                    require(bytes.find(word, in: body) == nil,
                          "a \(status) body contains \"\(String(decoding: word, as: UTF8.self))\": \(bytes.text(body))")
                }
            }
            at = bodyStart + length  // a body of Content-Length bytes
        } else {
            require(available == 0 || bytes.holds(statusLine, at: bodyStart), "a body of \(available) bytes for Content-Length \(length)")
            at = bodyStart  // a HEAD answer: no body
        }
        each(status, closes)
    }
}

/// What a run of actions amounts to: how many answers, the last status, whether (and how) it
/// ended; the bytes and every status too when another run's are to be compared.
struct Outcome {
    /// Whether to keep the bytes and statuses (to compare them with another run's).
    var keepsAll = false
    var bytes: [UInt8] = []
    var statuses: [Int] = []
    var answers = 0
    var lastStatus = 0
    var finished = false
    var closed = false

    /// Checks one action against what came before, and adds it.
    mutating func add(_ action: HTTPRequestHandler.Action, allowing408: Bool = false) {
        switch action {
        case .write(let bytes), .writeAndFinish(let bytes):
            let isFinish = if case .writeAndFinish = action { true } else { false }
            require(!(finished || closed) || bytes.isEmpty && !isFinish, "bytes or a finish after the close decision")
            var found = 0
            var closes = false
            responses(in: bytes) { status, close in
                require(!closes, "an answer after the one with Connection: close")
                require(status != 408 || allowing408, "a 408 without a deadline")
                closes = close
                found += 1
                lastStatus = status
                if keepsAll { statuses.append(status) }
            }
            require(closes == isFinish, "Connection: close \(closes) on the last answer, finish \(isFinish)")
            require(!isFinish || found > 0, "a finish without an answer")
            if keepsAll { self.bytes += bytes }
            answers += found
            finished = finished || isFinish
        case .close:
            closed = true
        }
    }
}

/// Byte-wise equality by memcmp (see `Bytes`).
func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    // Safe: both arrays are pinned for the call and have `a.count` bytes.
    a.count == b.count && a.withUnsafeBytes { a in b.withUnsafeBytes { b in a.count == 0 || memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
}

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    // Safe: libFuzzer's buffer is valid for this call; slices of it are used only inside.
    let input = UnsafeBufferPointer(start: start, count: count)
    let options = input[0]
    source.draining = options & 1 != 0
    let limits = options & 2 != 0 ? smallLimits : defaultLimits
    let splits = Int(options >> 2 & 7)
    let lengths = input.dropFirst().prefix(splits)
    let body = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(input)[min(1 + splits, count)...])
    var now: UInt64 = 1000
    let handler = HTTPRequestHandler(limits: limits, source: source, now: now)
    let comparesWithWhole = splits > 0 && options & 0x80 != 0
    var outcome = Outcome(keepsAll: comparesWithWhole)
    var offset = 0
    for length in lengths {  // the pieces, then the rest
        let end = min(offset + Int(length), body.count)
        now += 1
        outcome.add(handler.receive(UnsafeRawBufferPointer(rebasing: body[offset..<end]), now: now))
        offset = end
    }
    now += 1
    outcome.add(handler.receive(UnsafeRawBufferPointer(rebasing: body[offset...]), now: now))
    // The same bytes at once: the same answers and the same decision. Only the last answer of
    // a bad request may differ, between error statuses: a limit is checked when http_parser hands
    // over a piece of the target or a header, which depends on the split, so a request both too
    // long and malformed may be refused for either.
    if comparesWithWhole {
        let whole = HTTPRequestHandler(limits: limits, source: source, now: 1000)
        let action = whole.receive(body, now: 1001)
        var once = Outcome(keepsAll: true)
        switch action {
        case .write(let bytes), .writeAndFinish(let bytes):
            // The same bytes and decision need no second look; otherwise check and compare.
            if same(bytes, outcome.bytes) && whole.isFinished == outcome.finished { once = outcome } else { once.add(action) }
        case .close: once.add(action)
        }
        let refusals: Set<Int> = [400, 414, 431]
        let sameRefusal = once.finished && outcome.finished && once.statuses.count == outcome.statuses.count
            && once.statuses.dropLast() == outcome.statuses.dropLast()
            && refusals.contains(once.statuses.last ?? 0) && refusals.contains(outcome.statuses.last ?? 0)
        let identical = once.statuses == outcome.statuses && once.finished == outcome.finished && once.closed == outcome.closed
        require(identical || sameRefusal, "in \(splits + 1) pieces: \(outcome.statuses), finished \(outcome.finished); "
                  + "at once: \(once.statuses), finished \(once.finished)")
    }
    require(handler.isFinished == outcome.finished, "isFinished \(handler.isFinished), finished \(outcome.finished)")
    if options & 0x20 != 0 {
        let idle = handler.idleSince != nil
        let inProgress = !idle && !handler.isFinished
        let deadline = now + UInt64(limits.idleTimeout * 1000) + 1000
        require(handler.timeout(now: now) == nil, "a timeout before the deadline")
        let action = handler.timeout(now: deadline)
        require(action != nil, "no action at the deadline")
        if inProgress {
            require(action != .close, "a request in progress closed without its 408")
            var timed = outcome
            timed.add(action!, allowing408: true)
            require(timed.answers == outcome.answers + 1 && timed.lastStatus == 408 && timed.finished,
                    "the deadline's answer: \(timed.lastStatus), \(timed.answers - outcome.answers) answers")
            outcome = timed
        } else {
            require(action == .close, "an idle or finished connection at its deadline: \(action!)")
            outcome.add(action!)
        }
    }
    if options & 0x40 != 0 {
        handler.endOfInput()
        require(handler.isFinished, "not finished after the end of the input")
        require(handler.receive(UnsafeRawBufferPointer(rebasing: body[...]), now: now) == .write([]), "parsed after the end of the input")
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

runFuzzer(LLVMFuzzerTestOneInput)
