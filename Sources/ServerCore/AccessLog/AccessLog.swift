import Logging
import FastAlloc
import Synchronization
import Threads
#if canImport(Glibc)
import Glibc
#endif

/// The access log: a line per connection, written off the data path. Each worker copies a
/// fixed-size `AccessLogRecord` into its own `AccessLogRing` when a connection ends (no String,
/// no allocation, never blocking; a full ring drops the record and the worker counts it); one
/// writer thread drains every ring, formats the lines into a preallocated buffer and writes
/// them in batches, waking every 100 ms or when a ring is a quarter full. SIGUSR1 reopens the
/// file (for logrotate); `finish()`, once the workers have ended, writes what is left and stops
/// the thread. A reload (SIGHUP) may change the target and the format (`switchTo`): the writer
/// writes what the rings hold to the old target, then takes the new one; with the target off,
/// what it drains is dropped.
public final class AccessLog: @unchecked Sendable {
    // @unchecked: `target`, `format`, `descriptor` and `output` belong to the writer thread once
    // it has started (before that, to the thread that made the log); `pending` is behind its
    // mutex; the rest is immutable or atomic.
    private(set) var target: AccessLogTarget
    private(set) var format: AccessLogFormat
    /// A switch asked for by a reload, not taken by the writer yet, and the number of the last
    /// one asked for (`switchTo`).
    private let pending = Mutex<(change: Switch?, number: UInt64)>((nil, 0))
    /// The number of the last switch the writer has made (a reload waits for its own).
    private let switchesApplied = Atomic<UInt64>(0)
    /// One ring per worker, by worker index.
    let rings: [AccessLogRing]
    /// The writer sleeps on `wake` (at most `intervalNanoseconds`, on the monotonic clock); a
    /// worker whose ring reaches `wakeThreshold` signals it (without the mutex: never blocks;
    /// a wake-up lost to the race costs at most one interval).
    private let wake: UnsafeMutablePointer<pthread_cond_t>
    private let wakeMutex: UnsafeMutablePointer<pthread_mutex_t>
    let wakeThreshold: Int
    private let reopenRequested = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    /// Lines written, and writes that failed (their lines are lost).
    let linesWritten = Atomic<UInt64>(0)
    let writeFailures = Atomic<UInt64>(0)
    private var descriptor: Int32
    private var output: ByteOutput
    private var thread: ThreadHandle?
    private let logger: Logger

    /// Records each worker's ring holds.
    static let ringCapacity = 4096
    /// The writer's longest sleep.
    static let intervalNanoseconds = 100_000_000
    /// Bytes formatted before a write (a batch).
    static let batchBytes = 64 * 1024

    /// Opens the log (a file: for appending, created 0644 if absent) for `workers` workers.
    /// Throws a `ConfigError` naming `--access-log` when the file cannot be opened. Nil when
    /// `target` is off.
    public init?(target: AccessLogTarget, format: AccessLogFormat, workers: Int, logger: Logger) throws(ConfigError) {
        switch target {
        case .off: return nil
        case .stderr: descriptor = 2
        case .file(let path):
            let opened = AccessLog.open(path)
            guard opened >= 0 else {
                throw ConfigError(field: "--access-log", value: path,
                                  expected: "a file the server can open for appending (\(String(cString: strerror(errno))))")
            }
            descriptor = opened
        }
        self.target = target
        self.format = format
        self.logger = logger
        rings = (0..<workers).map { _ in AccessLogRing(capacity: AccessLog.ringCapacity) }
        wakeThreshold = AccessLog.ringCapacity / 4
        wake = .allocate(capacity: 1)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(wake, &attributes)
        pthread_condattr_destroy(&attributes)
        wakeMutex = .allocate(capacity: 1)
        pthread_mutex_init(wakeMutex, nil)
        output = ByteOutput(capacity: AccessLog.batchBytes + AccessLogFormatter.maxLine)
    }

    deinit {
        if case .file = target, descriptor >= 0 { Glibc.close(descriptor) }
        pthread_cond_destroy(wake)
        wake.deallocate()
        pthread_mutex_destroy(wakeMutex)
        wakeMutex.deallocate()
        output.deallocate()
    }

    private static func open(_ path: String) -> Int32 {
        Glibc.open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
    }

    /// The descriptor the log writes to for `target`: a file opened for appending, 2, or -1
    /// (off). Throws a `ConfigError` naming `--access-log` when the file cannot be opened.
    static func descriptor(for target: AccessLogTarget) throws(ConfigError) -> Int32 {
        switch target {
        case .off: return -1
        case .stderr: return 2
        case .file(let path):
            let opened = AccessLog.open(path)
            guard opened >= 0 else {
                throw ConfigError(field: "--access-log", value: path,
                                  expected: "a file the server can open for appending (\(String(cString: strerror(errno))))")
            }
            return opened
        }
    }

    /// A new target (its descriptor already open) and format, from a reload.
    struct Switch: Sendable {
        let target: AccessLogTarget
        let format: AccessLogFormat
        let descriptor: Int32
    }

    /// A reload: `target` (opened here: a file that cannot be opened throws, and nothing
    /// changes) and `format` replace the current ones. The writer first writes every record the
    /// rings hold to the old target, closes it (a file), then takes the new one; this returns
    /// once it has (at most `waitSeconds`; the writer may be blocked in a write). With `.off`,
    /// the records drained from then on are dropped (and nothing is open).
    func switchTo(_ target: AccessLogTarget, format: AccessLogFormat, waitSeconds: Double = 2) throws(ConfigError) {
        let change = Switch(target: target, format: format, descriptor: try AccessLog.descriptor(for: target))
        let number = pending.withLock { pending in
            // Not taken yet (a second reload within the same wake-up): the newer one wins.
            if let previous = pending.change, case .file = previous.target { Glibc.close(previous.descriptor) }
            pending.change = change
            pending.number += 1
            return pending.number
        }
        signalUnderLock()
        // Bounded: a writer blocked in a write (a full pipe) must not hold the reload for ever.
        var waited = 0.0
        while switchesApplied.load(ordering: .acquiring) < number && thread != nil && waited < waitSeconds {
            usleep(1000)
            waited += 0.001
        }
    }

    /// Starts the writer thread.
    func start() {
        thread = ThreadHandle.start { [self] in run() }
    }

    /// From a worker, after a push left `waiting` records in its ring: wakes the writer early
    /// when the ring fills up (never blocks: a signal without the mutex).
    @inline(__always)
    func pushed(waiting: Int) {
        if waiting == wakeThreshold { pthread_cond_signal(wake) }
    }

    /// Any thread (the SIGUSR1 handler's loop): the writer reopens the file at once.
    public func reopen() {
        reopenRequested.store(true, ordering: .releasing)
        signalUnderLock()
    }

    /// Once every worker has ended: the writer writes every record left and stops. Idempotent;
    /// any thread.
    public func finish() {
        stopRequested.store(true, ordering: .releasing)
        signalUnderLock()
        thread?.join()
    }

    /// Wakes the writer with the mutex held, so that a request made just before it sleeps is
    /// not missed (a reopen or the stop should not wait for the interval).
    private func signalUnderLock() {
        pthread_mutex_lock(wakeMutex)
        pthread_cond_signal(wake)
        pthread_mutex_unlock(wakeMutex)
    }

    // MARK: The writer thread

    private func run() {
        AccessLog.nameThisThread("access-log")
        while true {
            // On the monotonic clock: a change of the wall clock neither stalls nor hurries it.
            var deadline = timespec()
            clock_gettime(CLOCK_MONOTONIC, &deadline)
            deadline.tv_nsec += AccessLog.intervalNanoseconds
            if deadline.tv_nsec >= 1_000_000_000 {
                deadline.tv_sec += 1
                deadline.tv_nsec -= 1_000_000_000
            }
            pthread_mutex_lock(wakeMutex)
            if !stopRequested.load(ordering: .relaxed) && !reopenRequested.load(ordering: .relaxed)
                && pending.withLock({ $0.change == nil }) {
                _ = pthread_cond_timedwait(wake, wakeMutex, &deadline)
            }
            pthread_mutex_unlock(wakeMutex)
            // Read before draining: every record pushed before the stop was asked for (the
            // workers have ended by then) is in the rings for the drain below.
            let stopping = stopRequested.load(ordering: .acquiring)
            takeSwitch()
            if reopenRequested.exchange(false, ordering: .acquiring) { reopenFile() }
            drainRings()
            if stopping { break }
        }
        if case .file = target, descriptor >= 0 { fsync(descriptor) }
    }

    /// Names the calling thread, so that `top -H` and /proc/PID/task/*/comm show what it is
    /// (pthread_setname_np is not in Swift's Glibc module; this is what it does on Linux).
    private static func nameThisThread(_ name: String) {
        let descriptor = Glibc.open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        _ = Glibc.write(descriptor, name, name.utf8.count)
        Glibc.close(descriptor)
    }

    /// A reload's switch: what the rings hold now goes to the old target, then the new one is taken.
    private func takeSwitch() {
        let (next, number) = pending.withLock { pending in
            defer { pending.change = nil }
            return (pending.change, pending.number)
        }
        guard let change = next else { return }
        drainRings()
        if case .file = target, descriptor >= 0 {
            fsync(descriptor)
            Glibc.close(descriptor)
        }
        target = change.target
        format = change.format
        descriptor = change.descriptor
        logger.info("access log: now \(target) (\(format.rawValue))")
        switchesApplied.store(number, ordering: .releasing)
    }

    private func drainRings() {
        guard target != .off else {
            // Off (a reload turned it off): what was pushed since is dropped.
            for ring in rings { ring.drain { _ in } }
            return
        }
        for ring in rings {
            ring.drain { record in
                if output.room < AccessLogFormatter.maxLine { flush() }
                AccessLogFormatter.write(record, as: format, into: &output)
                linesWritten.store(linesWritten.load(ordering: .relaxed) &+ 1, ordering: .relaxed)
            }
        }
        flush()
    }

    /// Writes the batch (all of it, across short writes and interruptions); a failed write
    /// loses the batch, counted, and logged the first time.
    private func flush() {
        var offset = 0
        while offset < output.count {
            let written = Glibc.write(descriptor, output.base + offset, output.count - offset)
            if written > 0 {
                offset += written
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                let failures = writeFailures.load(ordering: .relaxed) &+ 1
                writeFailures.store(failures, ordering: .relaxed)
                if failures == 1 { logger.error("access log: write failed (\(String(cString: strerror(errno)))); lines are lost until it works again") }
                break
            }
        }
        output.reset()
    }

    /// SIGUSR1: a new file at the same path (the old one was renamed by logrotate). If it
    /// cannot be opened, the old descriptor is kept (and the error logged).
    private func reopenFile() {
        guard case .file(let path) = target else { return }
        flush()
        let opened = AccessLog.open(path)
        guard opened >= 0 else {
            logger.error("access log: cannot reopen \(path) (\(String(cString: strerror(errno)))); still writing to the old file")
            return
        }
        Glibc.close(descriptor)
        descriptor = opened
        logger.info("access log: reopened \(path)")
    }
}
