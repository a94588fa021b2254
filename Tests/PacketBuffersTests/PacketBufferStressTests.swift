import FastAlloc
import Glibc
import PacketBuffers
import Synchronization
import TestSupport
import Testing

/// Many workers at once, with a random mix of local takes, overflow draws, releases on the
/// owner thread and on other threads, while another thread reads the statistics.
@Suite struct PacketBufferStressTests {
    /// SplitMix64: a small, seeded generator, so a failing run can be replayed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Stamps a buffer with who filled it; `verify` checks every stamped byte.
    static func stamp(_ buffer: inout PacketBuffer, thread: Int, sequence: Int) {
        let length = 16 + sequence % 200
        buffer.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: UInt64(thread) << 32 | UInt64(sequence), as: UInt64.self)
            bytes.storeBytes(of: UInt64(length), toByteOffset: 8, as: UInt64.self)
            for index in 16..<length { bytes[index] = UInt8(truncatingIfNeeded: sequence &+ index) }
        }
        buffer.length = length
    }

    static func verify(_ buffer: borrowing PacketBuffer) -> Bool {
        buffer.withUnsafeBytes { bytes in
            guard bytes.count >= 16 else { return false }
            let tag = bytes.load(as: UInt64.self)
            let sequence = Int(tag & 0xFFFF_FFFF)
            guard bytes.load(fromByteOffset: 8, as: UInt64.self) == UInt64(bytes.count) else { return false }
            for index in 16..<bytes.count where bytes[index] != UInt8(truncatingIfNeeded: sequence &+ index) {
                return false
            }
            return true
        }
    }

    @Test func workers_randomMix_endWithEveryPoolAtZero() throws {
        let threads = 4
        let iterations = 20_000
        let maxHeld = 8
        let pools = try PacketBufferPools(config: PacketBufferConfig(
            bufferSize: 512, localBuffers: 4, overflowInitial: 4, overflowGrowth: .linear(4), overflowMax: 16,
            recentGrowthEventLimit: 4))
        let mailbox = Locked<[UInt]>([])       // lent buffers on their way to another thread
        let mismatches = Atomic<Int>(0)
        let inconsistentSnapshots = Atomic<Int>(0)
        let operations = Atomic<Int>(0)
        let crossThreadReleases = Atomic<Int>(0)
        let finishedWorkers = Atomic<Int>(0)
        let statisticsReads = Atomic<Int>(0)

        onThreadsTogether(threads + 1) { thread in
            if thread == threads {  // the statistics reader, as the stats endpoint will be
                while finishedWorkers.load(ordering: .acquiring) < threads {
                    let stats = pools.statistics()
                    if stats.overflow.inUse > stats.overflow.capacity || stats.overflow.capacity > 16 {
                        inconsistentSnapshots.add(1, ordering: .relaxed)
                    }
                    statisticsReads.add(1, ordering: .releasing)
                }
                return
            }
            let pool = pools.makeWorkerPool()
            var random = Generator(state: UInt64(thread) &* 7919 &+ 1)
            var held: [UInt] = []  // lent addresses of buffers this thread holds
            for sequence in 0..<iterations {
                if sequence == iterations / 2 {
                    // Halfway, wait until the reader has taken at least one snapshot, so some
                    // snapshots are certainly taken while buffers are in flight (in a release
                    // build the workers can otherwise finish before the reader is scheduled).
                    while statisticsReads.load(ordering: .acquiring) == 0 { sched_yield() }
                }
                let dice = Int(random.next() % 100)
                if dice < 50, held.count < maxHeld {
                    if var buffer = pool.take() {
                        Self.stamp(&buffer, thread: thread, sequence: sequence)
                        held.append(UInt(bitPattern: buffer.unsafeLend().baseAddress))
                    }
                } else if dice < 75, !held.isEmpty {
                    let address = held.remove(at: Int(random.next() % UInt64(held.count)))
                    let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!)
                    if !Self.verify(buffer) { mismatches.add(1, ordering: .relaxed) }
                } else if dice < 90, !held.isEmpty {
                    let address = held.removeLast()
                    mailbox.withLock { $0.append(address) }
                } else if let address = mailbox.withLock({ $0.popLast() }) {
                    let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!)
                    if !Self.verify(buffer) { mismatches.add(1, ordering: .relaxed) }
                    crossThreadReleases.add(1, ordering: .relaxed)
                }
                if sequence % 64 == 0 { pool.drainReturns() }
                operations.add(1, ordering: .relaxed)
            }
            for address in held {
                let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!)
                if !Self.verify(buffer) { mismatches.add(1, ordering: .relaxed) }
            }
            finishedWorkers.add(1, ordering: .releasing)
        }
        // Whatever is still in the mailbox is released here, on a thread that owns no pool.
        while let address = mailbox.withLock({ $0.popLast() }) {
            let buffer = PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!)
            if !Self.verify(buffer) { mismatches.add(1, ordering: .relaxed) }
            crossThreadReleases.add(1, ordering: .relaxed)
        }

        let stats = pools.statistics()
        #expect(mismatches.load(ordering: .relaxed) == 0, "every byte as stamped")
        #expect(inconsistentSnapshots.load(ordering: .relaxed) == 0, "inUse <= capacity <= max in every snapshot")
        #expect(operations.load(ordering: .relaxed) == threads * iterations)
        #expect(stats.totalInUse == 0, "every pool at zero: \(stats)")
        #expect(stats.overflow.inUse == 0)
        for worker in stats.workers { #expect(worker.inUse == 0, "worker \(worker.worker)") }
        #expect(stats.overflow.draws == stats.workers.reduce(0) { $0 + $1.overflowDraws })
        #expect(stats.overflow.draws > 0, "the mix reached the overflow pool")
        #expect(stats.workers.reduce(0) { $0 + $1.remoteReturns } > 0, "the mix released local buffers on other threads")
        #expect(stats.overflow.capacity <= 16)
        #expect(stats.overflow.recentGrowthEvents.count <= 4)
        #expect(stats.overflow.lock.contended <= stats.overflow.lock.acquisitions)
        #expect(statisticsReads.load(ordering: .relaxed) > 0)
        print("stress: \(threads) workers x \(iterations) operations, \(crossThreadReleases.load(ordering: .relaxed)) cross-thread releases, "
            + "local takes \(stats.workers.reduce(0) { $0 + $1.takes }), overflow draws \(stats.overflow.draws), "
            + "failed draws \(stats.workers.reduce(0) { $0 + $1.failedDraws }), overflow growth \(stats.overflow.growthEvents), "
            + "lock \(stats.overflow.lock.acquisitions) acquisitions / \(stats.overflow.lock.contended) contended, "
            + "\(statisticsReads.load(ordering: .relaxed)) statistics reads, in use at the end \(stats.totalInUse)")
    }
}
