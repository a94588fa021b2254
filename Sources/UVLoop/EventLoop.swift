import CLibUV
import FastAlloc
#if canImport(Glibc)
import Glibc
#endif

/// A libuv loop owned by one thread: every handle made on it, and every call on those handles,
/// belongs to that thread (only `AsyncWake.send()` may be called from others).
///
/// Handles are classes that keep themselves alive while libuv holds them: from creation until
/// their close callback, which is also where their C memory is freed.
public final class EventLoop {
    public let raw: UnsafeMutablePointer<uv_loop_t>
    /// Write requests, pooled: a queued write takes one and its completion returns it, so
    /// writing costs no heap allocation once the pool has grown to the peak of queued writes.
    let writeRequests: ThreadLocalPool<_WriteRequest>

    public init() throws(UVError) {
        _ = TCPStream.requestLayoutChecked
        raw = .allocate(capacity: 1)
        let status = uv_loop_init(raw)
        if status < 0 {
            raw.deallocate()
            throw UVError(status, "uv_loop_init")
        }
        writeRequests = try! ThreadLocalPool(config: PoolConfig(
            capacity: 64, growth: .exponential(2), maxCapacity: 1 << 20, name: "uv-write-requests"))
    }

    deinit {
        // Handles close asynchronously: let their close callbacks run, then close the loop.
        uv_run(raw, UV_RUN_NOWAIT)
        let status = uv_loop_close(raw)
        if status == 0 {
            raw.deallocate()
        }  // else: a handle is still open and points into the loop; leave the memory to it.
    }

    /// Runs until nothing is left to do or `stop()` is called.
    public func run() {
        uv_run(raw, UV_RUN_DEFAULT)
    }

    /// Runs one iteration; with `wait`, blocks for I/O if there is nothing ready.
    @discardableResult
    public func runOnce(wait: Bool = true) -> Bool {
        uv_run(raw, wait ? UV_RUN_ONCE : UV_RUN_NOWAIT) != 0
    }

    /// Makes `run()` return after the current iteration.
    public func stop() {
        uv_stop(raw)
    }

    /// The loop's cached time in milliseconds.
    public var nowMilliseconds: UInt64 { uv_now(raw) }

    /// A monotonic clock in nanoseconds (`uv_hrtime`).
    @inlinable
    public static func hrtime() -> UInt64 { uv_hrtime() }
}

@available(*, unavailable, message: "an EventLoop belongs to one thread")
extension EventLoop: Sendable {}

/// An IPv4 address and port.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    public let host: String
    public let port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `host:port` (IPv4 only). Errors say what was wrong.
    public init(parsing text: String) throws(AddressError) {
        guard let colon = text.lastIndex(of: ":") else {
            throw AddressError(text: text, reason: "expected HOST:PORT, like 127.0.0.1:7000")
        }
        let host = String(text[..<colon])
        guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw AddressError(text: text, reason: "the port must be a number from 0 to 65535")
        }
        var probe = sockaddr_in()
        guard uv_ip4_addr(host, Int32(port), &probe) == 0 else {
            throw AddressError(text: text, reason: "'\(host)' is not an IPv4 address")
        }
        self.init(host: host, port: port)
    }

    public var description: String { "\(host):\(port)" }

    /// Parses `host:port` where the host may also be a name, resolved now, once, to its first
    /// IPv4 address (`getaddrinfo`, as nginx resolves a `proxy_pass` name at startup). For a
    /// name whose address does not change while the process runs, like a Kubernetes Service.
    public init(resolving text: String) throws(AddressError) {
        do {
            try self.init(parsing: text)
            return
        } catch where error.reason.hasSuffix("is not an IPv4 address") {
            // a name: resolved below
        }
        let colon = text.lastIndex(of: ":")!  // init(parsing:) got as far as the host
        let host = String(text[..<colon])
        let port = Int(text[text.index(after: colon)...])!
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        defer { if let list { freeaddrinfo(list) } }
        guard status == 0, let first = list, let address = first.pointee.ai_addr, first.pointee.ai_family == AF_INET else {
            let reason = status == 0 ? "no IPv4 address" : String(cString: gai_strerror(status))
            throw AddressError(text: text, reason: "'\(host)' is neither an IPv4 address nor a name that resolves to one (\(reason))")
        }
        // Safe: with ai_family AF_INET, getaddrinfo's ai_addr points at a sockaddr_in that
        // lives until freeaddrinfo (deferred above); it is copied out before then.
        var ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        guard inet_ntop(AF_INET, &ip, &buffer, socklen_t(buffer.count)) != nil else {
            throw AddressError(text: text, reason: "'\(host)' resolved to an address that cannot be printed")
        }
        let length = buffer.firstIndex(of: 0) ?? buffer.count
        self.init(host: String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self), port: port)
    }


    /// Calls `body` with the C address.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) throws(UVError) -> R) throws(UVError) -> R {
        var address = sockaddr_in()
        try UVError.check(uv_ip4_addr(host, Int32(port), &address), "address \(self)")
        return try withUnsafePointer(to: &address) { (pointer) throws(UVError) -> R in
            // Safe: a sockaddr_in begins with the sockaddr header; libuv reads it for the call only.
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sockaddrPointer) throws(UVError) -> R in
                try body(sockaddrPointer)
            }
        }
    }
}

/// A `host:port` that could not be parsed.
public struct AddressError: Error, Sendable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String { "'\(text)': \(reason)" }
}
