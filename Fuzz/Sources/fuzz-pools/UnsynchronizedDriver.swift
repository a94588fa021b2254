// FixedPool, GrowingPool and ThreadLocalPool: one thread, handles against the model; a
// lowest-first FixedPool must hand out exactly the lowest free slot.
import FastAlloc
import FuzzSupport

final class UnsynchronizedDriver: Driver {
    /// The one instance: each input starts it with its own new pool (`start`), and `finish`
    /// lets that pool go; the driver's storage is allocated once for the run.
    nonisolated(unsafe) static let shared = UnsynchronizedDriver()
    /// Held between inputs, so that the input's pool is destroyed when the input ends.
    nonisolated(unsafe) private static let idlePool = try! FixedPool<Payload>(capacity: 1)

    private(set) var pool: UnsynchronizedPool<Payload> = UnsynchronizedDriver.idlePool
    var model = PoolModel(capacity: 1, maximum: 1, growth: .none)
    var alignment = 8
    var lowestFirstSlab: UInt?  // a lowest-first FixedPool: its slab, for exact slot checks
    var stride: UInt = 1
    var live = Live()
    // Handles are noncopyable, so they live in raw storage: `slotCount` initialised optionals,
    // each moved out and re-initialised in one place (put/release below); all nil between inputs.
    let handles = UnsafeMutablePointer<PoolHandle<Payload>?>.allocate(capacity: slotCount)

    private init() {
        for slot in 0..<slotCount { (handles + slot).initialize(to: nil) }
    }

    func start(pool: UnsynchronizedPool<Payload>, model: PoolModel, alignment: Int, lowestFirstSlab: UInt?) -> UnsynchronizedDriver {
        self.pool = pool
        self.model = model
        self.alignment = alignment
        self.lowestFirstSlab = lowestFirstSlab
        stride = UInt(pool.slotStride)
        live.reset()
        return self
    }

    private func put(_ handle: consuming PoolHandle<Payload>, at slot: Int, serial: UInt64) {
        let address = handle.address
        if !handle.isAligned(to: alignment) { fail("handle not aligned to \(alignment)") }
        if let slab = lowestFirstSlab {
            // The lowest free index: the lowest not held by a live handle. A lowest-first pool is
            // a FixedPool of at most 12 slots, so the indices in use fit one word.
            var used: UInt64 = 0
            for index in 0..<live.count { used |= 1 << UInt64((live.addresses[live.list[index]] - slab) / stride) }
            let expected = (~used).trailingZeroBitCount
            if address != slab + UInt(expected) * stride { fail("lowest-first gave \(address), expected index \(expected)") }
        }
        live.added(slot, address: address, serial: serial, alignment: alignment)
        // Safe: slot < slotCount; the place is initialised (to nil: the caller emptied it).
        handles[slot] = consume handle
    }

    func acquire(_ slot: Int, serial: UInt64) {
        release(slot)
        let expected = model.take()
        guard let handle = pool.tryAcquire(Payload(serial)) else {
            if expected { fail("tryAcquire gave nil at \(model.inUse)/\(model.capacity)") }
            return
        }
        if !expected { fail("tryAcquire gave a slot; the model expected none") }
        put(handle, at: slot, serial: serial)
    }

    func acquireBatch(first: Int, count: Int, serial: UInt64) {
        for index in 0..<count { release(batchSlot(first: first, index: index)) }
        let expected = model.takeBatch(count)
        guard var batch = pool.tryAcquire(count: count, { Payload(serial &+ UInt64($0)) }) else {
            if expected { fail("batch of \(count) refused; the model expected it") }
            return
        }
        if !expected { fail("batch of \(count) given; the model expected none") }
        for index in 0..<count {
            guard let handle = batch.popFirst() else { fail("batch ran out at \(index) of \(count)") }
            let held = handle.value.serial
            if held != serial &+ UInt64(index) { fail("batch slot \(index) holds \(held)") }
            put(handle, at: batchSlot(first: first, index: index), serial: serial &+ UInt64(index))
        }
        let empty = batch.isEmpty
        if !empty { fail("batch not empty after \(count) pops") }
    }

    func release(_ slot: Int) {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        if let handle = (handles + slot).move() {
            if handle.value.serial != live.serial(slot) || !handle.value.intact { fail("value changed before release") }
            handle.release()
            model.put()
            live.removed(slot)
        }
        (handles + slot).initialize(to: nil)
    }

    func releaseOnAnotherThread(_ slot: Int) { release(slot) }  // not Sendable: one thread only

    func write(_ slot: Int, serial: UInt64) {
        guard live.held[slot] else { return }
        handles[slot]!.withValue { $0 = Payload(serial) }
        live.serials[slot] = serial
    }

    func verify() {
        for index in 0..<live.count {
            let slot = live.list[index]
            // Safe: slot < slotCount, and the place holds a handle (it is in the live list).
            let value = handles[slot]!.value
            if value.serial != live.serials[slot] || !value.intact {
                fail("slot \(slot) holds \(value.serial), expected \(live.serials[slot])")
            }
            if handles[slot]?.address != live.addresses[slot] { fail("slot \(slot) moved") }
        }
        model.verify(pool.statistics)
        if pool.available != model.capacity - model.inUse { fail("available \(pool.available)") }
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        verify()
        if pool.statistics.inUse != 0 { fail("in use after releasing everything") }
        pool = UnsynchronizedDriver.idlePool
    }
}
