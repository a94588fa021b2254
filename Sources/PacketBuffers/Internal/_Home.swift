import CPacketBuffersShims
import FastAlloc
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The layout of a buffer's slot: a 64-byte header, then the bytes (64-byte aligned).
///
///     offset 0   link: the free list's next slot
///     offset 8   home: the `_Home` the buffer belongs to
///     offset 16  length: bytes in use
///     offset 24  capacity: bytes in the buffer
///     offset 32  state (debug builds): 0 free, 1 held by a handle, 2 lent to C
///     offset 40  magic (debug builds): marks a slot of a packet-buffer pool
///     offset 48  route: the home's `_Route` (what a release on any thread reads to decide)
///     offset 64  the bytes
///
/// Every field is read and written through these offsets on memory the current owner of the
/// buffer holds alone; `home` and `capacity` are set on every take.
@usableFromInline
package enum _Header {
    @usableFromInline package static let size = 64
    @usableFromInline package static let homeOffset = 8
    @usableFromInline package static let lengthOffset = 16
    @usableFromInline package static let capacityOffset = 24
    @usableFromInline package static let stateOffset = 32
    @usableFromInline package static let magicOffset = 40
    @usableFromInline package static let routeOffset = 48
    @usableFromInline package static let magic: UInt64 = 0xFA57_A110_C0DE_B0FF

    @usableFromInline package static let stateFree: UInt8 = 0
    @usableFromInline package static let stateHeld: UInt8 = 1
    @usableFromInline package static let stateLent: UInt8 = 2
}

/// What a release reads to send a buffer home, from any thread: whether the home is the
/// overflow pool, its owner thread, and its return ring. On a cache line of its own that only
/// `retire` ever writes, so releases on other threads read it from their own caches (in
/// `_Home` it shared a line with the counters the owner writes on every take).
///
/// The return ring (local homes): a bounded multi-producer, single-consumer queue of slot
/// addresses that threads other than the owner push released buffers onto and the owner
/// drains. A push is one fetch-and-add on `tail` (its own cache line) and one store into the
/// ring; the owner reads the addresses in order, contiguous, so a drain is not a chain of
/// dependent cache misses through the buffers' headers as the linked stack it replaces was.
///
/// It never overflows: its capacity is at least the home's buffer count, and a buffer is in it
/// at most once. Why a cell is empty when its next producer stores: if cell `i % capacity` still
/// held index `i - capacity`, indices `i - capacity ... i` (capacity + 1 of them; the owner
/// drains in order) would all be undrained, so two of them would be the same buffer, released
/// twice without being drained in between, which cannot be. And the owner's clearing of a cell
/// happens before the next store into it: it precedes, on the owner thread, the drain of that
/// buffer's earlier index, which precedes its take and next release, whose fetch-and-add
/// precedes (the tail's read-modify-write chain, acquiring and releasing) the producer's own.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: made by `make` in one
/// allocation (this record, then `tail` on the next cache line) plus the ring's, both freed by
/// `free` from `_Home.destroy()`; `ring` holds `mask + 1` initialised atomics (local homes;
/// nil for the overflow home).
@safe @usableFromInline
package struct _Route: ~Copyable {
    @usableFromInline package let isOverflow: Bool
    /// Local homes: the owner thread's identity (the address `fastalloc_current_thread()` gives
    /// on it), or `_Home.retired` once the owner retired the home (`retire(_:)`). A thread that
    /// starts after the owner exited may get the same address; retiring first makes sure no
    /// thread ever matches again, so every later release takes the remote path.
    /// An atomic only so that the retiring store and other threads' loads are not a data race:
    /// a relaxed load is a plain load.
    @usableFromInline package let owner: Atomic<UInt>
    @usableFromInline package let ring: UnsafeMutablePointer<Atomic<UInt>>?
    @usableFromInline package let mask: Int
    /// Pushes so far (the next push's index), on the next cache line: only pushers write it.
    @usableFromInline package let tail: UnsafeMutablePointer<Atomic<UInt>>

    /// A new route in its own 128-byte, 64-aligned allocation, with a ring for `buffers`.
    static func make(isOverflow: Bool, owner: UInt, buffers: Int) -> UnsafeMutablePointer<_Route> {
        let base = UnsafeMutableRawPointer.allocate(byteCount: 128, alignment: 64)
        // Safe: the allocation holds the record at 0 (it fits in 64 bytes) and the tail at 64;
        // the ring's holds `capacity` cells, each initialised here.
        let tail = unsafe (base + 64).initializeMemory(as: Atomic<UInt>.self, to: Atomic(0))
        var ring: UnsafeMutablePointer<Atomic<UInt>>? = nil
        var capacity = 1
        if !isOverflow {
            while capacity < buffers { capacity <<= 1 }
            let cells = UnsafeMutableRawPointer.allocate(byteCount: capacity * 8, alignment: 64)
            let typed = unsafe cells.bindMemory(to: Atomic<UInt>.self, capacity: capacity)
            for index in 0..<capacity { unsafe (typed + index).initialize(to: Atomic(0)) }
            unsafe ring = typed
        }
        let route = unsafe base.bindMemory(to: _Route.self, capacity: 1)
        unsafe route.initialize(to: _Route(isOverflow: isOverflow, owner: Atomic(owner), ring: ring, mask: capacity - 1, tail: tail))
        return unsafe route
    }

    /// Frees the route and its ring. `@unsafe`: every header naming it dangles afterwards.
    @unsafe
    static func free(_ route: UnsafeMutablePointer<_Route>) {
        // Safe (on the caller's promise): allocated by `make`, freed once.
        if let ring = unsafe route.pointee.ring {
            unsafe ring.deinitialize(count: route.pointee.mask + 1)
            unsafe UnsafeMutableRawPointer(ring).deallocate()
        }
        unsafe route.pointee.tail.deinitialize(count: 1)
        unsafe route.deinitialize(count: 1)
        unsafe UnsafeMutableRawPointer(route).deallocate()
    }
}

/// Where a buffer goes home to: a worker's local pool or the shared overflow pool.
///
/// Immutable after creation apart from its atomics, so any thread may read it: the mutable slot
/// bookkeeping lives in its own allocation (`slots`), touched only by the owner thread (local)
/// or under `lock` (overflow). Statistics are single-writer atomics, published with relaxed
/// stores by whoever may change them and read by anyone without a lock.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: a home lives at the address
/// `PacketBufferPools` allocated for it until the pools' deinit destroys it, with no buffer of
/// it out; `slots` is touched by the owner thread only (local) or under `lock` (overflow); a
/// buffer's slot, header included, belongs to whoever holds the buffer (handle, C, or the return
/// ring). The static functions take a home's address, so their callers mark them; `destroy()`
/// is `@unsafe`.
@safe @usableFromInline
package struct _Home: ~Copyable {
    @usableFromInline package let slots: UnsafeMutablePointer<_SlotCore>
    @usableFromInline package let isOverflow: Bool
    /// What releases on any thread read: the owner, the return ring (see `_Route`).
    @usableFromInline package let route: UnsafeMutablePointer<_Route>
    /// Overflow home: the lock around `slots`.
    @usableFromInline package let lock: _ContentionLock?
    package let worker: Int
    @usableFromInline package let bufferSize: Int

    // Published by the single writer (owner thread or lock holder).
    @usableFromInline package let inUse = Atomic<Int>(0)
    @usableFromInline package let highWater = Atomic<Int>(0)
    @usableFromInline package let capacity = Atomic<Int>(0)
    /// Local: takes served from the local pool. Overflow: draws served.
    @usableFromInline package let takes = Atomic<UInt64>(0)  // published from slots.acquisitions
    /// Local: takes served by the overflow pool instead.
    @usableFromInline package let overflowDraws = Atomic<UInt64>(0)
    /// Takes that found no buffer anywhere (local homes) or no buffer at the maximum (overflow).
    @usableFromInline package let failedDraws = Atomic<UInt64>(0)

    // Cross-thread returns (local homes): the owner's side of the return ring.
    /// Buffers the owner took back from the return ring: the index of the next cell it reads.
    @usableFromInline package let drainedReturns = Atomic<UInt>(0)

    // Overflow growth: a bounded list of the latest events, behind its own (cold) lock.
    package let growthCount = Atomic<Int>(0)
    package let eventsLock: _ContentionLock?
    package let recentEvents: UnsafeMutablePointer<[GrowthEvent]>?
    package let recentLimit: Int

    package init(local worker: Int, config: PacketBufferConfig) {
        // Safe: new slots, owned by this home; the thread's address is kept as an identity only.
        unsafe slots = _Home.makeSlots(config, capacity: config.localBuffers, growth: .none,
                                maximum: config.localBuffers, name: "worker-\(worker)")
        isOverflow = false
        unsafe route = _Route.make(isOverflow: false, owner: UInt(bitPattern: fastalloc_current_thread()), buffers: config.localBuffers)
        lock = nil
        self.worker = worker
        bufferSize = config.bufferSize
        eventsLock = nil
        unsafe recentEvents = nil
        recentLimit = 0
        capacity.store(config.localBuffers, ordering: .relaxed)
        #if DEBUG
        unsafe slots.pointee.ownerThread = pthread_self()
        #endif
    }

    package init(overflow config: PacketBufferConfig) {
        // Safe: new slots and a new events array, owned by this home; the address is an identity.
        unsafe slots = _Home.makeSlots(config, capacity: config.overflowInitial, growth: config.overflowGrowth,
                                maximum: config.overflowMax, name: "overflow")
        isOverflow = true
        unsafe route = _Route.make(isOverflow: true, owner: _Home.retired, buffers: 0)  // overflow homes are locked
        lock = _ContentionLock()
        worker = -1
        bufferSize = config.bufferSize
        eventsLock = _ContentionLock()
        unsafe recentEvents = .allocate(capacity: 1)
        unsafe recentEvents!.initialize(to: [])
        recentLimit = config.recentGrowthEventLimit
        capacity.store(config.overflowInitial, ordering: .relaxed)
    }

    private static func makeSlots(_ config: PacketBufferConfig, capacity: Int, growth: GrowthStrategy,
                                  maximum: Int, name: String) -> UnsafeMutablePointer<_SlotCore> {
        let slots = UnsafeMutablePointer<_SlotCore>.allocate(capacity: 1)
        // Safe: a new allocation for one value, initialised once here.
        // The link word sits at offset 0, inside the header (linkAfterValue: false).
        unsafe slots.initialize(to: _SlotCore(
            valueSize: _Header.size + config.bufferSize, alignment: 64, linkAfterValue: false,
            capacity: capacity, maxCapacity: maximum, growth: growth, order: .lifo, name: name))
        return unsafe slots
    }

    /// Frees the slots. No buffer may be out.
    ///
    /// `@unsafe`: every buffer of this home, and the home's address in their headers, dangles
    /// afterwards. Callers: once, with no buffer out, as the home's last use.
    @unsafe
    package func destroy() {
        // Safe: each allocation was made by this home and is freed once, here.
        unsafe slots.pointee.freeStorage()
        unsafe slots.deinitialize(count: 1)
        unsafe slots.deallocate()
        unsafe lock?.destroy()
        unsafe eventsLock?.destroy()
        unsafe _Route.free(route)
        if let recentEvents = unsafe recentEvents {
            unsafe recentEvents.deinitialize(count: 1)
            unsafe recentEvents.deallocate()
        }
    }

    /// Publishes `inUse` and `highWater` after the owner (or lock holder) changed them.
    /// After a take, publishes in-use, the high-water mark when this take raised it, and the
    /// take count (the slot core's own acquisition counter: no second counter to maintain).
    @inlinable @inline(__always)
    package static func publish(_ home: UnsafeMutablePointer<_Home>) {
        // Safe: the home is live; its caller is the one writer of `slots` (owner or lock holder).
        let slots = unsafe home.pointee.slots
        let inUse = unsafe slots.pointee.inUse
        unsafe home.pointee.inUse.store(inUse, ordering: .releasing)
        if unsafe inUse == slots.pointee.highWater {
            unsafe home.pointee.highWater.store(inUse, ordering: .relaxed)
        }
        unsafe home.pointee.takes.store(slots.pointee.acquisitions, ordering: .relaxed)
    }

    /// Readies a taken slot's header: a fresh slot gets its home and capacity (they never change
    /// after), every slot an empty length; debug builds also mark it held.
    @inlinable @inline(__always)
    package static func prepare(_ slot: UnsafeMutableRawPointer, fresh: Bool, home: UnsafeMutablePointer<_Home>) -> UnsafeMutableRawPointer {
        // Safe: `slot` was just taken from `home`'s slots, so its 64-byte header is ours to write.
        if fresh {
            unsafe slot.storeBytes(of: home, toByteOffset: _Header.homeOffset, as: UnsafeMutablePointer<_Home>.self)
            unsafe slot.storeBytes(of: home.pointee.route, toByteOffset: _Header.routeOffset, as: UnsafeMutablePointer<_Route>.self)
            unsafe slot.storeBytes(of: home.pointee.bufferSize, toByteOffset: _Header.capacityOffset, as: Int.self)
        }
        unsafe slot.storeBytes(of: 0, toByteOffset: _Header.lengthOffset, as: Int.self)
        #if DEBUG
        unsafe slot.storeBytes(of: _Header.stateHeld, toByteOffset: _Header.stateOffset, as: UInt8.self)
        unsafe slot.storeBytes(of: _Header.magic, toByteOffset: _Header.magicOffset, as: UInt64.self)
        #endif
        return unsafe slot + _Header.size
    }

    // MARK: Local homes (owner thread)

    /// Takes a buffer from a local home: the free list, then what other threads returned.
    @inlinable @inline(__always)
    package static func takeLocal(_ home: UnsafeMutablePointer<_Home>) -> UnsafeMutableRawPointer? {
        // Safe: the owner thread calls this on its live home; the slot taken is the caller's.
        if let taken = unsafe home.pointee.slots.pointee.take() {
            unsafe publish(home)
            return unsafe prepare(taken.slot, fresh: taken.fresh, home: home)
        }
        guard unsafe drainReturns(home) > 0, let taken = unsafe home.pointee.slots.pointee.take() else { return nil }
        unsafe publish(home)
        return unsafe prepare(taken.slot, fresh: taken.fresh, home: home)
    }

    /// Gives a buffer back to its local home, on the owner thread.
    @inlinable @inline(__always)
    package static func putLocal(_ slot: UnsafeMutableRawPointer, into home: UnsafeMutablePointer<_Home>) {
        // Safe: on the owner thread, the holder of a buffer of this live home gives its slot back.
        unsafe home.pointee.slots.pointee.put(slot)
        unsafe home.pointee.inUse.store(home.pointee.slots.pointee.inUse, ordering: .relaxed)
    }

    /// The `owner` of a retired local home: no thread's identity (a thread-local byte's address
    /// is never null).
    @usableFromInline package static let retired: UInt = 0

    /// The calling thread's identity as a local home records its owner (for tests that look for
    /// a new thread that got a retired owner's identity).
    package static func currentThreadIdentity() -> UInt {
        // Safe: the address only, never dereferenced.
        unsafe UInt(bitPattern: fastalloc_current_thread())
    }

    /// Whether the calling thread owns the home of `route` (a local home that is not retired):
    /// one plain load and a compare with the thread pointer's offset, on every release.
    @inlinable @inline(__always)
    package static func isOwnedByCurrentThread(_ route: UnsafeMutablePointer<_Route>) -> Bool {
        // Relaxed is enough: only the owner itself ever stores (when it retires), and a thread
        // that could match the owner's address after that starts after the owner exited, which
        // orders the store before it (thread exit, stack reuse and pthread_create synchronise).
        // Safe: the route is live while a buffer of its home is out; the thread's address is compared only.
        unsafe route.pointee.owner.load(ordering: .relaxed) == UInt(bitPattern: fastalloc_current_thread())
    }

    /// Retires a local home, on its owner thread, as that thread's last act with the pool: takes
    /// back what other threads returned, then gives up the owner's identity. From then on no
    /// thread is the owner, so a buffer of this home released anywhere (the same thread included)
    /// goes onto the return ring, which nobody drains any more: still counted as back (statistics
    /// and the pools' deinit subtract pending returns), its slot never used again. Debug builds
    /// trap on such a release instead (`pushRemote`): a buffer outlived its worker. Calling it
    /// again does nothing.
    package static func retire(_ home: UnsafeMutablePointer<_Home>) {
        // Safe: the home is live while its worker pool exists; addresses are compared only.
        let owner = unsafe home.pointee.route.pointee.owner.load(ordering: .relaxed)
        if owner == retired { return }
        let onOwner = unsafe owner == UInt(bitPattern: fastalloc_current_thread())
        precondition(onOwner, unsafe "WorkerBufferPool.retire(): worker \(home.pointee.worker)'s pool belongs to another thread: retire it on the thread that made it")
        _ = unsafe drainReturns(home)
        unsafe home.pointee.route.pointee.owner.store(retired, ordering: .releasing)
    }

    /// Pushes a buffer onto its local home's return ring, from any thread but the owner's (or
    /// from any thread once the home is retired): one fetch-and-add and one store (`_Route`).
    @usableFromInline
    package static func pushRemote(_ slot: UnsafeMutableRawPointer, route: UnsafeMutablePointer<_Route>) {
        // Safe: the route is live while a buffer of its home is out; the cell at the index the
        // fetch-and-add gave is empty and ours to fill (see `_Route`); a local home has a ring.
        #if DEBUG
        if unsafe route.pointee.owner.load(ordering: .relaxed) == retired {
            let home = unsafe slot.load(fromByteOffset: _Header.homeOffset, as: UnsafeMutablePointer<_Home>.self)
            fatalError(unsafe "PacketBuffer released after worker \(home.pointee.worker)'s pool was retired: the buffer outlived its worker thread (release every buffer before WorkerBufferPool.retire())")
        }
        #endif
        unsafe _ReturnRing.push(slot, ring: route.pointee.ring.unsafelyUnwrapped, mask: route.pointee.mask,
                                tail: route.pointee.tail.pointee, steps: _HardwareSteps())
    }

    /// Buffers pushed onto the return ring so far, from any thread.
    package static func remoteReturns(_ home: UnsafeMutablePointer<_Home>) -> UInt64 {
        // Safe: the home and its route are live; an atomic, so any thread may load it.
        UInt64(unsafe home.pointee.route.pointee.tail.pointee.load(ordering: .acquiring))
    }

    /// Buffers pushed onto the return ring and not drained yet, from any thread (never negative:
    /// see `_ReturnRing.counts`).
    package static func pendingReturns(_ home: UnsafeMutablePointer<_Home>) -> Int {
        // Safe: the home and its route are live; atomics, so any thread may load them.
        let (pushed, drained) = unsafe _ReturnRing.counts(
            tail: home.pointee.route.pointee.tail.pointee, drained: home.pointee.drainedReturns, steps: _HardwareSteps())
        return pushed >= drained ? Int(pushed - drained) : 0
    }

    /// Returns in the ring whose push is complete (their cell filled), for the pools' deinit:
    /// nobody drains then, so the cells from drained to tail do not move. Counts the cells, not
    /// the tail: a push between its fetch-and-add and its store is not complete.
    package static func completedReturns(_ home: UnsafeMutablePointer<_Home>) -> Int {
        // Safe: the home and its route are live; `ring` holds `mask + 1` cells, and at most that
        // many pushes are outstanding (see `_Route`).
        guard let ring = unsafe home.pointee.route.pointee.ring else { return 0 }
        let mask = unsafe home.pointee.route.pointee.mask
        let drained = unsafe home.pointee.drainedReturns.load(ordering: .acquiring)
        let tail = unsafe home.pointee.route.pointee.tail.pointee.load(ordering: .acquiring)
        var complete = 0
        var index = drained
        while index != tail && complete <= mask {
            if unsafe (ring + (Int(truncatingIfNeeded: index) & mask)).pointee.load(ordering: .acquiring) != 0 { complete += 1 }
            index &+= 1
        }
        return complete
    }

    /// Takes back everything other threads returned, in order; owner thread only. Returns how
    /// many (see `_ReturnRing.drain`).
    @usableFromInline
    package static func drainReturns(_ home: UnsafeMutablePointer<_Home>) -> Int {
        // Safe: the owner thread calls this on its live local home; each slot the drain hands
        // over is one of this home's that its pusher gave up, owned by nobody until put back.
        guard let ring = unsafe home.pointee.route.pointee.ring else { return 0 }
        let count = unsafe _ReturnRing.drain(ring: ring, mask: home.pointee.route.pointee.mask,
                                             drained: home.pointee.drainedReturns, steps: _HardwareSteps()) { slot in
            unsafe home.pointee.slots.pointee.put(slot)
        }
        if count > 0 {
            unsafe home.pointee.inUse.store(home.pointee.slots.pointee.inUse, ordering: .relaxed)
        }
        return count
    }

    // MARK: The overflow home (any thread, under its lock)

    @usableFromInline
    package static func takeOverflow(_ home: UnsafeMutablePointer<_Home>) -> UnsafeMutableRawPointer? {
        // Safe: the overflow home is live while its pools are, and always has a lock (so
        // `unsafelyUnwrapped` never meets nil); its slots are touched under that lock only.
        let lock = unsafe home.pointee.lock.unsafelyUnwrapped
        let slots = unsafe home.pointee.slots
        lock.lock()
        let growthBefore = unsafe slots.pointee.growthEvents.count
        let taken = unsafe slots.pointee.take()
        // Capacity first, then in-use: a reader that loads in-use before capacity then never
        // sees more in use than capacity.
        if unsafe slots.pointee.growthEvents.count != growthBefore { unsafe recordGrowth(home) }
        if unsafe taken != nil {
            unsafe publish(home)
        } else {
            unsafe _singleWriterAdd(1, to: home.pointee.failedDraws)
        }
        lock.unlock()
        guard let taken = unsafe taken else { return nil }
        return unsafe prepare(taken.slot, fresh: taken.fresh, home: home)
    }

    @usableFromInline
    package static func putOverflow(_ slot: UnsafeMutableRawPointer, into home: UnsafeMutablePointer<_Home>) {
        // Safe: as in `takeOverflow`; the holder of one of its buffers gives the slot back.
        let lock = unsafe home.pointee.lock.unsafelyUnwrapped
        lock.lock()
        unsafe home.pointee.slots.pointee.put(slot)
        unsafe home.pointee.inUse.store(home.pointee.slots.pointee.inUse, ordering: .relaxed)
        lock.unlock()
    }

    /// Publishes the latest growth (called under the overflow lock).
    private static func recordGrowth(_ home: UnsafeMutablePointer<_Home>) {
        // Safe: the overflow home is live, its slots under its lock (held by the caller), its
        // events array under `eventsLock`.
        let slots = unsafe home.pointee.slots
        unsafe home.pointee.capacity.store(slots.pointee.capacity, ordering: .relaxed)
        unsafe home.pointee.growthCount.store(slots.pointee.growthEvents.count, ordering: .relaxed)
        guard let event = unsafe slots.pointee.growthEvents.last, let events = unsafe home.pointee.recentEvents,
              let eventsLock = unsafe home.pointee.eventsLock else { return }
        eventsLock.lock()
        unsafe events.pointee.append(event)
        if unsafe events.pointee.count > home.pointee.recentLimit {
            unsafe events.pointee.removeFirst(events.pointee.count - home.pointee.recentLimit)
        }
        eventsLock.unlock()
    }

    /// The latest growth events, oldest first (any thread).
    package func recentGrowthEvents() -> [GrowthEvent] {
        // Safe: the events array lives as long as the home and is read under `eventsLock`.
        guard let recentEvents = unsafe recentEvents, let eventsLock else { return [] }
        eventsLock.lock()
        defer { eventsLock.unlock() }
        return unsafe recentEvents.pointee
    }
}
