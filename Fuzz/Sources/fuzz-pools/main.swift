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
// in use; debug builds (this one) also trap on a double release or a foreign pointer, and
// AddressSanitizer on any access to freed or unowned memory.
import FastAlloc
import FuzzSupport
import PacketBuffers
import Synchronization

let slotCount = 32

struct Payload: Sendable {
    var serial: UInt64
    var inverse: UInt64
    init(_ serial: UInt64) { self.serial = serial; inverse = ~serial }
    var intact: Bool { inverse == ~serial }
}

/// Hook calls, counted by the pools' onAcquire/onRelease closures.
let acquireHooks = Atomic<Int>(0)
let releaseHooks = Atomic<Int>(0)

/// What a FastAlloc pool must report, by the rules of its growth strategy.
struct PoolModel {
    var capacity: Int
    let maximum: Int
    let growth: GrowthStrategy
    var inUse = 0
    var highWater = 0
    var acquisitions: UInt64 = 0
    var releases: UInt64 = 0
    var failed: UInt64 = 0
    var growthEvents = 0

    /// One growth step, as documented: at least one slot more, capped at the maximum.
    func grown() -> Int {
        switch growth {
        case .none: return capacity
        case .linear(let step): return min(capacity + step, maximum)
        case .exponential(let factor):
            return min(max(Int((Double(capacity) * factor).rounded(.up)), capacity + 1), maximum)
        }
    }

    /// One slot taken, growing when every slot is in use; false (a failed acquisition) when full.
    mutating func take() -> Bool {
        if inUse == capacity {
            let next = grown()
            guard next > capacity else { failed += 1; return false }
            capacity = next
            growthEvents += 1
        }
        inUse += 1
        highWater = max(highWater, inUse)
        acquisitions += 1
        return true
    }

    /// A batch: all or nothing, against what growth can still reach.
    mutating func takeBatch(_ count: Int) -> Bool {
        guard maximum - inUse >= count else { failed += 1; return false }
        for _ in 0..<count { check(take(), "batch slot refused after the check") }
        return true
    }

    mutating func put() {
        inUse -= 1
        releases += 1
    }

    func verify(_ stats: PoolStatistics) {
        check(stats.capacity == capacity, "capacity \(stats.capacity), model \(capacity)")
        check(stats.maxCapacity == maximum, "maxCapacity \(stats.maxCapacity), model \(maximum)")
        check(stats.inUse == inUse, "inUse \(stats.inUse), model \(inUse)")
        check(stats.highWater == highWater, "highWater \(stats.highWater), model \(highWater)")
        check(stats.acquisitions == acquisitions, "acquisitions \(stats.acquisitions), model \(acquisitions)")
        check(stats.releases == releases, "releases \(stats.releases), model \(releases)")
        check(stats.failedAcquisitions == failed, "failed \(stats.failedAcquisitions), model \(failed)")
        check(stats.growthEvents == growthEvents, "growth events \(stats.growthEvents), model \(growthEvents)")
        check(acquireHooks.load(ordering: .relaxed) == Int(acquisitions), "onAcquire ran \(acquireHooks.load(ordering: .relaxed)) times for \(acquisitions)")
        check(releaseHooks.load(ordering: .relaxed) == Int(releases), "onRelease ran \(releaseHooks.load(ordering: .relaxed)) times for \(releases)")
    }
}

/// The operations, each against one of `slotCount` places a handle can live in.
protocol Driver: AnyObject {
    func acquire(_ slot: Int, serial: UInt64)
    func acquireBatch(_ slots: [Int], serial: UInt64)
    func release(_ slot: Int)
    func releaseOnAnotherThread(_ slot: Int)
    func write(_ slot: Int, serial: UInt64)
    func verify()
    func finish()
}

/// Addresses and serials of the live handles, by slot: the checks every driver shares.
struct Live {
    var serials = [UInt64?](repeating: nil, count: slotCount)
    var addresses = [UInt?](repeating: nil, count: slotCount)

    mutating func added(_ slot: Int, address: UInt, serial: UInt64, alignment: Int) {
        check(!addresses.contains(address), "address \(address) handed out twice")
        check(address % UInt(alignment) == 0, "address \(address) not aligned to \(alignment)")
        serials[slot] = serial
        addresses[slot] = address
    }

    mutating func removed(_ slot: Int) {
        serials[slot] = nil
        addresses[slot] = nil
    }

    var count: Int { serials.lazy.filter { $0 != nil }.count }
}

// MARK: FixedPool, GrowingPool, ThreadLocalPool

final class UnsynchronizedDriver: Driver {
    let pool: UnsynchronizedPool<Payload>
    var model: PoolModel
    let alignment: Int
    let lowestFirstSlab: UInt?  // a lowest-first FixedPool: its slab, for exact slot checks
    var live = Live()
    // Handles are noncopyable, so they live in raw storage: `slotCount` initialised optionals,
    // each moved out and re-initialised in one place (take/put below), deinitialised in deinit.
    let handles = UnsafeMutablePointer<PoolHandle<Payload>?>.allocate(capacity: slotCount)

    init(pool: UnsynchronizedPool<Payload>, model: PoolModel, alignment: Int, lowestFirstSlab: UInt?) {
        self.pool = pool
        self.model = model
        self.alignment = alignment
        self.lowestFirstSlab = lowestFirstSlab
        for slot in 0..<slotCount { (handles + slot).initialize(to: nil) }
    }

    deinit {
        handles.deinitialize(count: slotCount)
        handles.deallocate()
    }

    private func put(_ handle: consuming PoolHandle<Payload>, at slot: Int, serial: UInt64) {
        let address = handle.address
        check(handle.isAligned(to: alignment), "handle not aligned to \(alignment)")
        if let slab = lowestFirstSlab {
            // The lowest free index: the lowest not held by a live handle.
            let used = Set(live.addresses.compactMap { $0 }.map { Int($0 - slab) / pool.slotStride })
            let expected = (0...).first { !used.contains($0) }!
            check(address == slab + UInt(expected * pool.slotStride), "lowest-first gave \(address), expected index \(expected)")
        }
        live.added(slot, address: address, serial: serial, alignment: alignment)
        // Safe: slot < slotCount; the place is initialised (to nil: the caller emptied it).
        handles[slot] = consume handle
    }

    func acquire(_ slot: Int, serial: UInt64) {
        release(slot)
        let expected = model.take()
        guard let handle = pool.tryAcquire(Payload(serial)) else {
            return check(!expected, "tryAcquire gave nil at \(model.inUse)/\(model.capacity)")
        }
        check(expected, "tryAcquire gave a slot; the model expected none")
        put(handle, at: slot, serial: serial)
    }

    func acquireBatch(_ slots: [Int], serial: UInt64) {
        for slot in slots { release(slot) }
        let expected = model.takeBatch(slots.count)
        guard var batch = pool.tryAcquire(count: slots.count, { Payload(serial &+ UInt64($0)) }) else {
            return check(!expected, "batch of \(slots.count) refused; the model expected it")
        }
        check(expected, "batch of \(slots.count) given; the model expected none")
        for (index, slot) in slots.enumerated() {
            guard let handle = batch.popFirst() else { return check(false, "batch ran out at \(index) of \(slots.count)") }
            let held = handle.value.serial
            check(held == serial &+ UInt64(index), "batch slot \(index) holds \(held)")
            put(handle, at: slot, serial: serial &+ UInt64(index))
        }
        let empty = batch.isEmpty
        check(empty, "batch not empty after \(slots.count) pops")
    }

    func release(_ slot: Int) {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        if let handle = (handles + slot).move() {
            check(handle.value.serial == live.serials[slot] && handle.value.intact, "value changed before release")
            handle.release()
            model.put()
            live.removed(slot)
        }
        (handles + slot).initialize(to: nil)
    }

    func releaseOnAnotherThread(_ slot: Int) { release(slot) }  // not Sendable: one thread only

    func write(_ slot: Int, serial: UInt64) {
        guard handles[slot] != nil else { return }
        handles[slot]!.withValue { $0 = Payload(serial) }
        live.serials[slot] = serial
    }

    func verify() {
        for slot in 0..<slotCount where live.serials[slot] != nil {
            let value = handles[slot]!.value
            var address: UInt = 0
            if let handle = (handles + slot).move() {  // Safe: slot < slotCount; put back at once.
                address = handle.address
                (handles + slot).initialize(to: handle)
            } else {
                (handles + slot).initialize(to: nil)
            }
            check(value.serial == live.serials[slot]! && value.intact, "slot \(slot) holds \(value.serial), expected \(live.serials[slot]!)")
            check(address == live.addresses[slot]!, "slot \(slot) moved")
        }
        model.verify(pool.statistics)
        check(pool.available == model.capacity - model.inUse, "available \(pool.available)")
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        verify()
        check(pool.statistics.inUse == 0, "in use after releasing everything")
    }
}

// MARK: ThreadSafePool

/// Carries a handle to another thread.
final class Carrier<Handle: ~Copyable>: @unchecked Sendable {
    var handle: Handle?
    init(_ handle: consuming Handle?) { self.handle = handle }
}

final class SharedDriver: Driver {
    let pool: ThreadSafePool<Payload>
    var model: PoolModel
    let alignment: Int
    var live = Live()
    // As in UnsynchronizedDriver: `slotCount` initialised optionals, moved out and back in place.
    let handles = UnsafeMutablePointer<SharedPoolHandle<Payload>?>.allocate(capacity: slotCount)

    init(pool: ThreadSafePool<Payload>, model: PoolModel, alignment: Int) {
        self.pool = pool
        self.model = model
        self.alignment = alignment
        for slot in 0..<slotCount { (handles + slot).initialize(to: nil) }
    }

    deinit {
        handles.deinitialize(count: slotCount)
        handles.deallocate()
    }

    private func put(_ handle: consuming SharedPoolHandle<Payload>, at slot: Int, serial: UInt64) {
        check(handle.isAligned(to: alignment), "handle not aligned to \(alignment)")
        live.added(slot, address: handle.address, serial: serial, alignment: alignment)
        handles[slot] = consume handle  // Safe: slot < slotCount, emptied by the caller.
    }

    func acquire(_ slot: Int, serial: UInt64) {
        release(slot)
        // Acquired on another thread half of the time: the pool is shared.
        let carrier = Carrier<SharedPoolHandle<Payload>>(nil)
        if serial & 1 == 0 {
            carrier.handle = pool.tryAcquire(Payload(serial))
        } else {
            let pool = self.pool
            onAnotherThread { carrier.handle = pool.tryAcquire(Payload(serial)) }
        }
        let expected = model.take()
        guard let handle = carrier.handle.take() else {
            return check(!expected, "tryAcquire gave nil at \(model.inUse)/\(model.capacity)")
        }
        check(expected, "tryAcquire gave a slot; the model expected none")
        put(handle, at: slot, serial: serial)
    }

    func acquireBatch(_ slots: [Int], serial: UInt64) {
        for slot in slots { release(slot) }
        let expected = model.takeBatch(slots.count)
        guard var batch = pool.tryAcquire(count: slots.count, { Payload(serial &+ UInt64($0)) }) else {
            return check(!expected, "batch of \(slots.count) refused; the model expected it")
        }
        check(expected, "batch of \(slots.count) given; the model expected none")
        for (index, slot) in slots.enumerated() {
            guard let handle = batch.popFirst() else { return check(false, "batch ran out at \(index) of \(slots.count)") }
            let held = handle.value.serial
            check(held == serial &+ UInt64(index), "batch slot \(index) holds \(held)")
            put(handle, at: slot, serial: serial &+ UInt64(index))
        }
        let empty = batch.isEmpty
        check(empty, "batch not empty after \(slots.count) pops")
    }

    private func take(_ slot: Int) -> SharedPoolHandle<Payload>? {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        let handle = (handles + slot).move()
        (handles + slot).initialize(to: nil)
        if let handle {
            check(handle.value.serial == live.serials[slot] && handle.value.intact, "value changed before release")
            model.put()
            live.removed(slot)
            return handle
        }
        return nil
    }

    func release(_ slot: Int) {
        take(slot)?.release()
    }

    func releaseOnAnotherThread(_ slot: Int) {
        guard let handle = take(slot) else { return }
        let carrier = Carrier<SharedPoolHandle<Payload>>(handle)
        onAnotherThread { carrier.handle = nil }
        check(carrier.handle == nil, "the other thread did not release")
    }

    func write(_ slot: Int, serial: UInt64) {
        guard handles[slot] != nil else { return }
        handles[slot]!.withValue { $0 = Payload(serial) }
        live.serials[slot] = serial
    }

    func verify() {
        for slot in 0..<slotCount where live.serials[slot] != nil {
            let value = handles[slot]!.value
            check(value.serial == live.serials[slot]! && value.intact, "slot \(slot) holds \(value.serial)")
        }
        model.verify(pool.statistics)
        let lock = pool.lockStatistics
        check(lock.contended <= lock.acquisitions, "contended \(lock.contended) > acquisitions \(lock.acquisitions)")
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        verify()
    }
}

// MARK: Packet buffers: a worker's local pool, then the shared overflow pool

final class BufferDriver: Driver {
    let pools: PacketBufferPools
    let worker: WorkerBufferPool
    let config: PacketBufferConfig
    /// The overflow pool's model (no hooks: its hook counters stay at zero).
    var overflow: PoolModel
    var localOut = 0      // local buffers held here
    var pending = 0       // local buffers released on another thread, not drained yet
    var overflowDraws: UInt64 = 0
    var failedDraws: UInt64 = 0
    var fromOverflow = [Bool](repeating: false, count: slotCount)
    var live = Live()
    // As above: `slotCount` initialised optionals, moved out and back in place.
    let buffers = UnsafeMutablePointer<PacketBuffer?>.allocate(capacity: slotCount)

    init(config: PacketBufferConfig) throws {
        self.config = config
        pools = try PacketBufferPools(config: config)
        worker = pools.makeWorkerPool()
        overflow = PoolModel(capacity: config.overflowInitial, maximum: config.overflowMax, growth: config.overflowGrowth)
        for slot in 0..<slotCount { (buffers + slot).initialize(to: nil) }
    }

    deinit {
        buffers.deinitialize(count: slotCount)
        buffers.deallocate()
    }

    /// The length a buffer holding `serial` gets: its capacity less 0 to 3 words.
    private func length(for serial: UInt64) -> Int { config.bufferSize - 8 * Int((serial >> 8) % 4) }

    private func fill(_ buffer: inout PacketBuffer, serial: UInt64) {
        let length = length(for: serial)
        buffer.withUnsafeMutableBytes { bytes in
            bytes.storeBytes(of: serial, toByteOffset: 0, as: UInt64.self)
            bytes.storeBytes(of: ~serial, toByteOffset: length - 8, as: UInt64.self)
        }
        buffer.length = length
    }

    private func matches(_ buffer: borrowing PacketBuffer, serial: UInt64) -> Bool {
        buffer.length == length(for: serial) && buffer.withUnsafeBytes { bytes in
            bytes.load(fromByteOffset: 0, as: UInt64.self) == serial
                && bytes.load(fromByteOffset: bytes.count - 8, as: UInt64.self) == ~serial
        }
    }

    func acquire(_ slot: Int, serial: UInt64) {
        release(slot)
        // The model of take(): local while fewer than localBuffers are out (draining the
        // returns when the free list is empty), then the overflow pool.
        if config.localBuffers - localOut - pending == 0 && pending > 0 { pending = 0 }
        let local = localOut + pending < config.localBuffers
        let expected = local || overflow.take()
        if !local { if expected { overflowDraws += 1 } else { failedDraws += 1 } }
        guard var buffer = worker.take() else {
            check(!expected, "take() gave nil; model: local \(local), overflow \(overflow.inUse)/\(overflow.capacity)")
            return
        }
        check(expected, "take() gave a buffer; the model expected nil")
        check(buffer.capacity == config.bufferSize, "buffer capacity \(buffer.capacity)")
        check(buffer.length == 0, "a new buffer has length \(buffer.length)")
        if local { localOut += 1 }
        fromOverflow[slot] = !local
        fill(&buffer, serial: serial)
        live.added(slot, address: buffer.address, serial: serial, alignment: 16)
        buffers[slot] = consume buffer  // Safe: slot < slotCount, emptied above.
    }

    func acquireBatch(_ slots: [Int], serial: UInt64) {
        for (index, slot) in slots.enumerated() { acquire(slot, serial: serial &+ UInt64(index)) }
    }

    private func take(_ slot: Int) -> PacketBuffer? {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        let buffer = (buffers + slot).move()
        (buffers + slot).initialize(to: nil)
        if let buffer {
            check(matches(buffer, serial: live.serials[slot]!), "buffer contents changed")
            live.removed(slot)
            return buffer
        }
        return nil
    }

    func release(_ slot: Int) {
        guard let buffer = take(slot) else { return }
        buffer.release()
        if fromOverflow[slot] { overflow.put() } else { localOut -= 1 }
    }

    func releaseOnAnotherThread(_ slot: Int) {
        guard let buffer = take(slot) else { return }
        let carrier = Carrier<PacketBuffer>(buffer)
        onAnotherThread { carrier.handle = nil }
        if fromOverflow[slot] { overflow.put() } else { localOut -= 1; pending += 1 }
    }

    func write(_ slot: Int, serial: UInt64) {
        guard buffers[slot] != nil else { return }
        fill(&buffers[slot]!, serial: serial)
        live.serials[slot] = serial
    }

    func verify() {
        for slot in 0..<slotCount where live.serials[slot] != nil {
            check(matches(buffers[slot]!, serial: live.serials[slot]!), "slot \(slot) contents changed")
        }
        let stats = pools.statistics()
        let mine = stats.workers[0]
        check(mine.capacity == config.localBuffers, "local capacity \(mine.capacity)")
        check(mine.inUse == localOut, "local in use \(mine.inUse), model \(localOut)")
        check(mine.pendingReturns == pending, "pending returns \(mine.pendingReturns), model \(pending)")
        check(mine.overflowDraws == overflowDraws, "overflow draws \(mine.overflowDraws), model \(overflowDraws)")
        check(mine.failedDraws == failedDraws, "failed draws \(mine.failedDraws), model \(failedDraws)")
        check(stats.overflow.capacity == overflow.capacity, "overflow capacity \(stats.overflow.capacity), model \(overflow.capacity)")
        check(stats.overflow.inUse == overflow.inUse, "overflow in use \(stats.overflow.inUse), model \(overflow.inUse)")
        check(stats.overflow.highWater == overflow.highWater, "overflow high water \(stats.overflow.highWater), model \(overflow.highWater)")
        check(stats.overflow.growthEvents == overflow.growthEvents, "overflow growth \(stats.overflow.growthEvents), model \(overflow.growthEvents)")
        check(stats.overflow.draws == overflowDraws, "overflow pool draws \(stats.overflow.draws), model \(overflowDraws)")
        check(stats.totalInUse == localOut + overflow.inUse, "total in use \(stats.totalInUse)")
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        worker.drainReturns()
        pending = 0
        verify()
        check(pools.statistics().totalInUse == 0, "buffers in use after releasing everything")
    }
}

// MARK: The input

func makeDriver(_ input: inout ByteReader) -> Driver? {
    let kind = input.next() % 6
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
        return try! BufferDriver(config: config)
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
        return SharedDriver(pool: try! ThreadSafePool(config: config), model: model, alignment: alignment)
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
        case 3: driver.acquireBatch((0..<Int(byte >> 3) % 6).map { (slot + $0 * 7) % slotCount }, serial: serial << 8)
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
