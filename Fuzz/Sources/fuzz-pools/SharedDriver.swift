// ThreadSafePool: handles acquired on this thread or the other one (half each), released on
// either; statistics and lock statistics against the model.
import FastAlloc
import FuzzSupport

final class SharedDriver: Driver {
    /// The one instance, started with each input's new pool (see UnsynchronizedDriver).
    nonisolated(unsafe) static let shared = SharedDriver()
    private static let idlePool = try! ThreadSafePool<Payload>(config: PoolConfig(capacity: 1))

    private(set) var pool = SharedDriver.idlePool
    var model = PoolModel(capacity: 1, maximum: 1, growth: .none)
    var alignment = 8
    /// The pool has magazines: the model checks what stays exact (`verifyWithMagazines`), and
    /// accepts a refusal only when every free slot is cached in a magazine.
    var magazines = false
    /// How many more other-thread operations of this input really run on the other thread (see
    /// crosses in main.swift); the rest run here, as plain acquires and releases.
    var crossings = 0
    var live = Live()
    // As in UnsynchronizedDriver: `slotCount` initialised optionals, moved out and back in place.
    let handles = UnsafeMutablePointer<SharedPoolHandle<Payload>?>.allocate(capacity: slotCount)

    private init() {
        for slot in 0..<slotCount { (handles + slot).initialize(to: nil) }
    }

    func start(pool: ThreadSafePool<Payload>, model: PoolModel, alignment: Int, crossings: Int, magazines: Bool) -> SharedDriver {
        self.pool = pool
        self.model = model
        self.magazines = magazines
        self.alignment = alignment
        self.crossings = crossings
        live.reset()
        return self
    }

    /// Whether this other-thread operation really crosses (one of the input's crossings).
    private func crossing() -> Bool {
        guard crossings > 0 else { return false }
        crossings -= 1
        return true
    }

    private func put(_ handle: consuming SharedPoolHandle<Payload>, at slot: Int, serial: UInt64) {
        if !handle.isAligned(to: alignment) { fail("handle not aligned to \(alignment)") }
        live.added(slot, address: handle.address, serial: serial, alignment: alignment)
        handles[slot] = consume handle  // Safe: slot < slotCount, emptied by the caller.
    }

    func acquire(_ slot: Int, serial: UInt64) {
        release(slot)
        // Acquired on the other thread half of the time: the pool is shared. (Bit 8: the low
        // byte of every serial is 0, so bit 0 never chose the other thread.)
        // Between operations nothing runs, so these figures are exact.
        let before = magazines ? pool.statistics : nil
        let handle: SharedPoolHandle<Payload>?
        if (serial >> 8) & 1 == 0 || !crossing() {
            handle = pool.tryAcquire(Payload(serial))
        } else {
            let carrier = Carrier<SharedPoolHandle<Payload>>(nil)
            let pool = self.pool
            onOtherThread { carrier.handle = pool.tryAcquire(Payload(serial)) }
            handle = carrier.handle.take()
        }
        let unchanged = model
        let expected = model.take()
        guard let handle else {
            // With magazines, slots cached in a magazine are not free to the other thread: a
            // refusal is right when the pool is at its maximum and every slot not in use is
            // cached (some may be this thread's own: the model does not track whose).
            if expected, let before, before.capacity == before.maxCapacity, before.cachedInMagazines > 0,
               before.inUse + before.cachedInMagazines == before.capacity {
                model = unchanged  // nothing taken, nothing grown: one failed acquisition
                model.failed += 1
            } else if expected {
                fail("tryAcquire gave nil at \(model.inUse)/\(model.capacity)")
            }
            return
        }
        if !expected { fail("tryAcquire gave a slot; the model expected none") }
        put(handle, at: slot, serial: serial)
    }

    func acquireBatch(first: Int, count: Int, serial: UInt64) {
        for index in 0..<count { release(batchSlot(first: first, index: index)) }
        let before = magazines ? pool.statistics : nil
        let unchanged = model
        let expected = model.takeBatch(count)
        guard var batch = pool.tryAcquire(count: count, { Payload(serial &+ UInt64($0)) }) else {
            // A batch comes from the shared pool only: slots cached in magazines do not count.
            if expected, let before, before.cachedInMagazines > 0,
               before.maxCapacity - before.inUse - before.cachedInMagazines < count {
                model = unchanged
                model.failed += 1
            } else if expected {
                fail("batch of \(count) refused; the model expected it")
            }
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

    private func take(_ slot: Int) -> SharedPoolHandle<Payload>? {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        let handle = (handles + slot).move()
        (handles + slot).initialize(to: nil)
        if let handle {
            if handle.value.serial != live.serial(slot) || !handle.value.intact { fail("value changed before release") }
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
        guard crossing() else { return handle.release() }
        let carrier = Carrier<SharedPoolHandle<Payload>>(handle)
        onOtherThread { carrier.handle = nil }
        if carrier.handle != nil { fail("the other thread did not release") }
    }

    func write(_ slot: Int, serial: UInt64) {
        guard live.held[slot] else { return }
        handles[slot]!.withValue { $0 = Payload(serial) }
        live.serials[slot] = serial
    }

    func verify() {
        for index in 0..<live.count {
            let slot = live.list[index]
            let value = handles[slot]!.value  // Safe: slot < slotCount, and it holds a handle.
            if value.serial != live.serials[slot] || !value.intact { fail("slot \(slot) holds \(value.serial)") }
        }
        if magazines { model.verifyWithMagazines(pool.statistics) } else { model.verify(pool.statistics) }
        let lock = pool.lockStatistics
        if lock.contended > lock.acquisitions { fail("contended \(lock.contended) > acquisitions \(lock.acquisitions)") }
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        verify()
        pool = SharedDriver.idlePool
    }
}
