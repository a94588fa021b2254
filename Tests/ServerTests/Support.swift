import LoadClient
import Logging
import PacketBuffers
import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// A logger that keeps the test output quiet unless something is wrong.
let quietLogger: Logger = {
    var logger = Logger(label: "test-server") { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = .critical
        return handler
    }
    logger.logLevel = .critical
    return logger
}()

/// A server on 127.0.0.1, a free port, small timeouts; `configure` changes the rest.
func startServer(_ mode: ServerMode = .echo, upstream: SocketAddress? = nil,
                 _ configure: (inout ServerConfig) throws -> Void = { _ in }) throws -> Server {
    var config = ServerConfig(mode: mode)
    config.listen = SocketAddress(host: "127.0.0.1", port: 0)
    config.upstream = upstream
    config.workers = 2
    config.buffers = try PacketBufferConfig(bufferSize: 16 * 1024, localBuffers: 16, overflowInitial: 8, overflowMax: 256)
    config.drainTimeout = 5
    config.connectTimeout = 2
    config.idleTimeout = 20
    // No active health checks unless a test asks: a check is a connection to the upstream,
    // which a test upstream that accepts one connection would take for the client's.
    config.healthCheck = .off
    try configure(&config)
    return try Server(config: config, logger: quietLogger)
}

/// Drains the server, waits for its workers and checks what every test must end with: no
/// connection left, every pool at zero buffers in use.
@discardableResult
func finish(_ server: Server, sourceLocation: SourceLocation = #_sourceLocation) -> ServerStatistics {
    server.drain()
    let final = server.wait()
    #expect(final.connectionsActive == 0, "connections left: \(final.summary)", sourceLocation: sourceLocation)
    #expect(final.buffers.totalInUse == 0, "buffers in use: \(final.buffers)", sourceLocation: sourceLocation)
    for worker in final.buffers.workers {
        #expect(worker.inUse == 0, "worker \(worker.worker) has buffers out", sourceLocation: sourceLocation)
    }
    return final
}

/// A blocking TCP socket for tests, every call bounded by a receive/send timeout so that a
/// broken server fails the test instead of hanging it.
final class TestSocket: @unchecked Sendable {
    // @unchecked: used by one thread at a time (tests hand it over explicitly).
    let fd: Int32

    init(fd: Int32) { self.fd = fd }

    /// Connects to `address`; throws with errno's name when it fails.
    convenience init(connectingTo address: SocketAddress, timeout: Double = 10, receiveBuffer: Int32? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError.failed("socket", errno) }
        self.init(fd: fd)
        setTimeout(timeout)
        if var size = receiveBuffer {  // before connecting, so the window starts small
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = TestSocket.socketAddress(address)
        let status = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else { throw SocketError.failed("connect", errno) }
    }

    private var isClosed = false

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    deinit { close() }

    static func socketAddress(_ address: SocketAddress) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(address.port).bigEndian)
        inet_pton(AF_INET, address.host, &addr.sin_addr)
        return addr
    }

    func setTimeout(_ seconds: Double) {
        var time = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    func sendAll(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            guard sent > 0 else { throw SocketError.failed("send", errno) }
            offset += sent
        }
    }

    /// Reads exactly `count` bytes (throws on EOF or timeout first).
    func receive(exactly count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = result.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if got == 0 { throw SocketError.endOfFile(after: offset) }
            guard got > 0 else { throw SocketError.failed("recv", errno) }
            offset += got
        }
        return result
    }

    /// Reads until the peer closes; throws on a reset or timeout.
    func receiveUntilEOF(limit: Int = 64 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let got = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress!, $0.count, 0) }
            if got == 0 { return result }
            guard got > 0 else { throw SocketError.failed("recv", errno) }
            result.append(contentsOf: chunk[0..<got])
        }
        return result
    }

    func shutdownWrite() { Glibc.shutdown(fd, Int32(SHUT_WR)) }

    /// This end's address (getsockname): what the server sees as the client's.
    var localAddress: SocketAddress {
        var addr = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &addr.sin_addr, &text, socklen_t(text.count))
        return SocketAddress(host: String(cString: text), port: Int(UInt16(bigEndian: addr.sin_port)))
    }

    /// Closes with a reset (SO_LINGER 0) instead of a FIN.
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close()
    }
}

enum SocketError: Error, CustomStringConvertible, Equatable {
    case failed(String, Int32)
    case endOfFile(after: Int)

    var description: String {
        switch self {
        case .failed(let call, let code): return "\(call): \(String(cString: strerror(code))) (errno \(code))"
        case .endOfFile(let count): return "end of file after \(count) bytes"
        }
    }
}

/// A listening socket on 127.0.0.1 (free port) for upstreams that misbehave on purpose.
final class TestListener: @unchecked Sendable {
    let fd: Int32
    let address: SocketAddress

    init(backlog: Int32 = 16) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = TestSocket.socketAddress(SocketAddress(host: "127.0.0.1", port: 0))
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Bool in
                Glibc.bind(fd, raw, length) == 0 && listen(fd, backlog) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard bound else {
            Glibc.close(fd)
            throw SocketError.failed("bind/listen", errno)
        }
        address = SocketAddress(host: "127.0.0.1", port: Int(UInt16(bigEndian: addr.sin_port)))
    }

    deinit { Glibc.close(fd) }

    /// Accepts one connection, waiting at most `timeout` seconds.
    func accept(timeout: Double = 10) throws -> TestSocket {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { throw SocketError.failed("accept (timed out)", ETIMEDOUT) }
        let client = Glibc.accept(fd, nil, nil)
        guard client >= 0 else { throw SocketError.failed("accept", errno) }
        let socket = TestSocket(fd: client)
        socket.setTimeout(10)
        return socket
    }
}

/// A deterministic byte pattern.
func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 8) &+ seed) }
}

/// Pool exhaustion's second half: a load of 4 connections x 20 messages of 3,000 B starts while
/// `hogs` hold every buffer, then the hogs reset. The load's bytes must arrive late, not lost;
/// returns its report (nil if it could not run).
func loadWhileHogsLetGo(_ address: SocketAddress, hogs: [TestSocket]) -> LoadReport? {
    let load = Latch<LoadReport?>()
    let loader = ThreadHandle.start {
        var config = LoadConfig(target: address)
        config.connections = 4
        config.size = 3000
        config.depth = 2
        config.messagesPerConnection = 20
        config.threads = 1
        load.set(try? runLoad(config))
    }
    for hog in hogs { hog.reset() }
    loader.join()
    return load.wait()
}
