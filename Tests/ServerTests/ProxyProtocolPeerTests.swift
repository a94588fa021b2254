import Foundation
import ServerCore
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// A peer program (nginx, haproxy) started with posix_spawn, its stderr to a file, stopped by
/// its PID. (Not Foundation's Process: its run() reads /proc/self/fd while other tests open and
/// close descriptors, which AddressSanitizer caught as a heap overflow inside Foundation.)
final class PeerProcess {
    let pid: pid_t
    private var exited = false

    init(_ program: String, _ arguments: [String], stderrPath: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let status = posix_spawn(&pid, program, &actions, nil, argv, environ)
        guard status == 0 else { throw SocketError.failed("posix_spawn \(program)", status) }
        self.pid = pid
    }

    var isRunning: Bool {
        guard !exited else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exited = true }
        return !exited
    }

    /// SIGTERM to this process only, and its exit awaited.
    func stop() {
        guard isRunning else { return }
        kill(pid, SIGTERM)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        exited = true
    }

    deinit { stop() }
}

/// The PROXY protocol against real peers from Debian, started by the tests on 127.0.0.1 (CI
/// installs nginx-light and libnginx-mod-stream; where they are missing the tests show as
/// skipped, never as passed).
@Suite(.serialized) struct ProxyProtocolPeerTests {
    static let nginxModule = "/usr/lib/nginx/modules/ngx_stream_module.so"
    static let nginxAvailable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx")
        && FileManager.default.fileExists(atPath: nginxModule)
    static let haproxyAvailable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy")

    /// A free port on 127.0.0.1 (bound, read, closed: free unless someone takes it meanwhile).
    static func freePort() throws -> Int {
        let listener = try TestListener()
        return listener.address.port
    }

    /// Waits until something accepts on `port` (at most 10 s).
    static func waitForPort(_ port: Int, process: PeerProcess) throws {
        for _ in 0..<200 {
            if !process.isRunning { throw SocketError.failed("peer \(process.pid) exited", 0) }
            if let probe = try? TestSocket(connectingTo: SocketAddress(host: "127.0.0.1", port: port), timeout: 1) {
                probe.close()
                return
            }
            usleep(50_000)
        }
        throw SocketError.failed("nothing listens on \(port)", ETIMEDOUT)
    }

    /// nginx's stream module on 127.0.0.1:port requiring a PROXY header, answering each
    /// connection with what the header said: `$proxy_protocol_addr $proxy_protocol_port
    /// $proxy_protocol_server_addr $proxy_protocol_server_port`, then closing.
    static func startNginx(port: Int, directory: URL) throws -> (PeerProcess, URL) {
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("logs"), withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("nginx.conf")
        try """
            load_module \(nginxModule);
            worker_processes 1;
            daemon off;
            error_log stderr info;
            pid \(directory.path)/nginx.pid;
            events {}
            stream {
                server {
                    listen 127.0.0.1:\(port) proxy_protocol;
                    return "$proxy_protocol_addr $proxy_protocol_port $proxy_protocol_server_addr $proxy_protocol_server_port\\n";
                }
            }
            """.write(to: config, atomically: true, encoding: .utf8)
        let errors = directory.appendingPathComponent("stderr.log")
        let process = try PeerProcess("/usr/sbin/nginx", ["-p", directory.path, "-c", config.path], stderrPath: errors.path)
        do {
            try waitForPort(port, process: process)
        } catch {
            process.stop()
            throw error
        }
        return (process, errors)
    }

    @Test(.enabled(if: nginxAvailable), arguments: [ProxyProtocolSetting.v1, .v2])
    func nginx_seesEveryClientsAddressAndPort(_ setting: ProxyProtocolSetting) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fastalloc-nginx-\(getpid())-\(setting)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = try Self.freePort()
        let (nginx, errors) = try Self.startNginx(port: port, directory: directory)
        defer { nginx.stop() }  // our own child, by its PID
        let server = try startServer(.relay, upstream: SocketAddress(host: "127.0.0.1", port: port)) { config in
            config.proxyProtocolUpstream = setting
            config.healthCheck = .tcp  // checks send LOCAL / UNKNOWN: nginx must not log them as broken
            config.healthCheckInterval = 0.05
        }
        // 100 clients, 20 at a time: each must read its own address and port back from nginx.
        for _ in 0..<5 {
            let clients = try (0..<20).map { _ in try TestSocket(connectingTo: server.address) }
            for client in clients {
                let answer = String(decoding: try client.receiveUntilEOF(limit: 200), as: UTF8.self)
                let local = client.localAddress
                #expect(answer == "\(local.host) \(local.port) \(server.address.host) \(server.address.port)\n")
            }
            for client in clients { client.close() }
        }
        #expect(eventually(timeout: 10) { (server.statistics().upstreams.first?.checksPassed ?? 0) >= 3 }, "the checks ran")
        let final = finish(server)
        #expect(final.proxyHeadersSent == 100)
        let log = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
        let broken = log.split(separator: "\n").filter { $0.contains("broken header") }
        // One: the readiness probe of waitForPort, which connects and closes without a header
        // (`broken header: ""`). Every relayed connection and every check was well formed.
        #expect(broken.count == 1 && broken.first?.contains("broken header: \"\"") == true,
                "nginx rejected a header: \(broken.prefix(3))")
    }

    /// haproxy in TCP mode on 127.0.0.1:port, `send-proxy-v2` to `server`.
    static func startHaproxy(port: Int, server: SocketAddress, directory: URL) throws -> PeerProcess {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("haproxy.cfg")
        try """
            global
                nbthread 1
            defaults
                mode tcp
                timeout connect 5s
                timeout client 30s
                timeout server 30s
            listen front
                bind 127.0.0.1:\(port)
                server relay \(server.host):\(server.port) send-proxy-v2

            """.write(to: config, atomically: true, encoding: .utf8)
        let process = try PeerProcess("/usr/sbin/haproxy", ["-f", config.path, "-db"],
                                      stderrPath: directory.appendingPathComponent("stderr.log").path)
        do {
            try waitForPort(port, process: process)
        } catch {
            process.stop()
            throw error
        }
        return process
    }

    /// client -> haproxy (send-proxy-v2) -> relay (--accept-proxy, --proxy-protocol-upstream v1)
    /// -> nginx (listen proxy_protocol): nginx answers each client with the address and port it
    /// connected to haproxy from, through two relays that each saw only the one before it.
    @Test(.enabled(if: nginxAvailable && haproxyAvailable))
    func haproxyInFront_nginxBehind_theOriginalClientSurvivesBothHops() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fastalloc-chain-\(getpid())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let nginxPort = try Self.freePort()
        let (nginx, _) = try Self.startNginx(port: nginxPort, directory: directory.appendingPathComponent("nginx"))
        defer { nginx.stop() }
        let server = try startServer(.relay, upstream: SocketAddress(host: "127.0.0.1", port: nginxPort)) { config in
            config.acceptProxy = true
            config.trustedProxies = [try AddressRange(parsing: "127.0.0.1")]
            config.proxyProtocolUpstream = .v1
        }
        let haproxyPort = try Self.freePort()
        let haproxy = try Self.startHaproxy(port: haproxyPort, server: server.address, directory: directory.appendingPathComponent("haproxy"))
        defer { haproxy.stop() }
        let front = SocketAddress(host: "127.0.0.1", port: haproxyPort)
        for _ in 0..<5 {
            let clients = try (0..<20).map { _ in try TestSocket(connectingTo: front) }
            for client in clients {
                let answer = String(decoding: try client.receiveUntilEOF(limit: 200), as: UTF8.self)
                let local = client.localAddress
                #expect(answer == "\(local.host) \(local.port) 127.0.0.1 \(haproxyPort)\n",
                        "nginx saw the client and the address it connected to (haproxy's)")
            }
            for client in clients { client.close() }
        }
        haproxy.stop()
        let final = finish(server)
        // 100 clients, and the readiness probe's connection when haproxy relayed it before
        // the probe closed; every header received was relayed, none was refused.
        #expect((100...101).contains(final.proxyHeadersReceived) && final.proxyHeadersSent == final.proxyHeadersReceived,
                "received \(final.proxyHeadersReceived), sent \(final.proxyHeadersSent)")
        #expect(final.proxyProtocolErrors == 0)
    }
}
