// Acquire + release of a 2 KiB element with each pool, beside the obvious alternatives, in one
// run: malloc + free of 2 KiB, a Swift class allocation of 2 KiB (ManagedBuffer, uninitialised
// like malloc), and a naive pool (a Synchronization.Mutex around an array of free pointers).
//
// Every benchmark runs `pairs` acquire+release pairs per measured iteration (scalingFactor), so
// the time and malloc figures package-benchmark prints are per pair. The pools hand out the
// retained value (`acquire()`): no 2 KiB copy, just as malloc hands out memory without
// initialising it.
//
// The shared-pool rows (ThreadSafePool, a pthread_mutex pool, a Synchronization.Mutex pool,
// malloc+free) run the loop on 1, 2 and 4 threads at once; time is wall time over one thread's
// pairs. This machine has 2 cores: at 4 threads the OS time-slices them.
//
// The "Single pair:" rows are not averages: they time every single acquire+release with
// CLOCK_MONOTONIC on 1, 2 and 4 threads (ThreadSafePool, the Mutex pool, malloc+free, and an
// empty timed region, the clock's own cost, to subtract), and give p50, p99 and p99.9; how and
// why is in SinglePairLatency.swift. Their all-samples percentiles are printed to stderr, one
// "Single pair | ..." line per row, before the tables.
//
//     cd Benchmarks && swift package benchmark            # all
//     swift package benchmark --filter 'FixedPool.*'      # some
//     swift package benchmark --target PoolBenchmarks --filter 'Single pair.*'
import Benchmark
import BenchmarkSupport
import FastAlloc
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// 2 KiB of payload.
struct Block: Sendable {
    var words: InlineArray<256, UInt64> = .init(repeating: 0)
}

let blockBytes = MemoryLayout<Block>.size  // 2048

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = poolBenchmarkConfiguration

    // MARK: Baselines: the heap

    Benchmark("malloc+free 2KiB", configuration: .init(thresholds: [:])) { benchmark in
        for _ in benchmark.scaledIterations {
            let pointer = malloc(blockBytes)
            blackHole(pointer)
            free(pointer)
        }
    }

    Benchmark("Swift class alloc 2KiB (ManagedBuffer)", configuration: .init(thresholds: [:])) { benchmark in
        for _ in benchmark.scaledIterations {
            let buffer = ManagedBuffer<Int, UInt8>.create(minimumCapacity: blockBytes) { _ in 0 }
            blackHole(buffer)
        }
    }

    // MARK: The pools, one thread

    for order in [AllocationOrder.lifo, .lowestFirst] {
        let suffix = order == .lifo ? "" : " lowestFirst"

        let pools: [(String, @Sendable () -> UnsynchronizedPool<Block>)] = [
            ("FixedPool", { try! FixedPool<Block>(config: PoolConfig(capacity: 64, order: order, initialize: { Block() })) }),
            ("GrowingPool", { try! GrowingPool<Block>(config: PoolConfig(
                capacity: 16, growth: .exponential(2), order: order, initialize: { Block() })) }),
            ("ThreadLocalPool", { try! ThreadLocalPool<Block>(config: PoolConfig(
                capacity: 16, growth: .exponential(2), order: order, initialize: { Block() })) }),
        ]
        for (kind, makePool) in pools {
            Benchmark("\(kind) acquire+release 2KiB\(suffix)") { benchmark in
                let pool = makePool()
                warmUp(pool)
                benchmark.startMeasurement()
                for _ in benchmark.scaledIterations {
                    let handle = pool.acquire()
                    blackHole(handle.address)
                }
                benchmark.stopMeasurement()
                precondition(pool.statistics.inUse == 0)
            }
        }
    }

    // Several values held at once, as a server holds many buffers: 8 acquired, then 8 released.
    Benchmark("FixedPool 8 held then released 2KiB (per pair)") { benchmark in
        let pool = try! FixedPool<Block>(config: PoolConfig(capacity: 64, initialize: { Block() }))
        warmUp(pool)
        benchmark.startMeasurement()
        for _ in 0..<(benchmark.scaledIterations.count / 8) {
            let h1 = pool.acquire(), h2 = pool.acquire(), h3 = pool.acquire(), h4 = pool.acquire()
            let h5 = pool.acquire(), h6 = pool.acquire(), h7 = pool.acquire(), h8 = pool.acquire()
            blackHole(h1.address &+ h2.address &+ h3.address &+ h4.address)
            blackHole(h5.address &+ h6.address &+ h7.address &+ h8.address)
        }
        benchmark.stopMeasurement()
    }

    Benchmark("malloc 8 held then free 2KiB (per pair)", configuration: .init(thresholds: [:])) { benchmark in
        var pointers = [UnsafeMutableRawPointer?](repeating: nil, count: 8)
        for _ in 0..<(benchmark.scaledIterations.count / 8) {
            for i in 0..<8 { pointers[i] = malloc(blockBytes) }
            blackHole(pointers)
            for i in 0..<8 { free(pointers[i]) }
        }
    }

    // MARK: Shared pools: one, two and four threads, against a pthread- and a Mutex-guarded pool

    for threads in [1, 2, 4] {
        let shared = try! ThreadSafePool<Block>(config: PoolConfig(
            capacity: 64, growth: .linear(64), initialize: { Block() }))
        Benchmark("ThreadSafePool acquire+release 2KiB, \(threads) thread(s)",
                  configuration: .init(thresholds: threads == 1 ? nil : [:]),
                  closure: { benchmark in
                      onThreads(threads, benchmark) { iterations in
                          for _ in 0..<iterations {
                              let handle = shared.acquire()
                              blackHole(handle.address)
                          }
                      }
                  },
                  teardown: { reportContention("ThreadSafePool, \(threads) thread(s)", shared.lockStatistics) })

        // The same pool with per-thread magazines of 32 slots: the pairs touch no lock.
        let magazines = try! ThreadSafePool<Block>(config: PoolConfig(
            capacity: 64, growth: .linear(64), initialize: { Block() }, magazineSize: 32))
        Benchmark("ThreadSafePool magazines acquire+release 2KiB, \(threads) thread(s)",
                  configuration: .init(thresholds: threads == 1 ? nil : [:]),
                  closure: { benchmark in
                      onThreads(threads, benchmark) { iterations in
                          for _ in 0..<iterations {
                              let handle = magazines.acquire()
                              blackHole(handle.address)
                          }
                      }
                  },
                  teardown: {
                      let stats = magazines.statistics
                      report("ThreadSafePool magazines, \(threads) thread(s): \(stats.magazineAcquisitions) of \(stats.acquisitions) acquisitions served by magazines")
                      reportContention("ThreadSafePool magazines, \(threads) thread(s)", magazines.lockStatistics)
                  })

        let pthreadPool = PthreadPool(capacity: 64, bytes: blockBytes)
        Benchmark("pthread_mutex pool acquire+release 2KiB, \(threads) thread(s)",
                  configuration: .init(thresholds: [:])) { benchmark in
            onThreads(threads, benchmark) { iterations in
                for _ in 0..<iterations {
                    let pointer = pthreadPool.acquire()
                    blackHole(pointer)
                    pthreadPool.release(pointer)
                }
            }
        }

        let mutexPool = MutexPool(capacity: 64, bytes: blockBytes)
        Benchmark("Synchronization.Mutex pool acquire+release 2KiB, \(threads) thread(s)",
                  configuration: .init(thresholds: [:])) { benchmark in
            onThreads(threads, benchmark) { iterations in
                for _ in 0..<iterations {
                    let pointer = mutexPool.acquire()
                    blackHole(pointer)
                    mutexPool.release(pointer)
                }
            }
        }

        Benchmark("malloc+free 2KiB, \(threads) thread(s)", configuration: .init(thresholds: [:])) { benchmark in
            onThreads(threads, benchmark) { iterations in
                for _ in 0..<iterations {
                    let pointer = malloc(blockBytes)
                    blackHole(pointer)
                    free(pointer)
                }
            }
        }
    }

    // MARK: Single pairs: the latency of one acquire+release (see SinglePairLatency.swift)

    for threads in [1, 2, 4] {
        let clock = SinglePairRow("clock only (empty timed region)", threads: threads)
        Benchmark("Single pair: clock only (empty timed region), \(threads) thread(s)",
                  configuration: SinglePairRow.configuration,
                  closure: { benchmark in
                      clock.run(benchmark) { histogram, control in timePairs(histogram, control) {} }
                  },
                  teardown: { clock.summarise() })

        let shared = try! ThreadSafePool<Block>(config: PoolConfig(
            capacity: 64, growth: .linear(64), initialize: { Block() }))
        let sharedRow = SinglePairRow("ThreadSafePool acquire+release 2KiB", threads: threads)
        Benchmark("Single pair: ThreadSafePool acquire+release 2KiB, \(threads) thread(s)",
                  configuration: SinglePairRow.configuration,
                  closure: { benchmark in
                      sharedRow.run(benchmark) { histogram, control in
                          timePairs(histogram, control) {
                              let handle = shared.acquire()
                              blackHole(handle.address)
                          }
                      }
                  },
                  teardown: { sharedRow.summarise() })

        let magazines = try! ThreadSafePool<Block>(config: PoolConfig(
            capacity: 64, growth: .linear(64), initialize: { Block() }, magazineSize: 32))
        let magazineRow = SinglePairRow("ThreadSafePool magazines acquire+release 2KiB", threads: threads)
        Benchmark("Single pair: ThreadSafePool magazines acquire+release 2KiB, \(threads) thread(s)",
                  configuration: SinglePairRow.configuration,
                  closure: { benchmark in
                      magazineRow.run(benchmark) { histogram, control in
                          timePairs(histogram, control) {
                              let handle = magazines.acquire()
                              blackHole(handle.address)
                          }
                      }
                  },
                  teardown: { magazineRow.summarise() })

        let mutexPool = MutexPool(capacity: 64, bytes: blockBytes)
        let mutexRow = SinglePairRow("Synchronization.Mutex pool acquire+release 2KiB", threads: threads)
        Benchmark("Single pair: Synchronization.Mutex pool acquire+release 2KiB, \(threads) thread(s)",
                  configuration: SinglePairRow.configuration,
                  closure: { benchmark in
                      mutexRow.run(benchmark) { histogram, control in
                          timePairs(histogram, control) {
                              let pointer = mutexPool.acquire()
                              blackHole(pointer)
                              mutexPool.release(pointer)
                          }
                      }
                  },
                  teardown: { mutexRow.summarise() })

        let mallocRow = SinglePairRow("malloc+free 2KiB", threads: threads)
        Benchmark("Single pair: malloc+free 2KiB, \(threads) thread(s)",
                  configuration: SinglePairRow.configuration,
                  closure: { benchmark in
                      mallocRow.run(benchmark) { histogram, control in
                          timePairs(histogram, control) {
                              let pointer = malloc(blockBytes)
                              blackHole(pointer)
                              free(pointer)
                          }
                      }
                  },
                  teardown: { mallocRow.summarise() })
    }
}

/// Fills every slot once, so measured acquisitions reuse retained values (the steady state).
func warmUp(_ pool: UnsynchronizedPool<Block>) {
    let batch = pool.acquire(count: pool.capacity) { _ in Block() }
    blackHole(batch.count)
}

/// Prints a ThreadSafePool's lock counters, summed over all samples, to stderr (the table has
/// no column for them).
func reportContention(_ name: String, _ lock: LockStatistics) {
    let share = lock.acquisitions == 0 ? 0 : Double(lock.contended) / Double(lock.acquisitions)
    report("\(name): lock acquisitions \(lock.acquisitions), contended \(lock.contended) (\(Int(share * 1000)) per mille), wait \(lock.waitNanoseconds / 1_000_000) ms")
}

/// A naive alternative to ThreadSafePool: a pthread mutex around a stack of pointers.
final class PthreadPool: @unchecked Sendable {
    // @unchecked: `free` is touched only with `mutex` held.
    private var free: [UInt]
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init(capacity: Int, bytes: Int) {
        free = (0..<capacity).map { _ in UInt(bitPattern: malloc(bytes)) }
        pthread_mutex_init(mutex, nil)
    }
    func acquire() -> UInt {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return free.removeLast()
    }
    func release(_ pointer: UInt) {
        pthread_mutex_lock(mutex)
        free.append(pointer)
        pthread_mutex_unlock(mutex)
    }
}

/// A naive alternative to ThreadSafePool: a Synchronization.Mutex around a stack of pointers.
final class MutexPool: Sendable {
    private let free: Mutex<[UInt]>
    init(capacity: Int, bytes: Int) {
        free = Mutex((0..<capacity).map { _ in UInt(bitPattern: malloc(bytes)) })
    }
    func acquire() -> UInt { free.withLock { $0.popLast()! } }
    func release(_ pointer: UInt) { free.withLock { $0.append(pointer) } }
}
