// Packet buffers (64 KiB, the default size) beside malloc+free of 64 KiB, in one run:
// a worker's local take+release, the overflow pool's take+release uncontended and with two
// threads contending, and a release on another thread than the owner's, beside the same
// hand-off through the same ring with no pool (what the cross-thread row pays for its harness).
//
//     cd Benchmarks && swift package benchmark --target PacketBufferBenchmarks
import Benchmark
import BenchmarkSupport
import FastAlloc
import PacketBuffers
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

let size = 64 * 1024

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = poolBenchmarkConfiguration

    Benchmark("malloc+free 64KiB", configuration: .init(thresholds: [:])) { benchmark in
        for _ in benchmark.scaledIterations {
            let pointer = malloc(size)
            blackHole(pointer)
            free(pointer)
        }
    }

    Benchmark("PacketBuffers local take+release 64KiB") { benchmark in
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: size, localBuffers: 16))
        let pool = pools.makeWorkerPool()
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let buffer = pool.take()!
            blackHole(buffer.address)
        }
        benchmark.stopMeasurement()
        precondition(pools.statistics().totalInUse == 0)
    }

    for threads in [1, 2] {
        let shared = try! PacketBufferPools(config: PacketBufferConfig(
            bufferSize: size, localBuffers: 1, overflowInitial: 16, overflowMax: 64))
        Benchmark("PacketBuffers overflow take+release 64KiB, \(threads) thread(s)",
                  configuration: .init(thresholds: threads == 1 ? nil : [:]),
                  closure: { benchmark in
                      onThreads(threads, benchmark) { iterations in
                          for _ in 0..<iterations {
                              let buffer = shared.takeShared()!
                              blackHole(buffer.address)
                          }
                      }
                  },
                  teardown: {
                      let lock = shared.statistics().overflow.lock
                      let share = lock.acquisitions == 0 ? 0 : Double(lock.contended) / Double(lock.acquisitions)
                      report("PacketBuffers overflow, \(threads) thread(s): lock acquisitions \(lock.acquisitions), contended \(lock.contended) (\(String(format3(share * 100)))%), wait \(lock.waitNanoseconds / 1_000_000) ms")
                  })
    }

    // The harness of the next row alone: the owner pushes a counter through the same ring to
    // another thread, which pops it. Time per value on the owner, with the other thread running
    // alongside; subtract it from the next row to see what the pool's cross-thread return costs.
    Benchmark("Ring hand-off only (no pool): push on owner + pop on another thread",
              configuration: .init(scalingFactor: .kilo, thresholds: [:])) { benchmark in
        let ring = Ring(capacity: 128)
        let iterations = benchmark.scaledIterations.count
        let popper = Helpers(count: 1) {
            for _ in 0..<iterations {
                blackHole(ring.pop())
            }
        }
        benchmark.startMeasurement()
        popper.start()
        for value in 0..<iterations {
            ring.push(UInt(value))
        }
        popper.join()
        benchmark.stopMeasurement()
    }

    // The owner takes buffers and hands their addresses through a ring to another thread, which
    // releases them there (onto the owner's return stack); the owner drains the stack when its
    // pool runs dry. Time per buffer on the owner, with the other thread running alongside.
    Benchmark("PacketBuffers take on owner + release on another thread 64KiB",
              configuration: .init(scalingFactor: .kilo, thresholds: [:])) { benchmark in
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: size, localBuffers: 256))
        let pool = pools.makeWorkerPool()
        let ring = Ring(capacity: 128)
        let iterations = benchmark.scaledIterations.count
        let releaser = Helpers(count: 1) {
            for _ in 0..<iterations {
                let address = ring.pop()
                PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
            }
        }
        benchmark.startMeasurement()
        releaser.start()
        for _ in 0..<iterations {
            var buffer = pool.take()
            while buffer == nil {
                pool.drainReturns()
                buffer = pool.take()
            }
            ring.push(UInt(bitPattern: buffer!.unsafeLend().baseAddress))
        }
        releaser.join()
        benchmark.stopMeasurement()
        pool.drainReturns()
        precondition(pools.statistics().totalInUse == 0)
    }
}

func format3(_ value: Double) -> String {
    let scaled = Int((value * 1000).rounded())
    let fraction = String(scaled % 1000)
    return "\(scaled / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
}

/// A single-producer single-consumer ring of addresses; both sides spin (on a plain load)
/// when it is full or empty.
final class Ring: @unchecked Sendable {
    // @unchecked: a slot is written by the producer before it publishes `tail` (releasing) and
    // read by the consumer after it sees that `tail` (acquiring), and vice versa for `head`.
    private let slots: UnsafeMutablePointer<UInt>
    private let head = Atomic<Int>(0)  // next to pop (consumer)
    private let tail = Atomic<Int>(0)  // next to push (producer)
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: 0, count: capacity)
    }

    func push(_ value: UInt) {
        let tail = self.tail.load(ordering: .relaxed)
        while tail - head.load(ordering: .acquiring) == capacity {}
        slots[tail % capacity] = value
        self.tail.store(tail + 1, ordering: .releasing)
    }

    func pop() -> UInt {
        let head = self.head.load(ordering: .relaxed)
        while tail.load(ordering: .acquiring) == head {}
        let value = slots[head % capacity]
        self.head.store(head + 1, ordering: .releasing)
        return value
    }
}
