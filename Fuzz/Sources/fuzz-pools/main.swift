// Fuzzes the pools' public API against a model. The input picks a pool (FixedPool,
// GrowingPool with linear or exponential growth, ThreadLocalPool, ThreadSafePool, or the packet
// buffers' local + overflow pools), its shape and its allocation order, then a sequence of
// operations: acquire, acquire a batch, release, release on another thread, write, check.
//
// After every operation the pool's statistics must equal the model's (capacity, in use, high
// water, acquisitions, releases, failed acquisitions, growth events, hook calls), every live
// handle must still hold the value written through it (so nothing moved and nothing was handed
// out twice), addresses must be distinct and aligned, and a lowest-first FixedPool must hand out
// exactly the lowest free slot. At the end everything is released and the pool must report zero
// in use; builds with DEBUG defined (a debug build, or -c release with -Xswiftc -DDEBUG) also
// trap on a double release or a foreign pointer, and AddressSanitizer on any access to freed
// or unowned memory.
//
// One file per driver: UnsynchronizedDriver (FixedPool, GrowingPool, ThreadLocalPool),
// SharedDriver (ThreadSafePool, acquired and released on either thread), BufferDriver (packet
// buffers, released on either thread); Model.swift holds what they share, OtherThread.swift the
// one long-lived thread the cross-thread operations run on (in one input of four, see
// makeDriver).
import FastAlloc
import FuzzSupport
import PacketBuffers

// MARK: The input

func makeDriver(_ input: inout ByteReader) -> Driver? {
    let kindByte = input.next()
    let kind = kindByte % 6
    // One input in four runs its "other thread" operations on the other thread (every seed
    // does: their kind bytes are below 6); the rest run them on this thread. A hand-off is two
    // futex wake-ups and two context switches: in an optimised build, crossing in every input
    // took 40% of the fuzzer's time. Coverage keeps the crossing inputs in the corpus.
    let crossThreads = (kindByte / 6) % 4 == 0
    let capacity = 1 + Int(input.next() % 12)
    let extra = Int(input.next() % 24)
    let step = input.next()
    let shape = input.next()
    let order: AllocationOrder = shape & 1 == 0 ? .lifo : .lowestFirst
    let alignment = [8, 16, 64, 4096][Int(shape >> 1) % 4]
    let growth: GrowthStrategy
    switch kind {
    case 0: growth = .none
    case 1, 4: growth = step & 1 == 0 ? .linear(1 + Int(step >> 1) % 8) : .exponential(1.01 + Double(step >> 1) / 32)
    case 2: growth = .exponential(1.01 + Double(step) / 64)
    default: growth = .none
    }
    let maximum = growth == .none ? capacity : capacity + extra
    acquireHooks.store(0, ordering: .relaxed)
    releaseHooks.store(0, ordering: .relaxed)
    if kind == 5 {
        let config = try! PacketBufferConfig(
            bufferSize: 64 << Int(shape % 6), localBuffers: capacity, overflowInitial: 1 + Int(step % 4),
            overflowGrowth: step & 4 == 0 ? .linear(1 + Int(step >> 3) % 3) : .exponential(2),
            overflowMax: 1 + Int(step % 4) + extra)
        return try! BufferDriver(config: config, crossThreads: crossThreads)
    }
    let config = try! PoolConfig<Payload>(
        capacity: capacity, alignment: alignment, growth: growth, maxCapacity: maximum, order: order,
        name: "fuzz", onAcquire: { _ in acquireHooks.add(1, ordering: .relaxed) },
        onRelease: { _ in releaseHooks.add(1, ordering: .relaxed) })
    let model = PoolModel(capacity: capacity, maximum: maximum, growth: growth)
    switch kind {
    case 0:
        let pool = try! FixedPool(config: config)
        return UnsynchronizedDriver(pool: pool, model: model, alignment: alignment,
                                    lowestFirstSlab: order == .lowestFirst ? pool.slabAddress : nil)
    case 1, 2:
        return UnsynchronizedDriver(pool: try! GrowingPool(config: config), model: model, alignment: alignment, lowestFirstSlab: nil)
    case 3:
        return UnsynchronizedDriver(pool: try! ThreadLocalPool(config: config), model: model, alignment: alignment, lowestFirstSlab: nil)
    default:
        return SharedDriver(pool: try! ThreadSafePool(config: config), model: model, alignment: alignment, crossThreads: crossThreads)
    }
}

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    // Safe: libFuzzer's buffer is valid for this call.
    var input = ByteReader(UnsafeBufferPointer(start: start, count: count))
    guard let driver = makeDriver(&input) else { return 0 }
    var serial: UInt64 = 1
    var operations = 0
    while !input.isAtEnd && operations < 512 {
        operations += 1
        let byte = input.next()
        let slot = Int(input.next()) % slotCount
        serial &+= 1
        switch byte % 8 {
        case 0, 1, 2: driver.acquire(slot, serial: serial << 8)
        case 3: driver.acquireBatch(first: slot, count: Int(byte >> 3) % 6, serial: serial << 8)
        case 4, 5: driver.release(slot)
        case 6: driver.releaseOnAnotherThread(slot)
        default: driver.write(slot, serial: serial << 8)
        }
        driver.verify()
    }
    driver.finish()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

runFuzzer(LLVMFuzzerTestOneInput)
