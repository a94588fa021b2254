// Fuzzes the stats endpoint's request handling end to end: a real server and its StatsEndpoint
// run in this process (127.0.0.1, ephemeral ports), and each input is sent as raw bytes on a
// new connection, which then half-closes and reads the answer to the end.
//
// Properties: the endpoint always answers or closes within 5 s; what it sends is a sequence
// of complete HTTP/1.1 responses with statuses from its known set and a Content-Length that
// matches (a HEAD answer has none; a reset may cut the last one short); no answer carries a
// file path, a stack trace, a Swift runtime message or an environment variable; and after
// every 64 inputs a fresh GET /healthz still gets 200. Crashes and memory errors stop the run
// (AddressSanitizer). The first byte picks how the input is split into writes.
// fuzz-http-handler drives the same request handling without the socket, far faster; this
// target keeps the socket, the loop and the real figures in the loop.
import FuzzSupport
import Logging
import ServerCore
import StatsEndpoint
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

let quiet = Logger(label: "fuzz") { _ in SwiftLogNoOpLogHandler() }
let server: Server = {
    var config = ServerConfig(mode: .echo)
    config.listen = SocketAddress(host: "127.0.0.1", port: 0)
    config.workers = 1
    return try! Server(config: config, logger: quiet)
}()
let stats: StatsEndpoint = {
    var limits = StatsLimits()
    limits.idleTimeout = 5
    return try! StatsEndpoint(server: server, address: SocketAddress(host: "127.0.0.1", port: 0), limits: limits, logger: quiet)
}()
let statsPort = UInt16(stats.address.port)

let knownStatuses: Set<Int> = [200, 400, 404, 405, 408, 413, 414, 431, 503]
/// What no answer may contain: paths of this machine or the sources, traces, environment.
let forbidden = ["/work/", "/home/", "/root/", "/tmp/", "/usr/", ".swift", "Fatal error", "fatalError",
                 "Stack dump", "#0 ", "0x0000", "PATH=", "HOME=", "FASTALLOC_", "libswiftCore"]

/// A connected, blocking socket to the endpoint with a 5 s receive timeout.
func connectToEndpoint() -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    check(fd >= 0, "socket: errno \(errno)")
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = statsPort.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    check(connected == 0, "connect to the stats port: errno \(errno)")
    var timeout = timeval(tv_sec: 5, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

/// Closes with a reset (linger 0), so that 100,000 inputs leave no TIME_WAIT behind.
func abort(_ fd: Int32) {
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    close(fd)
}

/// Sends `pieces`, half-closes, reads to the end. Returns the bytes and whether a reset ended them.
func exchange(_ pieces: [UnsafeBufferPointer<UInt8>]) -> (answer: [UInt8], reset: Bool) {
    let fd = connectToEndpoint()
    defer { abort(fd) }
    var reset = false
    sending: for piece in pieces where piece.count > 0 {
        var offset = 0
        while offset < piece.count {
            let sent = send(fd, piece.baseAddress! + offset, piece.count - offset, Int32(MSG_NOSIGNAL))
            if sent < 0 {
                check(errno == EPIPE || errno == ECONNRESET, "send: errno \(errno)")
                reset = true
                break sending  // the endpoint closed (it answered an error): read what it sent
            }
            offset += sent
        }
    }
    shutdown(fd, Int32(SHUT_WR))
    var answer: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count > 0 { answer += chunk[..<count]; continue }
        if count == 0 { break }
        check(errno != EAGAIN && errno != EWOULDBLOCK, "no answer and no close within 5 s (\(answer.count) bytes so far)")
        check(errno == ECONNRESET, "recv: errno \(errno)")
        reset = true
        break
    }
    return (answer, reset)
}

func find(_ needle: [UInt8], in bytes: ArraySlice<UInt8>) -> Int? {
    guard bytes.count >= needle.count else { return nil }
    var index = bytes.startIndex
    while index + needle.count <= bytes.endIndex {
        if bytes[index] == needle[0] && bytes[index..<index + needle.count].elementsEqual(needle) { return index }
        index += 1
    }
    return nil
}

/// Checks that `answer` is a run of complete responses (the last may be cut by a reset).
/// Returns their statuses.
func responses(in answer: [UInt8], reset: Bool) -> [Int] {
    var statuses: [Int] = []
    var rest = answer[...]
    let statusLine = Array("HTTP/1.1 ".utf8)
    while !rest.isEmpty {
        guard rest.starts(with: statusLine) || reset && statusLine.starts(with: rest) else {
            check(false, "an answer that is not an HTTP/1.1 response: \(String(decoding: rest.prefix(80), as: UTF8.self))")
            return statuses
        }
        guard let end = find(Array("\r\n\r\n".utf8), in: rest) else {
            check(reset, "a response head without its end, and no reset")
            return statuses
        }
        let head = String(decoding: rest[rest.startIndex..<end], as: UTF8.self)
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let status = Int(lines[0].dropFirst(9).prefix(3)) ?? -1
        check(knownStatuses.contains(status), "status \(status): \(lines[0])")
        statuses.append(status)
        let lengths = lines.dropFirst().compactMap { line -> Int? in
            line.lowercased().hasPrefix("content-length: ") ? Int(line.dropFirst(16)) : nil
        }
        check(lengths.count == 1, "\(lengths.count) Content-Length headers")
        let bodyStart = end + 4
        let length = lengths[0]
        let available = rest.endIndex - bodyStart
        if available >= length && !(length > 0 && rest[bodyStart...].starts(with: statusLine)) {
            rest = rest[(bodyStart + length)...]  // a body of Content-Length bytes
        } else if rest[bodyStart...].isEmpty || rest[bodyStart...].starts(with: statusLine) {
            rest = rest[bodyStart...]  // a HEAD answer: no body
        } else {
            check(reset, "a body of \(available) bytes for Content-Length \(length), and no reset")
            return statuses
        }
    }
    return statuses
}

import Synchronization
let inputCount = Atomic<Int>(0)

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    // Safe: libFuzzer's buffer is valid for this call; slices of it are used only inside.
    let bytes = UnsafeBufferPointer(start: start, count: count)
    let body = UnsafeBufferPointer(rebasing: bytes.dropFirst())
    let split = body.isEmpty ? 0 : Int(bytes[0]) % (body.count + 1)
    let pieces = [UnsafeBufferPointer(rebasing: body[..<split]), UnsafeBufferPointer(rebasing: body[split...])]
    let (answer, reset) = exchange(pieces)
    let text = String(decoding: answer, as: UTF8.self)
    for word in forbidden { check(!text.contains(word), "the answer contains \"\(word)\"") }
    let statuses = responses(in: answer, reset: reset)
    if body.isEmpty { check(statuses.isEmpty, "an answer to nothing") }
    let inputs = inputCount.add(1, ordering: .relaxed).newValue
    if inputs % 64 == 0 {
        let probe = Array("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)
        let (health, _) = probe.withUnsafeBufferPointer { exchange([$0]) }
        check(responses(in: health, reset: false) == [200], "GET /healthz after \(inputs) inputs: \(String(decoding: health.prefix(80), as: UTF8.self))")
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

_ = stats.address
runFuzzer(LLVMFuzzerTestOneInput)
