import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// The process an upgrade started: it runs the binary found at this process's path now (a new
/// release, once the package manager has replaced the file), with the same arguments and
/// environment, plus the hand-over. It has the listening sockets; until it says it is ready the
/// old process goes on accepting on them too.
///
/// ```swift
/// let successor = try Successor.start(executable: Successor.currentExecutable()!, arguments: CommandLine.arguments,
///                                     environment: env, listeners: server.listenerDescriptors, stats: stats.descriptor).get()
/// switch successor.waitUntilReady(timeout: 30) {   // blocks: call it off the event loops
/// case .ready: ...    // close our copies of the listeners, drain
/// case .failed(let why): ...   // keep serving
/// }
/// ```
public final class Successor: Sendable {
    public let pid: Int32
    /// The pipe's read end: "ready <pid>\n" arrives here; end of file means the process closed it
    /// (it exited, or failed before it was ready).
    private let readyDescriptor: Int32

    private init(pid: Int32, readyDescriptor: Int32) {
        self.pid = pid
        self.readyDescriptor = readyDescriptor
    }

    /// What became of the successor.
    public enum Outcome: Sendable, Equatable {
        /// It accepts on the sockets: the old process may close its copies.
        case ready
        /// It did not start (it has exited, or was killed at the deadline): the old process
        /// keeps serving. `reason` is for the log.
        case failed(reason: String)
    }

    /// This process's binary, resolved now (call it at start: if the file is replaced later,
    /// the path names the new one, which is what an upgrade runs).
    public static func currentExecutable() -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        // Safe: readlink writes at most `buffer.count - 1` bytes into the array and returns how
        // many; the array stays zero-terminated after them.
        let length = unsafe readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Starts `executable` with `arguments` (argv[0] first) and `environment`, handing it the
    /// listening sockets (`HandOver`). The descriptors are inherited, not copied: both processes
    /// hold the same sockets. Every other descriptor of this process is close-on-exec (libuv and
    /// this code open them so), so the successor gets only these.
    public static func start(executable: String, arguments: [String], environment: [String: String],
                             listeners: [Int32], stats: Int32?) -> Result<Successor, HandOverError> {
        var pipeEnds: [Int32] = [-1, -1]
        // Safe: uv_pipe writes two descriptors into the two-element array; it makes them
        // close-on-exec atomically (pipe2 O_CLOEXEC), so no other thread's exec can inherit them.
        let piped = unsafe uv_pipe(&pipeEnds, 0, 0)
        guard piped == 0 else {
            return .failure(HandOverError("pipe: \(systemError(-piped))"))
        }
        let handOver = HandOver(listeners: listeners, stats: stats, ready: pipeEnds[1], from: getpid())
        var childEnvironment = environment
        childEnvironment[HandOver.variable] = handOver.encoded
        // The inherited descriptors lose close-on-exec for the spawn only; nothing else in this
        // process starts programs meanwhile (upgrades are one at a time, on the control loop).
        let inherited = handOver.descriptors
        for descriptor in inherited { setCloseOnExec(descriptor, false) }
        defer { for descriptor in inherited where descriptor != pipeEnds[1] { setCloseOnExec(descriptor, true) } }

        var pid: pid_t = 0
        // Safe: the C strings live until withCStrings returns, after the spawn.
        let status = unsafe withCStrings(arguments) { argv in
            unsafe withCStrings(childEnvironment.map { "\($0.key)=\($0.value)" }.sorted()) { envp in
                unsafe spawn(&pid, executable, argv, envp)
            }
        }
        close(pipeEnds[1])  // ours; the successor has its copy (and closes it once ready)
        guard status == 0 else {
            close(pipeEnds[0])
            return .failure(HandOverError("cannot start \(executable): \(systemError(status))"))
        }
        return .success(Successor(pid: pid, readyDescriptor: pipeEnds[0]))
    }

    /// Blocks until the successor says it is ready, exits, or `timeout` seconds pass (then it is
    /// killed: a process that neither serves nor exits must not hold the sockets). Call once.
    public func waitUntilReady(timeout: Double) -> Outcome {
        defer { close(readyDescriptor) }
        let deadline = Successor.monotonicSeconds() + timeout
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64)
        while true {
            let left = deadline - Successor.monotonicSeconds()
            if left <= 0 {
                return abandon("did not say it was ready within \(timeout) s")
            }
            var poller = pollfd(fd: readyDescriptor, events: Int16(POLLIN), revents: 0)
            // Safe: one pollfd, a local.
            let polled = unsafe poll(&poller, 1, Int32(min(left * 1000, 1000)))
            if polled < 0 && errno != EINTR { return abandon("poll: errno \(errno)") }
            guard polled > 0 else { continue }
            // Safe: read writes at most `chunk.count` bytes into the array.
            let count = unsafe read(readyDescriptor, &chunk, chunk.count)
            if count < 0 {
                if errno == EINTR || errno == EAGAIN { continue }
                return abandon("read: errno \(errno)")
            }
            if count == 0 {
                // End of file without "ready": it failed. Its status says how (it may take a
                // moment to exit after closing the pipe).
                if let status = reap(waiting: true) { return .failed(reason: "PID \(pid) \(status)") }
                return abandon("closed the hand-over pipe without saying it was ready")
            }
            received += chunk.prefix(count)
            if received.last == UInt8(ascii: "\n") || received.count > 64 {
                let line = String(decoding: received.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
                if line == "ready \(pid)" { return .ready }
                return abandon("said '\(line)', not 'ready \(pid)'")
            }
        }
    }

    /// A successor that will not serve: killed (it may hold the sockets and must never take over
    /// after the old process gave up on it) and reaped.
    private func abandon(_ why: String) -> Outcome {
        kill(pid, SIGKILL)
        let status = reap(waiting: true).map { "; it \($0)" } ?? ""
        return .failed(reason: "PID \(pid) \(why); killed it\(status)")
    }

    /// Asks a successor that has not said it is ready to stop (SIGTERM: it drains, and it has
    /// accepted nothing yet). For an old process that is itself stopping meanwhile.
    public func cancel() {
        kill(pid, SIGTERM)
    }

    /// Waits for the successor's exit (bounded to 5 s) and describes it; nil if it is still running.
    private func reap(waiting: Bool) -> String? {
        var status: Int32 = 0
        let deadline = Successor.monotonicSeconds() + 5
        while true {
            // Safe: waitpid writes the status into a local.
            let result = unsafe waitpid(pid, &status, WNOHANG)
            if result == pid {
                let low = status & 0x7f
                return low == 0 ? "exited with status \((status >> 8) & 0xff)" : "was killed by signal \(low)"
            }
            if result < 0 && errno != EINTR { return nil }
            guard waiting, Successor.monotonicSeconds() < deadline else { return nil }
            usleep(10_000)
        }
    }

    static func monotonicSeconds() -> Double {
        var now = timespec()
        // Safe: clock_gettime writes one timespec, a local.
        unsafe clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    static func setCloseOnExec(_ descriptor: Int32, _ on: Bool) {
        let flags = fcntl(descriptor, F_GETFD)
        guard flags >= 0 else { return }
        _ = fcntl(descriptor, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC)
    }
}

extension HandOver {
    /// In the successor, once it accepts on the sockets: tells the old process, which then stops
    /// accepting and drains. Closes the pipe. False if the old process is gone (it still is
    /// our job to serve, so the caller only logs it).
    @discardableResult
    public func signalReady() -> Bool {
        let line = Array("ready \(getpid())\n".utf8)
        // Safe: write reads `line.count` bytes from the array.
        let written = unsafe line.withUnsafeBytes { unsafe write(ready, $0.baseAddress, $0.count) }
        close(ready)
        return written == line.count
    }
}

/// posix_spawn of `executable`: SIGHUP, SIGUSR1 and SIGUSR2 blocked in the new process (until it
/// ignores them), the default action for the others this one handles (exec resets handlers, not
/// the mask).
private func spawn(_ pid: inout pid_t, _ executable: String, _ argv: [UnsafeMutablePointer<CChar>?],
                   _ envp: [UnsafeMutablePointer<CChar>?]) -> Int32 {
    var attributes = posix_spawnattr_t()
    // Safe (each call below): the attributes and signal sets are locals, initialized before use
    // and destroyed after; argv and envp are nil-terminated arrays of C strings the caller keeps
    // alive for the call.
    unsafe posix_spawnattr_init(&attributes)
    defer { unsafe posix_spawnattr_destroy(&attributes) }
    // Blocked in the new process until it has set them up (it ignores them, then its watchers
    // take them): a reload or reopen signal sent meanwhile must not end it (their default action).
    var blocked = sigset_t()
    unsafe sigemptyset(&blocked)
    for number in [SIGHUP, SIGUSR1, SIGUSR2] { unsafe sigaddset(&blocked, number) }
    unsafe posix_spawnattr_setsigmask(&attributes, &blocked)
    var defaults = sigset_t()
    unsafe sigemptyset(&defaults)
    for number in [SIGTERM, SIGINT, SIGPIPE] { unsafe sigaddset(&defaults, number) }
    unsafe posix_spawnattr_setsigdefault(&attributes, &defaults)
    unsafe posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    return unsafe posix_spawn(&pid, executable, nil, &attributes, argv, envp)
}

/// The C library's message for an errno value (on the control loop's thread only: strerror's
/// buffer is shared; the waiting thread reports errno numbers).
func systemError(_ code: Int32) -> String {
    // Safe: strerror returns a NUL-terminated message, copied here before another call can
    // change it (callers: the control loop's thread, one at a time).
    unsafe String(cString: strerror(code))
}

/// Calls `body` with `strings` as a nil-terminated array of C strings, freed afterwards.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> R) -> R {
    // Safe: strdup copies each string into memory this function owns until the free below;
    // the array (and its closing nil) lives for the call.
    let pointers = unsafe strings.map { unsafe strdup($0) } + [nil]
    defer { unsafe pointers.forEach { unsafe free($0) } }
    return unsafe body(pointers)
}
