// A tour of the FastAlloc pools, run by `make run` until the server exists: each pool type at
// work, growth events, statistics, and a shared pool used by several threads at once.
import FastAlloc
import PacketBuffers
import Threads
#if canImport(Glibc)
import Glibc
#endif

/// A packet-sized value: 2 KiB of payload and a length, reset whenever it is reused.
struct Packet: Poolable, Sendable {
    var length = 0
    var bytes: InlineArray<2048, UInt8> = .init(repeating: 0)
    mutating func onAcquire() { length = 0 }
}

func printStatistics(_ s: PoolStatistics) {
    print("  \(s.name): capacity \(s.capacity)/\(s.maxCapacity), in use \(s.inUse), high water \(s.highWater), "
        + "acquisitions \(s.acquisitions), releases \(s.releases), failed \(s.failedAcquisitions), growth events \(s.growthEvents)")
}

func fixedPoolTour() throws {
    print("FixedPool: one slab, never grows")
    let pool = try FixedPool<Packet>(config: PoolConfig(capacity: 4, alignment: 64, name: "fixed", initialize: { Packet() }))
    var first = pool.acquire()
    first.withValue { packet in
        packet.length = 5
        for (i, byte) in "hello".utf8.enumerated() { packet.bytes[i] = byte }
    }
    print("  slot at 0x\(String(first.address, radix: 16)), 64-byte aligned: \(first.isAligned(to: 64)), length \(first.value.length)")
    let more = pool.acquire(count: 3) { _ in Packet() }
    let none = pool.tryAcquire() == nil
    print("  4 of 4 in use; tryAcquire() returns nil: \(none)")
    printStatistics(pool.statistics)
    more.release()
    first.release()
    let again = pool.acquire()
    print("  reacquired slot at 0x\(String(again.address, radix: 16)) (LIFO: the last one released), length reset to \(again.value.length)")
}

func growingPoolTour() throws {
    print("GrowingPool: chunks added by the growth strategy, slots never move")
    let pool = try GrowingPool<Int>(config: PoolConfig(capacity: 2, growth: .exponential(2), maxCapacity: 16, name: "growing"))
    let batch = pool.acquire(count: 11) { $0 }
    for event in pool.growthEvents {
        print("  grew \(event.capacityBefore) -> \(event.capacityAfter) at \(event.monotonicNanoseconds) ns (monotonic)")
    }
    printStatistics(pool.statistics)
    batch.release()
    printStatistics(pool.statistics)
}

func threadSafePoolTour() throws {
    print("ThreadSafePool: shared by 4 threads, handles released on any thread")
    let pool = try ThreadSafePool<Packet>(config: PoolConfig(
        capacity: 8, growth: .linear(8), maxCapacity: 64, name: "shared", initialize: { Packet() }))
    let threads = (0..<4).map { worker in
        ThreadHandle.start {
            for i in 0..<100_000 {
                var handle = pool.acquire()
                handle.withValue { $0.length = worker * 100_000 + i }
                precondition(handle.value.length == worker * 100_000 + i, "a slot was shared")
            }
        }
    }
    for thread in threads { thread.join() }
    printStatistics(pool.statistics)
    let lock = pool.lockStatistics
    print("  lock: \(lock.acquisitions) acquisitions, \(lock.contended) contended, \(lock.waitNanoseconds / 1000) µs waiting")
}

func packetBufferTour() throws {
    print("PacketBuffers: a local pool per worker, a shared overflow pool, buffers going home")
    let buffers = try PacketBufferPools(config: PacketBufferConfig(
        bufferSize: 16 * 1024, localBuffers: 4, overflowInitial: 2, overflowGrowth: .linear(2), overflowMax: 6))
    let pool = buffers.makeWorkerPool()
    var lent: [UInt] = []
    while var buffer = pool.take() {                    // 4 local, then 6 from the overflow pool
        let text = Array("packet \(lent.count)".utf8)
        _ = text.withUnsafeBytes { buffer.append(contentsOf: $0) }
        lent.append(UInt(bitPattern: buffer.unsafeLend().baseAddress))  // as libuv's alloc_cb would
    }
    var stats = buffers.statistics()
    print("  took \(lent.count) buffers, then nil (backpressure): local \(stats.workers[0].inUse)/\(stats.workers[0].capacity), "
        + "overflow \(stats.overflow.inUse)/\(stats.overflow.capacity) after \(stats.overflow.growthEvents) growth events, "
        + "failed draws \(stats.workers[0].failedDraws)")
    let addresses = lent
    // Released on another thread: local buffers go onto the worker's return ring.
    ThreadHandle.start {
        for address in addresses {
            PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!).release()
        }
    }.join()
    stats = buffers.statistics()
    print("  released on another thread: \(stats.workers[0].remoteReturns) returned to worker 0, \(stats.workers[0].pendingReturns) pending; "
        + "in use \(stats.totalInUse)")
    print("  worker 0 drained \(pool.drainReturns()) returns; overflow lock: \(stats.overflow.lock.acquisitions) acquisitions, "
        + "\(stats.overflow.lock.contended) contended")
}


do {
    try fixedPoolTour()
    try growingPoolTour()
    try threadSafePoolTour()
    try packetBufferTour()
    print("Benchmarks: cd Benchmarks && python3 compare.py   (or make bench-pools)")
} catch {
    print("configuration error: \(error)")
    exit(1)
}
