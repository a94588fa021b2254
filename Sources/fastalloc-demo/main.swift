import FastAlloc
#if canImport(Glibc)
import Glibc
#endif
struct V { var a = 0; var b = 0 }
func worker(_ arg: UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? {
    let pool = Unmanaged<ThreadSafePool<V>>.fromOpaque(arg!).takeUnretainedValue()
    for k in 0..<20000 { if var h = pool.tryAcquire(V()) { h.withValue { $0.a = k } } }
    return nil
}
func run() {
let pool = try! ThreadSafePool<V>(config: PoolConfig(capacity: 8, growth: .linear(8), maxCapacity: 64))
do { let h0 = pool.acquire(V())
print("slot", String(h0.address, radix: 16))
h0.release() }
var ts: [pthread_t] = []
let raw = Unmanaged.passUnretained(pool).toOpaque()
for _ in 0..<2 {
  var t = pthread_t()
  pthread_create(&t, nil, { worker($0) }, raw)
  ts.append(t)
}
for t in ts { pthread_join(t, nil) }
print("done")
}
run()
