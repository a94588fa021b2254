// Packet buffers (64 KiB, the default size) beside malloc+free of 64 KiB, in one run:
// a worker's local take+release, the overflow pool's take+release uncontended and with two
// threads contending, and a release on another thread than the owner's, beside the same
// hand-off through the same ring with no pool (what the cross-thread row pays for its harness).
// Other threads are parked between samples (BenchmarkSupport's `onThreadsIndexed`): thread
// creation is not measured.
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
    // The other thread is parked between samples (`onThreadsIndexed`), not started in each.
    Benchmark("Ring hand-off only (no pool): push on owner + pop on another thread",
              configuration: .init(scalingFactor: .kilo, thresholds: [:])) { benchmark in
        let ring = Ring(capacity: 128)
        onThreadsIndexed(2, benchmark) { thread, iterations in
            if thread == 0 {
                for value in 0..<iterations { ring.push(UInt(value)) }
            } else {
                for _ in 0..<iterations { blackHole(ring.pop()) }
            }
        }
    }

    // The owner takes buffers and hands their addresses through a ring to another thread, which
    // releases them there (into the owner's return ring); the owner drains the return ring when
    // its pool runs dry. Time per buffer on the owner, with the other thread running alongside.
    Benchmark("PacketBuffers take on owner + release on another thread 64KiB",
              configuration: .init(scalingFactor: .kilo, thresholds: [:])) { benchmark in
        let pools = try! PacketBufferPools(config: PacketBufferConfig(bufferSize: size, localBuffers: 256))
        let pool = pools.makeWorkerPool()  // this thread (thread 0 below) owns it
        let ring = Ring(capacity: 128)
        let owner = UnsafeSendable(pool)
        onThreadsIndexed(2, benchmark) { thread, iterations in
            if thread == 0 {
                let pool = owner.value
                for _ in 0..<iterations {
                    var buffer = pool.take()
                    while buffer == nil {
                        pool.drainReturns()
                        buffer = pool.take()
                    }
                    ring.push(UInt(bitPattern: buffer!.unsafeLend().baseAddress))
                }
            } else {
                for _ in 0..<iterations {
                    let address = ring.pop()
                    PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
                }
            }
        }
        pool.drainReturns()
        precondition(pools.statistics().totalInUse == 0)
        pool.retire()
    }
}

/// Carries a value that is not `Sendable` into a closure that only the right thread runs
/// (here: the worker pool, used by thread 0, the thread that made it).
struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

func format3(_ value: Double) -> String {
    let scaled = Int((value * 1000).rounded())
    let fraction = String(scaled % 1000)
    return "\(scaled / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
}

/// A single-producer single-consumer ring of addresses; when it is full (producer) or empty
/// (consumer), a side spins on a load of the other side's index, and yields the CPU after every
/// 1024 failed loads: on this shared 2-core machine the other side is often not running, and a
/// pure spin then burns the rest of a time slice (measured: microseconds per value instead of
/// tens of nanoseconds whenever another process wants a core).
///
/// The usual layout, so the two threads share as few cache lines as they can: `tail` (written by
/// the producer) and `head` (written by the consumer) each on a cache line of its own, and each
/// side's private state (its next index and its copy of the other side's index) on another.
/// Each side reads the other's index only when its copy says the ring is full (producer) or
/// empty (consumer), so while the ring is neither, a push or a pop touches no line the other
/// thread writes except the slot's. The slots are 64-byte aligned; the capacity is a power of
/// two, so an index is masked, not divided.
final class Ring: @unchecked Sendable {
    // @unchecked: a slot is written by the producer before it publishes `tail` (releasing) and
    // read by the consumer after it sees that `tail` (acquiring), and vice versa for `head`.
    // `producer` is touched only by the producing thread, `consumer` only by the consuming one.
    private struct Side {
        var next = 0  // producer: next to push; consumer: next to pop
        var seen = 0  // producer: the last `head` it loaded; consumer: the last `tail`
    }

    /// Bytes between the four parts: two cache lines, so the adjacent-line prefetcher does not
    /// pair them either.
    private static let stride = 128
    /// Failed loads of the other side's index between two `sched_yield()`s.
    private static let spinsBeforeYield = 1024
    private let lines: UnsafeMutableRawPointer
    private let tail: UnsafeMutablePointer<Atomic<Int>>  // next to push, published by the producer
    private let head: UnsafeMutablePointer<Atomic<Int>>  // next to pop, published by the consumer
    private let producer: UnsafeMutablePointer<Side>
    private let consumer: UnsafeMutablePointer<Side>
    private let slots: UnsafeMutablePointer<UInt>
    private let mask: Int

    init(capacity: Int) {
        precondition(capacity > 0 && capacity & (capacity - 1) == 0, "capacity must be a power of two")
        mask = capacity - 1
        lines = .allocate(byteCount: 4 * Self.stride, alignment: Self.stride)
        tail = (lines + 0 * Self.stride).bindMemory(to: Atomic<Int>.self, capacity: 1)
        tail.initialize(to: Atomic(0))
        head = (lines + 1 * Self.stride).bindMemory(to: Atomic<Int>.self, capacity: 1)
        head.initialize(to: Atomic(0))
        producer = (lines + 2 * Self.stride).bindMemory(to: Side.self, capacity: 1)
        producer.initialize(to: Side())
        consumer = (lines + 3 * Self.stride).bindMemory(to: Side.self, capacity: 1)
        consumer.initialize(to: Side())
        let raw = UnsafeMutableRawPointer.allocate(byteCount: capacity * MemoryLayout<UInt>.stride, alignment: 64)
        slots = raw.initializeMemory(as: UInt.self, repeating: 0, count: capacity)
    }

    deinit {
        tail.deinitialize(count: 1)
        head.deinitialize(count: 1)
        lines.deallocate()
        slots.deallocate()
    }

    func push(_ value: UInt) {
        let tail = producer.pointee.next
        if tail - producer.pointee.seen == mask + 1 {
            var head = self.head.pointee.load(ordering: .acquiring)
            var spins = 0
            while tail - head == mask + 1 {
                spins += 1
                if spins == Self.spinsBeforeYield { spins = 0; sched_yield() }
                head = self.head.pointee.load(ordering: .acquiring)
            }
            producer.pointee.seen = head
        }
        slots[tail & mask] = value
        producer.pointee.next = tail + 1
        self.tail.pointee.store(tail + 1, ordering: .releasing)
    }

    func pop() -> UInt {
        let head = consumer.pointee.next
        if head == consumer.pointee.seen {
            var tail = self.tail.pointee.load(ordering: .acquiring)
            var spins = 0
            while tail == head {
                spins += 1
                if spins == Self.spinsBeforeYield { spins = 0; sched_yield() }
                tail = self.tail.pointee.load(ordering: .acquiring)
            }
            consumer.pointee.seen = tail
        }
        let value = slots[head & mask]
        consumer.pointee.next = head + 1
        self.head.pointee.store(head + 1, ordering: .releasing)
        return value
    }
}
