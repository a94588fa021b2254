// What both benchmark targets share: running a loop on several threads at once inside the
// measurement, and writing a line to stderr.
import Benchmark
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs `work(iterations)` on `count` threads at once (this one and `count - 1` helpers), all
/// inside the measurement: the time per operation is wall time over one thread's operations.
///
/// The helpers are started once per thread count and parked between samples: creating and
/// joining a thread inside every sample (about 30-50 µs) would add 30-50 ns to each of a
/// 1,000-operation sample's operations. The measurement starts once every helper is awake and
/// waiting at the start line, and stops when the last thread is done.
public func onThreads(_ count: Int, _ benchmark: Benchmark, _ work: @escaping @Sendable (Int) -> Void) {
    onThreadsIndexed(count, benchmark) { _, iterations in work(iterations) }
}

/// Like `onThreads`, but `work` also gets its thread's index: 0 is the calling thread, helpers
/// are 1..<count.
public func onThreadsIndexed(_ count: Int, _ benchmark: Benchmark, _ work: @escaping @Sendable (Int, Int) -> Void) {
    let iterations = benchmark.scaledIterations.count
    guard count > 1 else {
        benchmark.startMeasurement()
        work(0, iterations)
        benchmark.stopMeasurement()
        return
    }
    let team = ThreadTeam.with(helpers: count - 1)
    team.ready(work, iterations)  // helpers wake and wait at the start line
    benchmark.startMeasurement()
    team.go()
    work(0, iterations)
    team.waitDone()
    benchmark.stopMeasurement()
}

/// Parked helper threads that run one closure per sample, all starting at one signal.
final class ThreadTeam: @unchecked Sendable {
    // @unchecked: `work`/`iterations` are written by the caller before `round` is published
    // (under `mutex`) and read by helpers after they see it; the counters are atomics.
    private static let teams = Mutex<[Int: ThreadTeam]>([:])

    static func with(helpers: Int) -> ThreadTeam {
        teams.withLock { teams in
            if let team = teams[helpers] { return team }
            let team = ThreadTeam(helpers: helpers)
            teams[helpers] = team
            return team
        }
    }

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var round = 0
    private var work: (@Sendable (Int, Int) -> Void)?
    private var iterations = 0
    private let arrived = Atomic<Int>(0)
    private let started = Atomic<Int>(0)  // the round the helpers may start
    private let finished = Atomic<Int>(0)
    private let helpers: Int

    private init(helpers: Int) {
        self.helpers = helpers
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        for index in 1...helpers {
            let team = self
            let starter = Helpers(count: 1) { team.helperLoop(index) }
            starter.start()  // never joined: the helpers live as long as the process
        }
    }

    private func helperLoop(_ index: Int) {
        var seen = 0
        while true {
            pthread_mutex_lock(mutex)
            while round == seen { pthread_cond_wait(wake, mutex) }
            seen = round
            let work = self.work!
            let iterations = self.iterations
            pthread_mutex_unlock(mutex)
            arrived.add(1, ordering: .releasing)
            waitUntil { self.started.load(ordering: .acquiring) == seen }  // the start is imminent
            work(index, iterations)
            finished.add(1, ordering: .releasing)
        }
    }

    /// Wakes the helpers with this round's work; returns when all wait at the start line.
    func ready(_ work: @escaping @Sendable (Int, Int) -> Void, _ iterations: Int) {
        arrived.store(0, ordering: .relaxed)
        finished.store(0, ordering: .relaxed)
        pthread_mutex_lock(mutex)
        self.work = work
        self.iterations = iterations
        round += 1
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        waitUntil { self.arrived.load(ordering: .acquiring) == self.helpers }
    }

    func go() {
        pthread_mutex_lock(mutex)
        let round = self.round
        pthread_mutex_unlock(mutex)
        started.store(round, ordering: .releasing)
    }

    func waitDone() {
        waitUntil { self.finished.load(ordering: .acquiring) == self.helpers }
    }

    /// Spins on `condition` briefly, then yields the CPU between looks: with more threads than
    /// cores (the 4-thread rows on 2 cores), a pure spin would keep a working thread off its core
    /// for a whole time slice.
    @inline(__always)
    private func waitUntil(_ condition: () -> Bool) {
        var looks = 0
        while !condition() {
            looks += 1
            if looks > 256 { sched_yield() }
        }
    }
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
