import FastAlloc
import Synchronization
#if canImport(Glibc)
import Glibc
#endif
struct Block: Sendable { var words: InlineArray<256, UInt64> = .init(repeating: 0) }
@inline(never) func sink(_ x: UInt) { if x == 1 { print("x") } }
func now() -> UInt64 { var t = timespec(); clock_gettime(CLOCK_MONOTONIC, &t); return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec) }
@inline(never) func loopTS(_ ts: ThreadSafePool<Block>, _ n: Int) { for _ in 0..<n { let h = ts.acquire(); sink(h.address) } }
@inline(never) func loopMutexLock(_ m: UnsafeMutablePointer<pthread_mutex_t>, _ n: Int) { for i in 0..<n { pthread_mutex_trylock(m); sink(UInt(i)); pthread_mutex_unlock(m) } }
@inline(never) func loopSyncMutex(_ m: borrowing Mutex<Int>, _ n: Int) { for i in 0..<n { m.withLock { $0 &+= i } } }
@inline(never) func loopCAS(_ a: borrowing Atomic<Int>, _ n: Int) { for i in 0..<n { _ = a.compareExchange(expected: i, desired: i + 1, ordering: .acquiringAndReleasing) } }
@inline(never) func loopSpin(_ a: borrowing Atomic<Bool>, _ n: Int) { for i in 0..<n { while a.exchange(true, ordering: .acquiring) {}; sink(UInt(i)); a.store(false, ordering: .releasing) } }
func run() {
    var t = pthread_t()
    pthread_create(&t, nil, { _ in sleep(100); return nil }, nil)  // a second thread, as in any server
    let n = 20_000_000
    let ts = try! ThreadSafePool<Block>(config: PoolConfig(capacity: 64, growth: .linear(64), initialize: { Block() }))
    let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1); pthread_mutex_init(m, nil)
    let sm = Mutex<Int>(0)
    let a = Atomic<Int>(0)
    let b = Atomic<Bool>(false)
    for _ in 0..<2 {
        var t0 = now(); loopTS(ts, n); print("ThreadSafePool pair", Double(now() - t0) / Double(n))
        t0 = now(); loopMutexLock(m, n); print("pthread trylock+unlock", Double(now() - t0) / Double(n))
        t0 = now(); loopSyncMutex(sm, n); print("Synchronization.Mutex withLock", Double(now() - t0) / Double(n))
        t0 = now(); loopCAS(a, n); print("Atomic CAS", Double(now() - t0) / Double(n))
        t0 = now(); loopSpin(b, n); print("xchg spin lock+unlock", Double(now() - t0) / Double(n))
    }
}
run()
