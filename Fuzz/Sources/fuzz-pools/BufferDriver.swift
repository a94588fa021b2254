// Packet buffers: a worker's local pool, then the shared overflow pool; releases on this
// thread or the other one (which returns local buffers as pending returns), contents checked.
import FastAlloc
import FuzzSupport
import PacketBuffers

final class BufferDriver: Driver {
    /// The one instance, started with each input's new pools (see UnsynchronizedDriver).
    nonisolated(unsafe) static let shared = BufferDriver()
    /// Held between inputs, so that the input's pools are destroyed when the input ends.
    nonisolated(unsafe) private static let idleWorker = try! PacketBufferPools(config: PacketBufferConfig(
        bufferSize: 64, localBuffers: 1, overflowInitial: 1, overflowMax: 1)).makeWorkerPool()

    private(set) var worker = BufferDriver.idleWorker
    var pools: PacketBufferPools { worker.pools }
    var config = BufferDriver.idleWorker.pools.config
    /// How many more releases "on another thread" of this input really run on the other thread
    /// (see crosses in main.swift); the rest are plain releases here.
    var crossings = 0
    /// The overflow pool's model (no hooks: its hook counters stay at zero).
    var overflow = PoolModel(capacity: 1, maximum: 1, growth: .none)
    var localOut = 0      // local buffers held here
    var pending = 0       // local buffers released on another thread, not drained yet
    var overflowDraws: UInt64 = 0
    var failedDraws: UInt64 = 0
    let fromOverflow = UnsafeMutablePointer<Bool>.allocate(capacity: slotCount)
    var live = Live()
    // As above: `slotCount` initialised optionals, moved out and back in place.
    let buffers = UnsafeMutablePointer<PacketBuffer?>.allocate(capacity: slotCount)

    private init() {
        fromOverflow.initialize(repeating: false, count: slotCount)
        for slot in 0..<slotCount { (buffers + slot).initialize(to: nil) }
    }

    func start(config: PacketBufferConfig, crossings: Int) throws -> BufferDriver {
        self.config = config
        self.crossings = crossings
        worker = try PacketBufferPools(config: config).makeWorkerPool()
        overflow = PoolModel(capacity: config.overflowInitial, maximum: config.overflowMax, growth: config.overflowGrowth)
        localOut = 0
        pending = 0
        overflowDraws = 0
        failedDraws = 0
        live.reset()
        return self
    }

    /// Whether this release really crosses to the other thread (one of the input's crossings).
    private func crossing() -> Bool {
        guard crossings > 0 else { return false }
        crossings -= 1
        return true
    }

    /// The length a buffer holding `serial` gets: its capacity less 0 to 3 words.
    private func length(for serial: UInt64) -> Int { config.bufferSize - 8 * Int((serial >> 8) % 4) }

    private func fill(_ buffer: inout PacketBuffer, serial: UInt64) {
        let length = length(for: serial)
        buffer.withUnsafeMutableBytes { bytes in
            // Safe: length <= capacity (the buffer's bytes), and length >= 8.
            bytes.storeBytes(of: serial, toByteOffset: 0, as: UInt64.self)
            bytes.storeBytes(of: ~serial, toByteOffset: length - 8, as: UInt64.self)
        }
        buffer.length = length
    }

    private func matches(_ buffer: borrowing PacketBuffer, serial: UInt64) -> Bool {
        buffer.length == length(for: serial) && buffer.withUnsafeBytes { bytes in
            // Safe: the length matched, so the buffer's bytes hold at least 8 and end at it.
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
            if expected { fail("take() gave nil; model: local \(local), overflow \(overflow.inUse)/\(overflow.capacity)") }
            return
        }
        if !expected { fail("take() gave a buffer; the model expected nil") }
        if buffer.capacity != config.bufferSize { fail("buffer capacity \(buffer.capacity)") }
        if buffer.length != 0 { fail("a new buffer has length \(buffer.length)") }
        if local { localOut += 1 }
        fromOverflow[slot] = !local
        fill(&buffer, serial: serial)
        live.added(slot, address: buffer.address, serial: serial, alignment: 16)
        buffers[slot] = consume buffer  // Safe: slot < slotCount, emptied above.
    }

    func acquireBatch(first: Int, count: Int, serial: UInt64) {
        for index in 0..<count { acquire(batchSlot(first: first, index: index), serial: serial &+ UInt64(index)) }
    }

    private func take(_ slot: Int) -> PacketBuffer? {
        // Safe: slot < slotCount; moved out and re-initialised at once.
        let buffer = (buffers + slot).move()
        (buffers + slot).initialize(to: nil)
        if let buffer {
            if !matches(buffer, serial: live.serials[slot]) { fail("buffer contents changed") }
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
        guard live.held[slot], crossing() else { return release(slot) }
        guard let buffer = take(slot) else { return }
        let carrier = Carrier<PacketBuffer>(buffer)
        onOtherThread { carrier.handle = nil }
        if fromOverflow[slot] { overflow.put() } else { localOut -= 1; pending += 1 }
    }

    func write(_ slot: Int, serial: UInt64) {
        guard live.held[slot] else { return }
        fill(&buffers[slot]!, serial: serial)
        live.serials[slot] = serial
    }

    func verify() {
        for index in 0..<live.count {
            let slot = live.list[index]
            let serial = live.serials[slot]
            // Read through the recorded address (checked to be the buffer's own) rather than
            // withUnsafeBytes: a closure call per buffer per operation cost more than the check.
            if buffers[slot]?.address != live.addresses[slot] { fail("slot \(slot) moved") }
            let length = buffers[slot]!.length  // Safe: slot < slotCount, and it holds a buffer.
            if length != self.length(for: serial) { fail("slot \(slot) length \(length), expected \(self.length(for: serial))") }
            // Safe: the address is the live buffer's first byte, and length (>= 8) <= its capacity.
            let bytes = UnsafeRawPointer(bitPattern: live.addresses[slot])!
            if bytes.load(as: UInt64.self) != serial || bytes.load(fromByteOffset: length - 8, as: UInt64.self) != ~serial {
                fail("slot \(slot) contents changed")
            }
        }
        let stats = pools.statistics()
        let mine = stats.workers[0]
        if mine.capacity != config.localBuffers { fail("local capacity \(mine.capacity)") }
        if mine.inUse != localOut { fail("local in use \(mine.inUse), model \(localOut)") }
        if mine.pendingReturns != pending { fail("pending returns \(mine.pendingReturns), model \(pending)") }
        if mine.overflowDraws != overflowDraws { fail("overflow draws \(mine.overflowDraws), model \(overflowDraws)") }
        if mine.failedDraws != failedDraws { fail("failed draws \(mine.failedDraws), model \(failedDraws)") }
        if stats.overflow.capacity != overflow.capacity { fail("overflow capacity \(stats.overflow.capacity), model \(overflow.capacity)") }
        if stats.overflow.inUse != overflow.inUse { fail("overflow in use \(stats.overflow.inUse), model \(overflow.inUse)") }
        if stats.overflow.highWater != overflow.highWater {
            fail("overflow high water \(stats.overflow.highWater), model \(overflow.highWater)")
        }
        if stats.overflow.growthEvents != overflow.growthEvents {
            fail("overflow growth \(stats.overflow.growthEvents), model \(overflow.growthEvents)")
        }
        if stats.overflow.draws != overflowDraws { fail("overflow pool draws \(stats.overflow.draws), model \(overflowDraws)") }
        if stats.totalInUse != localOut + overflow.inUse { fail("total in use \(stats.totalInUse)") }
    }

    func finish() {
        for slot in 0..<slotCount { release(slot) }
        worker.drainReturns()
        pending = 0
        verify()
        if pools.statistics().totalInUse != 0 { fail("buffers in use after releasing everything") }
        worker = BufferDriver.idleWorker
    }
}
