import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Issue 14, item 4, end to end: the real `fastalloc-server` and `fastalloc-load` executables
/// given extreme values either refuse them (exit status 64, the option and its rule on stderr)
/// or run with them. Before the bounds, `fastalloc-server echo --idle-timeout 1e300` started
/// and died of SIGILL at its first sweep.
@Suite struct ConfigBoundsTests {
    @Test(arguments: [
        (["--idle-timeout", "1e300"], "--idle-timeout: '1e300' (expected: a time from 0 to 7d (0: none), like 60s)"),
        (["--drain-timeout", "1e300"], "--drain-timeout: '1e300' (expected: a time from 0 to 7d (0: close at once), like 10s)"),
        (["--write-timeout", "99999999999999999999"], "--write-timeout: '99999999999999999999' (expected: a time from 0 to 7d (0: none), like 30s)"),
        (["--tcp-keepalive", "1e300"], "--tcp-keepalive: '1e300' (expected: a time from 0 to 32767s (0: off; Linux's most), like 60s)"),
        (["--linger-timeout", "inf"], "--linger-timeout: 'inf' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["--workers", "9223372036854775807"], "--workers: 9223372036854775807 (expected: 1...256)"),
        (["--buffer-size", "99999999999999999999K"], "--buffer-size: '99999999999999999999K' (expected: a byte count like 65536, 64K or 1MiB)"),
        (["--high-watermark", "9223372036854775807"], "--high-watermark: 9223372036854775807 (expected: a byte count from 1 to 1GiB)"),
        (["--workers", "1", "--buffer-size", "1MiB", "--overflow-max", "2147483647"],
         "--overflow-max: 2147483647 (expected: total packet-buffer memory (workers × --local-buffers + --overflow-max) × --buffer-size at most the physical memory, "),
    ])
    func server_extremeValue_exits64_namingOptionAndRule(arguments: [String], message: String) throws {
        let server = try ChildProcess("fastalloc-server", ["echo", "--listen", "127.0.0.1:0", "--stats", "off"] + arguments)
        #expect(server.waitForExit() == 64, "stdout: \(server.output) stderr: \(server.errors)")
        #expect(server.errors.contains(message), "stderr: \(server.errors)")
        #expect(!server.output.contains("listening on"))
    }

    @Test func server_extremeValueFromTheEnvironment_exits64_namingTheVariable() throws {
        let server = try ChildProcess("fastalloc-server", ["echo", "--listen", "127.0.0.1:0", "--stats", "off"],
                                      environment: ["FASTALLOC_IDLE_TIMEOUT": "1e300"])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("--idle-timeout (from FASTALLOC_IDLE_TIMEOUT): '1e300' (expected: a time from 0 to 7d"),
                "stderr: \(server.errors)")
    }

    /// Every timeout at its maximum (and the keepalive at Linux's): the server starts, echoes,
    /// and drains on SIGTERM with status 0; its sweep and timers run with them.
    @Test func server_everyMaximumTimeout_isServed_andDrains() throws {
        let server = try ChildProcess("fastalloc-server", [
            "echo", "--listen", "127.0.0.1:0", "--stats", "off", "--workers", "2", "--idle-timeout", "7d",
            "--drain-timeout", "7d", "--write-timeout", "7d", "--linger-timeout", "7d", "--connect-timeout", "1h",
            "--tcp-keepalive", "32767s", "--high-watermark", "1GiB", "--max-connections", "1000000",
        ])
        let address = try server.waitUntilListening()
        let client = try TestSocket(connectingTo: address)
        try client.sendAll(pattern(10_000))
        #expect(try client.receive(exactly: 10_000) == pattern(10_000))
        // Past the first sweeps (at most a second apart): the server is still there and echoing.
        let deadline = EventLoop.hrtime() + 1_500_000_000
        var rounds = 0
        while EventLoop.hrtime() < deadline {
            try client.sendAll([UInt8(truncatingIfNeeded: rounds)])
            #expect(try client.receive(exactly: 1) == [UInt8(truncatingIfNeeded: rounds)])
            rounds += 1
            server.read(timeout: 0.05) { _ in false }  // the pause between rounds, draining the pipes
        }
        #expect(rounds > 1)
        // The drain (its timer armed for 7 days) lets the connection go on until the client ends it.
        kill(server.pid, SIGTERM)
        server.read(timeout: 5) { _ in server.errors.contains("draining") }
        #expect(server.errors.contains("draining"), "stderr: \(server.errors)")
        // That line comes before the workers act on the drain; the worker holding the client's
        // connection says when it has begun (a probe connection would be a second client).
        server.read(timeout: 10) { _ in server.errors.contains("draining: 1 connections may run") }
        #expect(server.errors.contains("draining: 1 connections may run"), "stderr: \(server.errors)")
        try client.sendAll(pattern(1000, seed: 5))
        #expect(try client.receive(exactly: 1000) == pattern(1000, seed: 5))
        client.shutdownWrite()
        #expect(try client.receiveUntilEOF() == [])
        client.close()
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
        #expect(server.output.contains("stopped: connections accepted 1"), "stdout: \(server.output)")
        #expect(server.output.contains("drain: 1 ended by themselves, 0 cut (reset)"), "stdout: \(server.output)")
    }

    @Test(arguments: [
        (["--rate", "1e-300"], "--rate: 1e-300 (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        (["--rate", "1e300"], "--rate: 1e+300 (expected: messages per second from 0.001 to 1000000000, like 10000)"),
        (["--duration", "1e300"], "--duration: 1e+300 (expected: a time > 0, at most 7d, like 10s or 500ms)"),
        (["--connect-timeout", "1e300s"], "--connect-timeout: '1e300s' (expected: a time > 0, at most 1h, like 5s)"),
        (["--messages", "9223372036854775807"], "--messages: 9223372036854775807 (expected: 1...1000000000)"),
        (["--connections", "100000", "--threads", "100000"], "--threads: 100000 (expected: 1...256)"),
        (["--connections", "1000000", "--depth", "65536"],
         "--depth: 65536 (expected: --connections × --depth at most 16777216 messages in flight (this run asks for 65536000000))"),
    ])
    func load_extremeValue_exits64_namingFlagAndRule(arguments: [String], message: String) throws {
        // Port 9 (discard): refused before any connection is tried.
        let load = try ChildProcess("fastalloc-load", ["--target", "127.0.0.1:9"] + arguments)
        #expect(load.waitForExit() == 64, "stdout: \(load.output) stderr: \(load.errors)")
        #expect(load.errors.contains(message), "stderr: \(load.errors)")
    }

    /// The fastest rate the load client accepts, and the slowest, against the real server: a
    /// bounded count, every byte checked, status 0.
    @Test(arguments: ["1000000000", "0.001"])
    func load_extremeRate_runsABoundedCount(rate: String) throws {
        let server = try ChildProcess("fastalloc-server", ["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--workers", "1"])
        let address = try server.waitUntilListening()
        let messages = rate == "0.001" ? "1" : "500"  // at 0.001/s only the message due at once
        let load = try ChildProcess("fastalloc-load", [
            "--target", "\(address)", "--connections", "1", "--rate", rate, "--messages", messages, "--json", "--connect-timeout", "1h",
        ])
        #expect(load.waitForExit(timeout: 30) == 0, "stdout: \(load.output) stderr: \(load.errors)")
        #expect(load.output.contains("\"messages\": \(messages),") || load.output.contains("\"messages\":\(messages),"),
                "stdout: \(load.output)")
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
    }
}

/// An executable of this package (built beside the test binary), started as a child process
/// with its output in pipes. Every wait is bounded; the process is killed (by its pid) if a
/// test leaves it running. (The shape of ProcessTests' ServerProcess, for any executable.)
final class ChildProcess {
    let pid: pid_t
    private let stdoutFD: Int32
    private let stderrFD: Int32
    /// The bytes as they came: a character may straddle two reads (a process may write its
    /// error in pieces), so they are decoded whole.
    private var outputBytes: [UInt8] = []
    private var errorBytes: [UInt8] = []
    var output: String { String(decoding: outputBytes, as: UTF8.self) }
    var errors: String { String(decoding: errorBytes, as: UTF8.self) }
    private var exitStatus: Int32?

    static func path(of name: String) -> String {
        var path = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &path, path.count - 1)
        let exe = String(decoding: path.prefix(max(count, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/") + "/" + name
    }

    init(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        let program = ChildProcess.path(of: name)
        guard access(program, X_OK) == 0 else { throw SocketError.failed("no executable \(program)", errno) }
        var outPipe: [Int32] = [0, 0]
        var errPipe: [Int32] = [0, 0]
        guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw SocketError.failed("pipe", errno) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        posix_spawn_file_actions_addclose(&actions, outPipe[0])
        posix_spawn_file_actions_addclose(&actions, errPipe[0])
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        // The server refuses to run as root unless told to; the tests run as root on CI.
        var environment = environment
        if geteuid() == 0 && environment["FASTALLOC_ALLOW_ROOT"] == nil { environment["FASTALLOC_ALLOW_ROOT"] = "1" }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid = pid_t()
        let status = posix_spawn(&pid, program, &actions, nil, argv, envp)
        Glibc.close(outPipe[1])
        Glibc.close(errPipe[1])
        guard status == 0 else {
            Glibc.close(outPipe[0])
            Glibc.close(errPipe[0])
            throw SocketError.failed("posix_spawn \(program)", status)
        }
        self.pid = pid
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)  // only the child this object started
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        Glibc.close(stdoutFD)
        Glibc.close(stderrFD)
    }

    /// Reads what the process prints until `done(stdout)` holds, both pipes close, or `timeout`
    /// seconds pass. Returns whether `done` held.
    @discardableResult
    func read(timeout: Double = 20, until done: (String) -> Bool) -> Bool {
        let deadline = EventLoop.hrtime() + UInt64(timeout * 1e9)
        var open = [stdoutFD, stderrFD]
        while !done(output), !open.isEmpty, EventLoop.hrtime() < deadline {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let left = Int32(max(1, (deadline - min(deadline, EventLoop.hrtime())) / 1_000_000))
            guard poll(&fds, nfds_t(fds.count), left) > 0 else { continue }
            for entry in fds where entry.revents != 0 {
                var chunk = [UInt8](repeating: 0, count: 4096)
                let count = Glibc.read(entry.fd, &chunk, chunk.count)
                if count <= 0 {
                    open.removeAll { $0 == entry.fd }
                } else if entry.fd == stdoutFD {
                    outputBytes += chunk[0..<count]
                } else {
                    errorBytes += chunk[0..<count]
                }
            }
        }
        return done(output)
    }

    /// The address from the server's `listening on HOST:PORT (...)` line.
    func waitUntilListening() throws -> SocketAddress {
        guard read(until: { $0.split(separator: "\n", omittingEmptySubsequences: false).dropLast().contains { $0.hasPrefix("listening on ") } }),
              let line = output.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
              let text = line.dropFirst("listening on ".count).split(separator: " ").first else {
            throw SocketError.failed("no 'listening on' line; stderr: \(errors)", 0)
        }
        return try SocketAddress(parsing: String(text))
    }

    /// Waits (bounded) for the process to end; its exit status (128 + the signal when a signal
    /// ended it), or nil on timeout.
    func waitForExit(timeout: Double = 20) -> Int32? {
        let deadline = EventLoop.hrtime() + UInt64(timeout * 1e9)
        while EventLoop.hrtime() < deadline {
            read(timeout: 0.05) { _ in false }  // keep the pipes drained; also the pause between checks
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                read(timeout: 1) { _ in false }
                exitStatus = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
                return exitStatus
            }
        }
        return nil
    }
}
