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
// SharedDriver (ThreadSafePool, acquired and released on either thread, with magazines of 0 to
// 8 by the shape byte; with magazines the model checks the figures that stay exact and bounds
// the rest, and accepts a refusal only when every free slot is cached), BufferDriver (packet
// buffers, released on either thread); Model.swift holds what they share, OtherThread.swift the
// one long-lived thread the cross-thread operations run on (in one input of 16, see crosses;
// the seeds named *-crossing are such inputs).
//
// Speed (issue 14 asks 10^7 executions in make fuzz's 10 minutes, about 17,000 a second): each
// driver is made once and reused, with a new pool per input, so the harness allocates nothing
// per input or per operation (AddressSanitizer makes each allocation cost about a microsecond);
// the harness's own code is compiled without comparison tracing (Package.swift); inputs are at
// most 128 bytes (corpus/pools.options), 61 operations, as many as the seeds have and enough to
// fill and empty pools of at most 36 slots with 32 handles (192 bytes reached the same coverage
// in a minute, 10-20% slower; the cap of 512 below is for longer inputs replayed by hand); few
// inputs cross threads. The pools themselves are new for every input, so that each input replays alone as
// it ran: a pool kept from input to input would carry its free-list order, high water and
// growth into the next.
import FastAlloc
import FuzzSupport
import PacketBuffers

// MARK: The input

/// Other-thread operations that really cross, per crossing input (see `crosses`); the later ones
/// run on this thread.
let crossingsPerInput = 4

/// Whether an input runs its first `crossingsPerInput` "other thread" operations on the other
/// thread (the rest run them on this thread, where they are plain acquires and releases): one
/// input in 16, by a hash of the whole input, so that it stays one execution in 16 whatever the
/// corpus holds. (It used to be one kind byte in four; but children mostly keep their parent's
/// kind byte, and crossing inputs find coverage the others do not, so most of the corpus
/// crossed, and most executions.) A hand-off wakes the other thread and then this one: on this
/// shared 2-core virtual machine the first hand-off of an input, to a thread that went idle,
/// costs about 60 µs, a whole input's budget at 17,000 inputs a second (issue 14); crossing
/// inputs took half of fuzz-pools' time. What only a crossing reaches (a worker's return stack,
/// pending returns drained by take(), an overflow buffer's locked release from elsewhere, an
/// acquire elsewhere) needs only a few.
func crosses(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var hash: UInt32 = 2_166_136_261  // FNV-1a
    for byte in bytes { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
    return hash % 16 == 0
}

/// The slot alignments an input picks from.
let alignments = [8, 16, 64, 4096]

func makeDriver(_ input: inout ByteReader, crossing: Bool) -> Driver {
    let kind = input.next() % 6
    let crossings = crossing ? crossingsPerInput : 0
    let capacity = 1 + Int(input.next() % 12)
    let extra = Int(input.next() % 24)
    let step = input.next()
    let shape = input.next()
    let order: AllocationOrder = shape & 1 == 0 ? .lifo : .lowestFirst
    let alignment = alignments[Int(shape >> 1) % 4]
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
        return try! BufferDriver.shared.start(config: config, crossings: crossings)
    }
    // ThreadSafePool, LIFO: magazines of 0 (none), 1, 2, 4 or 8, by the shape byte's high bits.
    let magazineSize = kind == 4 && order == .lifo ? [0, 0, 1, 2, 4, 8][Int(shape >> 3) % 6] : 0
    let config = try! PoolConfig<Payload>(
        capacity: capacity, alignment: alignment, growth: growth, maxCapacity: maximum, order: order,
        name: "fuzz", onAcquire: { _ in acquireHooks.add(1, ordering: .relaxed) },
        onRelease: { _ in releaseHooks.add(1, ordering: .relaxed) }, magazineSize: magazineSize)
    let model = PoolModel(capacity: capacity, maximum: maximum, growth: growth)
    let driver = UnsynchronizedDriver.shared
    switch kind {
    case 0:
        let pool = try! FixedPool(config: config)
        return driver.start(pool: pool, model: model, alignment: alignment,
                            lowestFirstSlab: order == .lowestFirst ? pool.slabAddress : nil)
    case 1, 2:
        return driver.start(pool: try! GrowingPool(config: config), model: model, alignment: alignment, lowestFirstSlab: nil)
    case 3:
        return driver.start(pool: try! ThreadLocalPool(config: config), model: model, alignment: alignment, lowestFirstSlab: nil)
    default:
        return SharedDriver.shared.start(pool: try! ThreadSafePool(config: config), model: model, alignment: alignment,
                                         crossings: crossings, magazines: magazineSize > 0)
    }
}

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    // Safe: libFuzzer's buffer is valid for this call.
    let bytes = UnsafeBufferPointer(start: start, count: count)
    var input = ByteReader(bytes)
    let driver = makeDriver(&input, crossing: crosses(bytes))
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
