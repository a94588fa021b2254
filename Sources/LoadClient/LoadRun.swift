import Histogram
import Synchronization
import Threads
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The bytes every connection sends: byte `offset` of connection `c` is
/// `ring[(start(c) + offset) % period]`. The ring repeats its first `maxSize` bytes after the
/// period, so any message is one contiguous window: writes send straight from it, and checks
/// compare against it with `memcmp`. Immutable after init, shared by all threads.
final class PatternRing: @unchecked Sendable {
    // @unchecked: `bytes` is written only in init, then only read.
    static let period = 1 << 16
    let bytes: UnsafeMutableRawBufferPointer  // written only in init

    init(seed: UInt64, maxSize: Int) {
        bytes = .allocate(byteCount: PatternRing.period + maxSize, alignment: 64)
        var state = seed
        for index in 0..<PatternRing.period {  // SplitMix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            bytes[index] = UInt8(truncatingIfNeeded: z ^ (z >> 31))
        }
        for index in 0..<maxSize { bytes[PatternRing.period + index] = bytes[index % PatternRing.period] }
    }

    deinit { bytes.deallocate() }

    @inline(__always)
    static func start(of connection: Int) -> Int { (connection &* 40_503) & (period - 1) }

    /// The `count` bytes connection `connection` sends from stream offset `offset`.
    /// `count` must not exceed the `maxSize` the ring was made with.
    @inline(__always)
    func window(connection: Int, offset: Int, count: Int) -> UnsafeRawBufferPointer {
        let position = (PatternRing.start(of: connection) &+ offset) & (PatternRing.period - 1)
        // Safe: position < period and count <= maxSize, so the window lies inside `bytes`.
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }
}

/// Counters one worker thread publishes for the progress line, once a second.
final class Published: Sendable {
    let messages = Atomic<Int>(0)
    let warmupMessages = Atomic<Int>(0)
    let p99 = Atomic<UInt64>(0)
}

/// What a run has done so far, reported about once a second while it runs.
public struct LoadProgress: Sendable, Equatable {
    /// Seconds since the run began (warm-up included).
    public var elapsed: Double
    /// Whether the warm-up still lasts. Its messages do not count, and no latency is recorded
    /// yet: `rate` is then the warm-up's own and `p99` is 0.
    public var warmingUp: Bool
    /// Messages per second: during the warm-up, its messages over its time so far; after it,
    /// the measured messages over the measured time so far.
    public var rate: Double
    /// p99 latency of the measured messages so far, in nanoseconds (0 during the warm-up).
    public var p99: UInt64

    public init(elapsed: Double, warmingUp: Bool, rate: Double, p99: UInt64) {
        self.elapsed = elapsed
        self.warmingUp = warmingUp
        self.rate = rate
        self.p99 = p99
    }

    /// The progress line fastalloc-load prints: `3s  41230 msg/s  p99 812 µs`, and during the
    /// warm-up `1s  warming up: 39875 msg/s` (whole seconds and messages, rounded).
    public var line: String {
        // Both finite and far below 2^63 (elapsed: at most the run; rate: messages over a
        // positive time), but clamped anyway: Int(_:) traps beyond, and on NaN.
        // Rounded: the loop's timer ticks a little before or after each whole second.
        func whole(_ value: Double) -> Int { value.isNaN ? 0 : Int(min(max(value, 0), 1e18).rounded()) }
        let seconds = whole(elapsed)
        let perSecond = whole(rate)
        if warmingUp { return "\(seconds)s  warming up: \(perSecond) msg/s" }
        return "\(seconds)s  \(perSecond) msg/s  p99 \(p99 / 1000) µs"
    }
}

/// Runs a load test and returns what it measured. Blocks until the run ends by itself (after
/// warm-up + duration, or after the fixed message count). `progress`, if given, is called from
/// a worker thread every `progressInterval` seconds (default 1) with what the run has done so far.
public func runLoad(_ config: LoadConfig, progressInterval: Double = 1,
                    progress: (@Sendable (LoadProgress) -> Void)? = nil) throws(LoadConfigError) -> LoadReport {
    try config.validate()
    guard progressInterval >= 0.001 && progressInterval <= 3600 else {
        throw LoadConfigError(field: "progressInterval", value: "\(progressInterval)", expected: "0.001...3600 seconds")
    }
    let ring = PatternRing(seed: config.seed, maxSize: config.size)
    let published = (0..<config.threads).map { _ in Published() }
    let results = ResultBox(count: config.threads)
    let startTime = EventLoop.hrtime()
    let threads = (0..<config.threads).map { index in
        let job = LoadWorkerJob(index: index, config: config, ring: ring, published: published, results: results,
                                startTime: startTime, progressMilliseconds: UInt64(progressInterval * 1000),
                                progress: progress)
        return ThreadHandle.start { job.run() }
    }
    for thread in threads { thread.join() }
    return results.merged(config)
}

/// Per-thread results, handed back to the caller.
final class ResultBox: Sendable {
    /// One slot per worker thread: separate objects, so no two threads write the same memory.
    let slots: [ResultSlot]
    init(count: Int) { slots = (0..<count).map { _ in ResultSlot() } }

    func merged(_ config: LoadConfig) -> LoadReport {
        var report = LoadReport()
        var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000, numberOfSignificantValueDigits: .three)
        var windowStart = UInt64.max
        var windowEnd: UInt64 = 0
        for case let result? in slots.map(\.result) {
            report.messages += result.messages
            report.bytes += result.bytes
            report.warmupMessages += result.warmupMessages
            report.connectFailures += result.connectFailures
            report.earlyCloses += result.earlyCloses
            report.mismatchedBytes += result.mismatchedBytes
            if report.firstMismatch == nil { report.firstMismatch = result.firstMismatch }
            report.errors += result.errors.prefix(10 - report.errors.count)
            histogram.add(result.histogram)
            windowStart = min(windowStart, result.windowStart)
            windowEnd = max(windowEnd, result.windowEnd)
        }
        report.seconds = windowEnd > windowStart ? Double(windowEnd - windowStart) / 1e9 : 0
        if histogram.totalCount > 0 {
            for (name, percentile) in LoadReport.percentiles { report.latency[name] = histogram.valueAtPercentile(percentile) }
            report.latency["max"] = histogram.max
        }
        report.connections = config.connections
        report.threads = config.threads
        report.size = config.size
        report.depth = config.depth
        report.rate = config.rate
        return report
    }
}

final class ResultSlot: @unchecked Sendable {
    // @unchecked: written by its worker thread before pthread_join returns, read after it.
    var result: LoadWorkerResult?
}

struct LoadWorkerResult {
    var messages = 0
    var bytes = 0
    var warmupMessages = 0
    var connectFailures = 0
    var earlyCloses = 0
    var mismatchedBytes = 0
    var firstMismatch: (connection: Int, offset: Int)?
    var errors: [String] = []
    var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000_000, numberOfSignificantValueDigits: .three)
    var windowStart: UInt64 = 0
    var windowEnd: UInt64 = 0
}

final class LoadWorkerJob: @unchecked Sendable {
    // @unchecked: handed to one new thread, which alone uses it.
    let index: Int
    let config: LoadConfig
    let ring: PatternRing
    let published: [Published]
    let results: ResultBox
    let startTime: UInt64
    let progressMilliseconds: UInt64
    let progress: (@Sendable (LoadProgress) -> Void)?

    init(index: Int, config: LoadConfig, ring: PatternRing, published: [Published], results: ResultBox,
         startTime: UInt64, progressMilliseconds: UInt64, progress: (@Sendable (LoadProgress) -> Void)?) {
        self.index = index
        self.config = config
        self.ring = ring
        self.published = published
        self.results = results
        self.startTime = startTime
        self.progressMilliseconds = progressMilliseconds
        self.progress = progress
    }

    func run() {
        let result: LoadWorkerResult
        do {
            let worker = try LoadWorker(job: self)
            result = worker.run()
        } catch {
            var failed = LoadWorkerResult()
            failed.errors.append("\(error)")
            result = failed
        }
        results.slots[index].result = result
    }
}
