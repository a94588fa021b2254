// What both benchmark targets share: running a loop on several threads at once inside the
// measurement, and writing a line to stderr.
import Benchmark
#if canImport(Glibc)
import Glibc
#endif

/// Runs `work(iterations)` on `count` threads at once (this one and `count - 1` helpers), all
/// inside the measurement: the time per operation is wall time over one thread's operations.
public func onThreads(_ count: Int, _ benchmark: Benchmark, _ work: @escaping @Sendable (Int) -> Void) {
    let iterations = benchmark.scaledIterations.count
    let helpers = Helpers(count: count - 1) { work(iterations) }
    benchmark.startMeasurement()
    helpers.start()
    work(iterations)
    helpers.join()
    benchmark.stopMeasurement()
}

/// `count` threads that each run `work` once, started by `start()` and awaited by `join()`.
public final class Helpers: @unchecked Sendable {
    // @unchecked: `threads` is touched only by the creating thread.
    private let work: @Sendable () -> Void
    private let count: Int
    private var threads: [pthread_t] = []

    public init(count: Int, _ work: @escaping @Sendable () -> Void) {
        self.count = count
        self.work = work
    }

    public func start() {
        for _ in 0..<count {
            var thread = pthread_t()
            let box = Unmanaged.passRetained(WorkBox(work)).toOpaque()
            pthread_create(&thread, nil, { raw in
                // Safe: `raw` is the WorkBox retained above, passed to exactly this one thread.
                Unmanaged<WorkBox>.fromOpaque(raw!).takeRetainedValue().work()
                return nil
            }, box)
            threads.append(thread)
        }
    }

    public func join() {
        for thread in threads { pthread_join(thread, nil) }
        threads = []
    }
}

final class WorkBox {
    let work: @Sendable () -> Void
    init(_ work: @escaping @Sendable () -> Void) { self.work = work }
}

/// Writes a line to stderr (the benchmark tables have no column for lock counters).
public func report(_ line: String) {
    _ = (line + "\n").withCString { write(2, $0, strlen($0)) }
}

/// Every pool benchmark's settings: 1000 operations per sample (so time and mallocs print per
/// operation), and the regression gates for `swift package benchmark baseline check`: the pools
/// must not start allocating, nor slow down by more than 25 % at the median (time or
/// throughput; this machine is noisy, so tighter gates would cry wolf). Baselines (malloc)
/// override the thresholds with none.
public var poolBenchmarkConfiguration: Benchmark.Configuration {
    Benchmark.Configuration(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000_000,
        thresholds: [
            .mallocCountTotal: .init(absolute: [.p90: 0]),
            .wallClock: .init(relative: [.p50: 25]),
            .throughput: .init(relative: [.p50: 25]),
        ]
    )
}
