import FastAlloc
import PacketBuffers
import Synchronization
import TestSupport
import Testing
import Threads
#if canImport(Glibc)
import Glibc
#endif

/// The return ring (cross-thread releases) at hostile scale: every buffer of a worker goes
/// round through many releasing threads at once, over and over, so the ring is full, wraps
/// thousands of times and is pushed by several threads at the same moment.
@Suite struct ReturnRingTests {
    @Test(arguments: [5, 8])  // a ring of 8 cells: with 5 buffers, and with exactly 8
    func everyBufferCyclesThroughManyReleasers_noneLostNoneTwice(_ localBuffers: Int) throws {
        let releasers = 6
        let cycles = 30_000
        let pools = try PacketBufferPools(config: PacketBufferConfig(
            bufferSize: 256, localBuffers: localBuffers, overflowInitial: 1, overflowMax: 1))
        let pool = pools.makeWorkerPool()
        // (address, stamp) pairs on their way to a releaser; nil ends it.
        let queues = (0..<releasers).map { _ in Mailbox<(UInt, UInt8)?>() }
        let outstanding = Locked<Set<UInt>>([])  // handed over, not released yet
        let handedOutTwice = Atomic<Int>(0)
        let overwritten = Atomic<Int>(0)
        let released = Mailbox<Int>()  // a token per release: the owner waits on it when dry

        let threads = (0..<releasers).map { index in
            ThreadHandle.start {
                while let (address, stamp) = queues[index].receive() {
                    // Safe: each address is a buffer lent by the owner, handed over exactly once.
                    let buffer = unsafe PacketBuffer.unsafeReclaim(UnsafeMutableRawPointer(bitPattern: address)!)
                    if buffer.withUnsafeBytes({ $0[0] }) != stamp { overwritten.add(1, ordering: .relaxed) }
                    outstanding.withLock { _ = $0.remove(address) }
                    buffer.release()
                    released.send(1)
                }
            }
        }
        var taken = 0
        var releasedCount = 0
        var lost = false
        while taken < cycles {
            guard var buffer = pool.take() else {
                // Every buffer is with a releaser: wait until one comes back, then drain. A
                // buffer lost on its way home would leave the owner waiting: bounded, counted.
                guard let token = released.receive(timeoutSeconds: 10) else { lost = true; break }
                releasedCount += token
                pool.drainReturns()
                continue
            }
            let stamp = UInt8(truncatingIfNeeded: taken)
            buffer.length = 1
            buffer.withUnsafeMutableBytes { $0[0] = stamp }
            let address = unsafe UInt(bitPattern: buffer.unsafeLend().baseAddress)
            if !outstanding.withLock({ $0.insert(address).inserted }) { handedOutTwice.add(1, ordering: .relaxed) }
            queues[taken % releasers].send((address, stamp))
            taken += 1
        }
        for queue in queues { queue.send(nil) }
        for thread in threads { thread.join() }
        releasedCount += released.drain().reduce(0, +)
        pool.drainReturns()

        let stats = pools.statistics()
        #expect(!lost, "the owner never waited 10 s for a buffer to come home")
        #expect(handedOutTwice.load(ordering: .relaxed) == 0, "no buffer was taken while another thread held it")
        #expect(overwritten.load(ordering: .relaxed) == 0)
        #expect(releasedCount == cycles)
        #expect(stats.workers[0].remoteReturns + stats.workers[0].overflowDraws == UInt64(cycles),
                "every local buffer released on another thread went through the ring")
        #expect(stats.workers[0].remoteReturns > UInt64(cycles / 2))
        #expect(stats.workers[0].pendingReturns == 0)
        #expect(stats.totalInUse == 0, "every buffer came home")
        pool.retire()
    }
}

/// A blocking queue on a pthread mutex and condition (visible to ThreadSanitizer).
final class Mailbox<Value>: @unchecked Sendable {
    // @unchecked: `items` is touched with `mutex` held only.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var items: [Value] = []
    private var first = 0
    init() { pthread_mutex_init(mutex, nil); pthread_cond_init(condition, nil) }
    deinit {
        pthread_cond_destroy(condition); pthread_mutex_destroy(mutex)
        condition.deallocate(); mutex.deallocate()
    }
    func send(_ value: Value) {
        pthread_mutex_lock(mutex); items.append(value); pthread_cond_signal(condition); pthread_mutex_unlock(mutex)
    }
    func receive() -> Value {
        pthread_mutex_lock(mutex)
        while first == items.count { pthread_cond_wait(condition, mutex) }
        let value = items[first]
        first += 1
        if first == items.count { items.removeAll(keepingCapacity: true); first = 0 }
        pthread_mutex_unlock(mutex)
        return value
    }
    func receive(timeoutSeconds: Int) -> Value? {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_sec += timeoutSeconds
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while first == items.count {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { return nil }
        }
        let value = items[first]
        first += 1
        if first == items.count { items.removeAll(keepingCapacity: true); first = 0 }
        return value
    }
    func drain() -> [Value] {
        pthread_mutex_lock(mutex)
        defer { items.removeAll(); first = 0; pthread_mutex_unlock(mutex) }
        return Array(items[first...])
    }
}
