import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The real `fastalloc-server` executable (built with the tests, beside the test binary),
/// started as a child process with its output in pipes. Every wait is bounded.
final class ServerProcess {
    let pid: pid_t
    private let stdoutFD: Int32
    private let stderrFD: Int32
    private(set) var output = ""
    private(set) var errors = ""
    private var exitStatus: Int32?

    static var executable: String {
        var path = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &path, path.count - 1)
        let exe = String(decoding: path.prefix(max(count, 0)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let directory = exe.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        return directory + "/fastalloc-server"
    }

    /// Starts the server with `arguments`. With `fileLimit`, through `/bin/sh -c 'ulimit -n N;
    /// exec ...'`, so that it starts with that file descriptor limit (soft and hard).
    /// `executable`: another copy of the binary (the upgrade tests replace it while it runs).
    init(_ arguments: [String], environment: [String: String] = [:], fileLimit: Int? = nil, executable: String = ServerProcess.executable) throws {
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
        // Nothing else of the test process's: its sockets (other tests run beside this one) are
        // not close-on-exec, and a server started with a low file limit must not inherit them.
        // (glibc 2.34's posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module
        // does not import: looked up by name.)
        typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(symbol, to: CloseFrom.self)(&actions, 3)
        }
        let program = fileLimit == nil ? executable : "/bin/sh"
        let command = fileLimit.map { ["/bin/sh", "-c", "ulimit -n \($0) && exec \"$0\" \"$@\"", executable] }
            ?? [executable]
        let argv = (command + arguments).map { strdup($0) } + [nil]
        // The server refuses to run as root unless told to; the tests run as root on CI.
        var environment = environment
        if geteuid() == 0 && environment["FASTALLOC_ALLOW_ROOT"] == nil { environment["FASTALLOC_ALLOW_ROOT"] = "1" }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid = pid_t()
        let status = posix_spawn(&pid, program, &actions, nil, argv, envp)
        Glibc.close(outPipe[1])
        Glibc.close(errPipe[1])
        guard status == 0 else { throw SocketError.failed("posix_spawn \(executable)", status) }
        self.pid = pid
        stdoutFD = outPipe[0]
        stderrFD = errPipe[0]
    }

    deinit {
        if exitStatus == nil {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        Glibc.close(stdoutFD)
        Glibc.close(stderrFD)
    }

    /// Reads what the process printed until `done(stdout)` holds, the process ends, or
    /// `timeout` seconds pass. Returns whether `done` held.
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
                    output += String(decoding: chunk[0..<count], as: UTF8.self)
                } else {
                    errors += String(decoding: chunk[0..<count], as: UTF8.self)
                }
            }
        }
        return done(output)
    }

    /// The address from the `listening on HOST:PORT (...)` line.
    func waitUntilListening() throws -> SocketAddress {
        guard read(until: { $0.split(separator: "\n", omittingEmptySubsequences: false).dropLast().contains { $0.hasPrefix("listening on ") } }),
              let line = output.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
              let text = line.dropFirst("listening on ".count).split(separator: " ").first else {
            throw SocketError.failed("no 'listening on' line; stderr: \(errors)", 0)
        }
        return try SocketAddress(parsing: String(text))
    }

    /// Waits (bounded) for the process to end; returns its exit status, or nil on timeout.
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

@Suite struct ProcessTests {
    @Test func sigterm_drainsAndExitsZero_withASummary() throws {
        let server = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--workers", "2", "--stats", "127.0.0.1:0"])
        let address = try server.waitUntilListening()
        #expect(server.output.contains("(echo, 2 workers); stats on http://127.0.0.1:"))
        let client = try TestSocket(connectingTo: address)
        try client.sendAll(pattern(10_000))
        #expect(try client.receive(exactly: 10_000) == pattern(10_000))
        kill(server.pid, SIGTERM)
        _ = server.read(timeout: 5) { _ in server.errors.contains("draining") }
        #expect(server.errors.contains("draining"))
        // The drain lets the connection go on: it still echoes, and ends when the client ends it.
        try client.sendAll(pattern(20_000, seed: 3))
        #expect(try client.receive(exactly: 20_000) == pattern(20_000, seed: 3))
        // New connections are refused once every worker has closed its listener (the signal
        // reaches the workers asynchronously: poll, bounded).
        // A probe may land on a worker that has not drained yet: it is accepted and, closed by
        // the probe at once, ends before that worker's drain (so the summary may count it).
        var refused = false
        var probes = 0
        for _ in 0..<200 where !refused {
            if (try? TestSocket(connectingTo: address)) == nil { refused = true } else { probes += 1; usleep(10_000) }
        }
        #expect(refused, "connections still accepted during the drain")
        client.shutdownWrite()
        #expect(try client.receiveUntilEOF() == [])
        client.close()
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
        let accepted = server.output.split(separator: "\n").first { $0.hasPrefix("stopped: connections accepted ") }
            .flatMap { Int($0.dropFirst("stopped: connections accepted ".count).prefix { $0.isNumber }) }
        #expect(accepted.map { (1...(1 + probes)).contains($0) } == true, "accepted \(String(describing: accepted)), probes \(probes)")
        #expect(server.output.contains("active 0;"))
        #expect(server.output.contains("drain: 1 ended by themselves, 0 cut (reset)"), "\(server.output)")
        #expect(server.output.contains("buffers in use 0"))
    }

    @Test func secondSignal_exitsAtOnce() throws {
        let server = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--workers", "1", "--drain-timeout", "60s", "--stats", "off"])
        let address = try server.waitUntilListening()
        // A client that never closes keeps the drain waiting (up to its 60 s timeout).
        let client = try TestSocket(connectingTo: address)
        try client.sendAll([1])
        _ = try client.receive(exactly: 1)
        kill(server.pid, SIGTERM)
        _ = server.read(timeout: 5) { _ in server.errors.contains("draining") }
        #expect(server.errors.contains("draining"))
        kill(server.pid, SIGINT)
        #expect(server.waitForExit(timeout: 10) == 1)
        #expect(server.errors.contains("second signal"))
    }

    @Test func maxConnectionsBeyondWhatThePoolsServeFairly_warnsAtStart() throws {
        // 1 worker: 128 local + 1,024 overflow buffers, less a reserve of 72: room for 1,080.
        let over = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--workers", "1", "--stats", "off", "--max-connections", "5000"])
        _ = try over.waitUntilListening()
        #expect(over.errors.contains("--max-connections 5000 is more than the buffer pools serve fairly"), "stderr: \(over.errors)")
        #expect(over.errors.contains("room for 1080"))
        #expect(over.errors.contains("Raise --overflow-max to at least 4944 or lower --max-connections to 1080"))
        kill(over.pid, SIGTERM)
        #expect(over.waitForExit() == 0)
        // The defaults are consistent: no such warning.
        let defaults = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--workers", "1", "--stats", "off"])
        _ = try defaults.waitUntilListening()
        #expect(!defaults.errors.contains("serve fairly"), "stderr: \(defaults.errors)")
        kill(defaults.pid, SIGTERM)
        #expect(defaults.waitForExit() == 0)
    }

    @Test func portInUse_isOneClearLine_andExitStatus1() throws {
        let holder = try TestListener()
        let server = try ServerProcess(["echo", "--listen", "\(holder.address)", "--workers", "1", "--stats", "off"])
        #expect(server.waitForExit() == 1)
        // (As root, the allowed-root warning comes first: not part of the error.)
        let lines = server.errors.split(separator: "\n").filter { !$0.contains("running as root because") }
        #expect(lines.count == 1, "stderr: \(server.errors)")
        #expect(server.errors.contains("cannot listen on \(holder.address)"))
        #expect(server.errors.contains("EADDRINUSE"))
    }

    @Test func badOption_namesTheOptionAndTheRule_exit64() throws {
        let server = try ServerProcess(["echo", "--workers", "0"])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("--workers: 0 (expected: 1...256)"), "stderr: \(server.errors)")
    }

    @Test func badEnvironmentVariable_namesTheVariable() throws {
        let server = try ServerProcess(["echo"], environment: ["FASTALLOC_IDLE_TIMEOUT": "soon"])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("--idle-timeout (from FASTALLOC_IDLE_TIMEOUT): 'soon'"), "stderr: \(server.errors)")
    }

    @Test(.enabled(if: geteuid() == 0, "the refusal only shows when the tests run as root"))
    func asRoot_refusesToStart_unlessTold() throws {
        let refused = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--stats", "off"], environment: ["FASTALLOC_ALLOW_ROOT": "0"])
        #expect(refused.waitForExit() == 64)
        #expect(refused.errors.contains("refusing to run as root (effective uid 0)"), "stderr: \(refused.errors)")
        #expect(refused.errors.contains("--allow-root"), "stderr: \(refused.errors)")
        let allowed = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--allow-root"],
                                        environment: ["FASTALLOC_ALLOW_ROOT": "0"])
        _ = try allowed.waitUntilListening()
        allowed.read(timeout: 2) { _ in allowed.errors.contains("running as root") }
        #expect(allowed.errors.contains("running as root because --allow-root"), "stderr: \(allowed.errors)")
        kill(allowed.pid, SIGTERM)
        #expect(allowed.waitForExit() == 0)
    }

    @Test func modeAndListenFromTheEnvironment() throws {
        let server = try ServerProcess([], environment: ["FASTALLOC_MODE": "echo", "FASTALLOC_LISTEN": "127.0.0.1:0",
                                                         "FASTALLOC_WORKERS": "1", "FASTALLOC_STATS": "off"])
        let address = try server.waitUntilListening()
        #expect(server.output.contains("(echo, 1 worker)\n"))
        let client = try TestSocket(connectingTo: address)
        try client.sendAll([42])
        #expect(try client.receive(exactly: 1) == [42])
        client.close()
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0)
    }
}
