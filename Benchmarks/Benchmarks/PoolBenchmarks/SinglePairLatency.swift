// The "Single pair" rows: the latency of ONE acquire+release, not the average of 1000.
//
// package-benchmark can time single operations (scalingFactor .one, one pair per iteration), but
// not well enough here: its timed region includes its own hooks and a CLOCK_BOOTTIME read turned
// into a Duration (an empty region measures ~50 ns p50 on this machine, against ~15-20 ns for a
// pool pair), only the thread that runs the closure is sampled, with microseconds of harness work
// between samples, and its table has no p99.9 column. So these rows time each pair themselves:
//
//     t0 = clock_gettime(CLOCK_MONOTONIC); pair; t1 = clock_gettime(CLOCK_MONOTONIC)
//
// on every thread, into a histogram per thread (1 ns bins below 512 ns, then 256 bins per power
// of two: < 0.4 % error), merged after each sample. CLOCK_MONOTONIC is the vDSO clock (no system
// call with the tsc clocksource); `rdtsc` itself costs ~15 ns here against ~21 ns, and on this
// AMD EPYC the TSC advances in steps of ~10 ns anyway, so every figure is quantised to ~10 ns.
// The "clock only" rows time an empty region the same way: subtract them from the others.
//
// One sample: the benchmark's thread times `pairsPerSample` pairs while `threads - 1` helpers,
// started before it and stopped after it, run the same timed loop as fast as they can. Every
// thread's pairs count. The clock reads and the histogram update make the loop ~3 times slower
// than the untimed throughput rows, so the pool is less contended here than there.
//
// Results: three custom metrics per sample (that sample's p50, p99 and p99.9, in ns), so the
// table shows how each percentile varies between samples; and at the end of each row, on stderr,
// the percentiles of all its samples' pairs together, which is the figure to quote. With more
// threads than the machine has cores, the OS preempts threads mid-pair (and lock holders): that
// is what the p99.9 of the 4-thread rows shows, on the clock row as well as on the others.
import Benchmark
import BenchmarkSupport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds of CLOCK_MONOTONIC.
@inline(__always)
func monotonicNanoseconds() -> Int {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return time.tv_sec &* 1_000_000_000 &+ time.tv_nsec
}

/// A histogram of nanoseconds: exact below 512, then 256 bins per power of two up to 2^40 ns.
final class LatencyHistogram: @unchecked Sendable {
    // @unchecked: each histogram is written by one thread at a time; merged after a join.
    static let exactLimit = 512
    static let subBins = 256
    static let binCount = exactLimit + 31 * subBins  // shifts 1...31: values below 2^40
    let counts: UnsafeMutablePointer<UInt32>
    private(set) var count = 0
    private(set) var maximum = 0

    init() {
        counts = .allocate(capacity: Self.binCount)
        reset()
    }

    deinit { counts.deallocate() }

    func reset() {
        counts.initialize(repeating: 0, count: Self.binCount)
        count = 0
        maximum = 0
    }

    @inline(__always)
    func record(_ nanoseconds: Int) {
        let value = min(max(nanoseconds, 0), (1 << 40) - 1)
        counts[Self.bin(of: value)] &+= 1
        count &+= 1
        if value > maximum { maximum = value }
    }

    @inline(__always)
    static func bin(of value: Int) -> Int {
        if value < exactLimit { return value }
        let shift = (Int.bitWidth - value.leadingZeroBitCount - 1) - 8  // value >> shift in 256..<512
        return exactLimit + (shift - 1) * subBins + (value >> shift) - subBins
    }

    /// The smallest value that falls in `bin`.
    static func lowerBound(of bin: Int) -> Int {
        if bin < exactLimit { return bin }
        let shift = (bin - exactLimit) / subBins + 1
        return ((bin - exactLimit) % subBins + subBins) << shift
    }

    func merge(_ other: LatencyHistogram) {
        for bin in 0..<Self.binCount { counts[bin] &+= other.counts[bin] }
        count += other.count
        maximum = max(maximum, other.maximum)
    }

    /// The value at `percent` (nearest rank; a bin's lower bound above 512 ns).
    func percentile(_ percent: Double) -> Int {
        guard count > 0 else { return 0 }
        let rank = max(1, Int((percent / 100 * Double(count)).rounded(.up)))
        var seen = 0
        for bin in 0..<Self.binCount {
            seen += Int(counts[bin])
            if seen >= rank { return Self.lowerBound(of: bin) }
        }
        return maximum
    }
}

/// Tells the helpers of a sample that they are all running, and when to stop.
final class SampleControl: Sendable {
    let ready = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}

/// One "Single pair" row: its histograms and its summary.
final class SinglePairRow: @unchecked Sendable {
    // @unchecked: the histograms are written by the sample's threads between start and join,
    // and read by the benchmark thread only after the join.
    static let pairsPerSample = 200_000
    static let p50 = BenchmarkMetric.custom("p50 of single pairs in sample (ns)", useScalingFactor: false)
    static let p99 = BenchmarkMetric.custom("p99 of single pairs in sample (ns)", useScalingFactor: false)
    static let p999 = BenchmarkMetric.custom("p99.9 of single pairs in sample (ns)", useScalingFactor: false)

    static var configuration: Benchmark.Configuration {
        .init(metrics: [p50, p99, p999], scalingFactor: .one, maxDuration: .seconds(2),
              maxIterations: 40, thresholds: [:])
    }

    let label: String
    let threads: Int
    let histograms: [LatencyHistogram]
    let sample = LatencyHistogram()
    let total = LatencyHistogram()

    init(_ label: String, threads: Int) {
        self.label = label
        self.threads = threads
        histograms = (0..<threads).map { _ in LatencyHistogram() }
    }

    /// Runs one sample: `loop(histogram, control)` on `threads` threads; `control` is nil on the
    /// benchmark's own thread, which times `pairsPerSample` pairs, and the helpers' stop flag
    /// otherwise.
    func run(_ benchmark: Benchmark, _ loop: @escaping @Sendable (LatencyHistogram, SampleControl?) -> Void) {
        for histogram in histograms { histogram.reset() }
        let control = SampleControl()
        let helpers = Helpers(count: threads - 1) { [histograms] in
            let index = control.ready.add(1, ordering: .relaxed).newValue
            loop(histograms[index], control)
        }
        helpers.start()
        while control.ready.load(ordering: .relaxed) < threads - 1 { sched_yield() }
        loop(histograms[0], nil)
        control.stop.store(true, ordering: .relaxed)
        helpers.join()

        sample.reset()
        for histogram in histograms { sample.merge(histogram) }
        benchmark.measurement(Self.p50, sample.percentile(50))
        benchmark.measurement(Self.p99, sample.percentile(99))
        benchmark.measurement(Self.p999, sample.percentile(99.9))
        if benchmark.currentIteration >= benchmark.configuration.warmupIterations { total.merge(sample) }
    }

    /// The percentiles of every measured pair of the row, one line on stderr.
    func summarise() {
        func ns(_ value: Int) -> String { grouped(value) + " ns" }
        let name = label.padding(toLength: 50, withPad: " ", startingAt: 0)
        let threadsColumn = "\(threads) thread\(threads == 1 ? " " : "s")"
        report("Single pair | \(name) | \(threadsColumn) | pairs \(grouped(total.count)) | p50 \(ns(total.percentile(50))) | p99 \(ns(total.percentile(99))) | p99.9 \(ns(total.percentile(99.9))) | max \(ns(total.maximum))")
    }
}

/// Times `pair` over and over into `histogram`: `SinglePairRow.pairsPerSample` times on the
/// benchmark's thread (`control` nil), until the stop flag on a helper. Inlined into each row's
/// closure, so `pair` is not called through a closure.
@inline(__always)
func timePairs(_ histogram: LatencyHistogram, _ control: SampleControl?, _ pair: () -> Void) {
    if let control {
        while !control.stop.load(ordering: .relaxed) {
            let start = monotonicNanoseconds()
            pair()
            let end = monotonicNanoseconds()
            histogram.record(end &- start)
        }
    } else {
        for _ in 0..<SinglePairRow.pairsPerSample {
            let start = monotonicNanoseconds()
            pair()
            let end = monotonicNanoseconds()
            histogram.record(end &- start)
        }
    }
}

/// 1234567 -> "1,234,567".
func grouped(_ value: Int) -> String {
    let digits = String(value)
    var out = ""
    for (index, digit) in digits.enumerated() {
        if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(digit)
    }
    return out
}
