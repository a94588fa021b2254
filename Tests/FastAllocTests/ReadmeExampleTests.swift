import FastAlloc
import TestSupport
import Synchronization
import Testing

/// The library's examples, compiled and run, so the documentation cannot drift from the API:
/// `quickStart` is README.md's ("The library"), the others are docs/LIBRARY.md's.
@Suite struct ReadmeExampleTests {
    struct Particle { var id = 0; var velocity = 0 }
    struct Packet { var length = 0 }
    struct Request: Sendable { var path = "/" }
    struct Scratch: Poolable {
        var bytes: [UInt8] = []
        mutating func onAcquire() { bytes.removeAll(keepingCapacity: true) }
    }

    @Test func quickStart() throws {
        let pool = try FixedPool<Particle>(capacity: 1024)
        var particle = pool.acquire(Particle())
        particle.withValue { $0.velocity = 3 }
        #expect(particle.value.velocity == 3)
        particle.release()
        if let spare = pool.tryAcquire(Particle()) {
            #expect(spare.value.velocity == 0)
        }
        #expect(pool.statistics.inUse == 0)
    }

    @Test func configuration() throws {
        let config = try PoolConfig<Packet>(
            capacity: 256, alignment: 64, growth: .exponential(2), maxCapacity: 4096, order: .lifo,
            name: "packets", initialize: { Packet() }, onAcquire: { $0.length = 0 }, onRelease: nil)
        let packets = try GrowingPool<Packet>(config: config)
        #expect(packets.name == "packets")
        #expect(throws: PoolConfigError.self) { try PoolConfig<Int64>(capacity: 4, alignment: 48) }
    }

    @Test func reuse() throws {
        let scratch = try GrowingPool<Scratch>(config: .init(capacity: 8, growth: .linear(8), initialize: { Scratch() }))
        var s = scratch.acquire()
        s.withValue { $0.bytes.append(1) }
        s.release()
        #expect(scratch.acquire().value.bytes.isEmpty)
    }

    @Test func batches() throws {
        let pool = try FixedPool<Particle>(capacity: 1024)
        var batch = pool.acquire(count: 8) { index in Particle(id: index) }
        batch.forEach { $0.velocity = 0 }
        let one = batch.popFirst()!
        batch.release()
        #expect(pool.statistics.inUse == 1)
        hold(one)
    }

    @Test func sharing() throws {
        let shared = try ThreadSafePool<Request>(config: .init(capacity: 64, growth: .linear(64)))
        let inbox = Inbox()
        inbox.handle.withLock { $0 = shared.acquire(Request()) }
        onAnotherThread {
            inbox.handle.withLock { $0 = nil }  // released on that thread
        }
        #expect(shared.statistics.inUse == 0)
        #expect(shared.lockStatistics.contended <= shared.lockStatistics.acquisitions)
    }

    /// A place another thread can take a handle from (docs/LIBRARY.md: "Sharing").
    final class Inbox: Sendable {
        let handle = Mutex<SharedPoolHandle<Request>?>(nil)
    }
}
