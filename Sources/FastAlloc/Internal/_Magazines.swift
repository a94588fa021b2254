#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization
import CFastAllocShims

// Per-thread magazines for `ThreadSafePool` (`PoolConfig.magazineSize > 0`), after jemalloc's
// tcache and haproxy's per-thread pool caches.
//
// Who owns what:
// - A *magazine* (`_Magazine`) holds up to `magazineSize` free slots of one pool for one thread.
//   Its slots, `count` and `seen` are touched by that thread only (the fast paths), except when
//   the thread can no longer use it: at its exit (the key destructor, on the thread itself) and
//   when the pool's core is torn down (nobody can use the pool any more: no pool, no handle).
//   Its counters are atomics with that one writer, so statistics readers load them anywhere.
// - A thread's *rack* (`_Rack`) maps a depot's index to that thread's magazine. The rack hangs
//   off one process-wide pthread key, whose destructor flushes every magazine when the thread
//   exits. In front of it, a thread-local one-entry cache (CFastAllocShims: the depot id used
//   last, its magazine, the rack) makes the common lookup two loads and a compare.
// - A pool's *depot* (`_Depot`) lists its magazines. The lists, the racks' tables and the
//   depots' indices change under one process-wide registry lock (`_MagazineRegistry.lock`);
//   a depot's slots move between the shared core and a magazine under the pool's own lock.
//   Lock order: the registry lock, then a pool's lock.
//
// Exact statistics: the shared core counts a slot in a magazine as taken. Each magazine
// publishes how many it holds and how many acquisitions and releases it served; a reader sums
// them under the registry lock and the pool's lock (which stop refills, flushes, threads
// leaving and teardown), so the figures are exact whenever no acquire or release is running.

/// One thread's cache of free slots of one pool.
///
/// `@safe`: a record; its slot storage is reached only through the owner's fast paths, marked.
@safe @usableFromInline
package struct _Magazine: ~Copyable {
    // Every field that changes is an atomic with one writer at a time, loaded and stored
    // relaxed (plain moves on x86-64): the record itself is never formally modified, so its
    // owner's fast path and a statistics reader or a registration on another thread (which
    // touch different fields) are not conflicting accesses to one struct.
    /// Slots held now. Written by the owner thread (or, with the thread gone or the pool gone,
    /// by whoever empties the magazine under the locks); read by statistics.
    @usableFromInline package let count = Atomic<UInt>(0)
    /// The depot's generation this magazine last agreed with (owner thread); when the depot's
    /// moves on, the magazine flushes everything before it serves again.
    @usableFromInline package let seen: Atomic<UInt>
    @usableFromInline package let capacity: Int
    /// `capacity` slot addresses; the first `count` are held.
    @usableFromInline package let slots: UnsafeMutablePointer<UnsafeMutableRawPointer>
    @usableFromInline package let depot: UnsafeMutablePointer<_Depot>
    /// The owner's rack (to clear its entry when the depot goes first); nil only for a
    /// magazine of the interleaving checker's worlds, which is never unlinked.
    package let rack: UnsafeMutablePointer<_Rack>?

    // Published by the owner thread (single writer), read by statistics.
    @usableFromInline package let hits = Atomic<UInt>(0)
    @usableFromInline package let absorbed = Atomic<UInt>(0)

    // The depot's list (registry lock).
    package let next = unsafe Atomic<UnsafeMutablePointer<_Magazine>?>(nil)
    package let previous = unsafe Atomic<UnsafeMutablePointer<_Magazine>?>(nil)

    package init(depot: UnsafeMutablePointer<_Depot>, rack: UnsafeMutablePointer<_Rack>?, capacity: Int, seen: UInt) {
        // Safe: a new array of `capacity` addresses, none initialised until stored.
        unsafe self.depot = depot
        unsafe self.rack = rack
        self.capacity = capacity
        self.seen = Atomic(seen)
        unsafe slots = .allocate(capacity: capacity)
    }

    /// The word that holds the address of cached slot `position` (below `capacity`).
    @inlinable @inline(__always)
    package func entry(_ position: UInt) -> UnsafeMutableRawPointer {
        // Safe: `position` is below `capacity` (every caller bounds it by `count` or
        // `capacity`), so the word is inside the magazine's own array.
        unsafe UnsafeMutableRawPointer(slots + Int(bitPattern: position))
    }
}

/// A thread's table from depot index to its magazine of that depot.
@safe @usableFromInline
package struct _Rack {
    @usableFromInline package var entries: UnsafeMutablePointer<UnsafeMutablePointer<_Magazine>?>
    @usableFromInline package var capacity: Int
}

/// A `ThreadSafePool`'s side of the magazines: its index in every rack, the generation that
/// asks magazines to flush, and its list of magazines. Never formally modified (see `_Magazine`).
@safe @usableFromInline
package struct _Depot: ~Copyable {
    @usableFromInline package let index: Int
    /// Unique for the life of the process (never reused, unlike `index` and the address), so a
    /// thread's cached lookup of a depot that is gone never matches another one.
    @usableFromInline package let id: UInt64
    @usableFromInline package let magazineSize: Int
    /// Slots moved per refill or flush: half a magazine.
    package let batch: Int
    /// The shared core; nil only in the interleaving checker's worlds, which pass their own
    /// `_MagazineSource` to the algorithms.
    @usableFromInline package let slots: UnsafeMutablePointer<_SlotCore>?
    package let lock: _ContentionLock
    /// Bumped by 2 (under the pool lock) to ask every magazine to flush at its next use; bit 0
    /// set when the pool object died with slots out (release builds): magazines stop serving.
    @usableFromInline package let generation = Atomic<UInt>(0)

    // Changed under the registry lock (atomics for the reason given in `_Magazine`):
    package let first = unsafe Atomic<UnsafeMutablePointer<_Magazine>?>(nil)
    package let magazines = Atomic<Int>(0)
    /// Counters of magazines gone (their threads exited).
    package let retiredHits = Atomic<UInt>(0)
    package let retiredAbsorbed = Atomic<UInt>(0)
    // Changed under the pool lock:
    package let refilled = Atomic<UInt>(0)
    package let flushRequests = Atomic<UInt>(0)

    /// A depot outside the registry, for the interleaving checker's worlds: no index in any
    /// rack, no core (the algorithms take the world's `_MagazineSource`).
    package init(forModelWith lock: _ContentionLock, magazineSize: Int) {
        // Never a registered depot's: no rack has an entry this far (a lookup finds none), and
        // no thread's cache holds this id (0 is the cache's "none").
        index = .max
        id = .max
        self.magazineSize = magazineSize
        batch = max(1, magazineSize / 2)
        slots = nil
        self.lock = lock
    }

    init(index: Int, id: UInt64, magazineSize: Int, batch: Int, slots: UnsafeMutablePointer<_SlotCore>, lock: _ContentionLock) {
        self.index = index
        self.id = id
        self.magazineSize = magazineSize
        self.batch = batch
        unsafe self.slots = slots
        self.lock = lock
    }
}

/// The shared free slots that magazines refill from and flush to, touched under the pool lock
/// only: the pool's `_SlotCore` in production (`_CoreSource`), a model list in the
/// interleaving checker.
@usableFromInline
package protocol _MagazineSource {
    /// A free slot that held a value before (never a fresh one), or nil.
    func takeReused() -> UnsafeMutableRawPointer?
    /// A slot as a pool without magazines takes one (reused, fresh, or by growing); nil when
    /// the pool is exhausted.
    func take() -> (slot: UnsafeMutableRawPointer, fresh: Bool)?
    /// A free slot back onto the shared list.
    func put(_ slot: UnsafeMutableRawPointer)
}

/// A pool's own shared core as the magazines' source.
@safe @usableFromInline
package struct _CoreSource: _MagazineSource {
    @usableFromInline let core: UnsafeMutablePointer<_SlotCore>

    @inlinable @inline(__always)
    init(_ depot: UnsafeMutablePointer<_Depot>) {
        // Safe: a production depot always has its pool's core (nil only in model worlds).
        unsafe core = depot.pointee.slots.unsafelyUnwrapped
    }

    // Safe (all three): called under the pool lock, which serialises the core.
    @inlinable @inline(__always)
    package func takeReused() -> UnsafeMutableRawPointer? { unsafe core.pointee.takeReused() }
    @inlinable @inline(__always)
    package func take() -> (slot: UnsafeMutableRawPointer, fresh: Bool)? { unsafe core.pointee.take() }
    @inlinable @inline(__always)
    package func put(_ slot: UnsafeMutableRawPointer) { unsafe core.pointee.put(slot) }
}

/// The process-wide part: the pthread key with the thread-exit destructor, the registry lock,
/// and the depot indices.
final class _MagazineRegistry: @unchecked Sendable {
    // @unchecked Sendable: `nextIndex` and `freeIndices` are touched under `lock` only.
    static let shared = _MagazineRegistry()

    let lock = _ContentionLock()
    let key: pthread_key_t
    private var nextIndex = 0
    private var nextID: UInt64 = 1
    private var freeIndices: [Int] = []

    private init() {
        var key = pthread_key_t()
        // The destructor runs on an exiting thread that set a rack: it flushes and frees it.
        let created = unsafe pthread_key_create(&key) { rack in
            // Safe: the key's only values are racks made by `rack(creating:)`.
            guard let rack = unsafe rack else { return }
            unsafe _MagazineRegistry.shared.threadExited(rack.assumingMemoryBound(to: _Rack.self))
        }
        precondition(created == 0, "FastAlloc: pthread_key_create failed (\(created)): too many keys in this process")
        self.key = key
    }

    /// A new depot index (registry lock held).
    func takeIndex() -> Int {
        if let index = freeIndices.popLast() { return index }
        nextIndex += 1
        return nextIndex - 1
    }

    /// A new depot id, never given before (registry lock held).
    func takeID() -> UInt64 {
        nextID += 1
        return nextID - 1
    }

    /// Gives a depot's index back (registry lock held).
    func freeIndex(_ index: Int) { freeIndices.append(index) }

    /// The calling thread's rack, made if it has none (registry lock held).
    func rack(creating: Bool) -> UnsafeMutablePointer<_Rack>? {
        // Safe: the cache is this thread's; its rack is one made here, owned by this thread.
        let cache = unsafe fastalloc_magazine_cache_get()!
        if let existing = unsafe cache.pointee.rack {
            return unsafe existing.assumingMemoryBound(to: _Rack.self)
        }
        guard creating else { return nil }
        let rack = UnsafeMutablePointer<_Rack>.allocate(capacity: 1)
        let entries = UnsafeMutablePointer<UnsafeMutablePointer<_Magazine>?>.allocate(capacity: 8)
        unsafe entries.initialize(repeating: nil, count: 8)
        unsafe rack.initialize(to: _Rack(entries: entries, capacity: 8))
        unsafe pthread_setspecific(key, rack)  // for the destructor at thread exit
        unsafe cache.pointee.rack = UnsafeMutableRawPointer(rack)
        return unsafe rack
    }

    /// Thread exit: every magazine of the thread goes back to its pool; the rack is freed.
    func threadExited(_ rack: UnsafeMutablePointer<_Rack>) {
        // Safe: the exiting thread's own cache; a later use of a pool on this thread (another
        // destructor) starts afresh with a new rack.
        let cache = unsafe fastalloc_magazine_cache_get()!
        unsafe cache.pointee.depot = 0
        unsafe cache.pointee.magazine = nil
        unsafe cache.pointee.rack = nil
        lock.lock()
        // Safe: the rack is this exiting thread's; its entries are its live magazines (a depot
        // torn down first cleared its entry under this lock).
        let capacity = unsafe rack.pointee.capacity
        for position in 0..<capacity {
            if let magazine = unsafe rack.pointee.entries[position] {
                unsafe _Depot.retire(magazine)
            }
        }
        unsafe rack.pointee.entries.deinitialize(count: rack.pointee.capacity)
        unsafe rack.pointee.entries.deallocate()
        unsafe rack.deinitialize(count: 1)
        unsafe rack.deallocate()
        lock.unlock()
    }
}

extension _Depot {
    /// A depot for a new pool whose core is `slots` under `lock`.
    static func make(magazineSize: Int, slots: UnsafeMutablePointer<_SlotCore>, lock: _ContentionLock) -> UnsafeMutablePointer<_Depot> {
        let registry = _MagazineRegistry.shared
        registry.lock.lock()
        let index = registry.takeIndex()
        let id = registry.takeID()
        registry.lock.unlock()
        let depot = UnsafeMutablePointer<_Depot>.allocate(capacity: 1)
        // Safe: a new allocation for one value, initialised once here.
        unsafe depot.initialize(to: _Depot(index: index, id: id, magazineSize: magazineSize,
                                           batch: max(1, magazineSize / 2), slots: slots, lock: lock))
        return unsafe depot
    }

    /// The calling thread's magazine of this depot, if it has one: the fast paths' lookup.
    @inlinable @inline(__always)
    static func current(_ depot: UnsafeMutablePointer<_Depot>) -> UnsafeMutablePointer<_Magazine>? {
        // Safe: the cache is this thread's; its magazine is this thread's magazine of the depot
        // with that id, live while the depot is (ids are never reused).
        let cache = unsafe fastalloc_magazine_cache_get().unsafelyUnwrapped
        if unsafe cache.pointee.depot == depot.pointee.id {
            return unsafe cache.pointee.magazine.unsafelyUnwrapped.assumingMemoryBound(to: _Magazine.self)
        }
        return unsafe currentFromRack(depot)
    }

    /// The lookup past the one-entry cache: this thread's rack, by the depot's index. Caches
    /// what it finds.
    @usableFromInline
    static func currentFromRack(_ depot: UnsafeMutablePointer<_Depot>) -> UnsafeMutablePointer<_Magazine>? {
        // Safe: the rack is this thread's; an entry is this thread's magazine of the depot at
        // that index, live while the depot is (teardown clears it under the registry lock, and
        // the owner does not use a depot that is being torn down).
        let cache = unsafe fastalloc_magazine_cache_get()!
        guard let raw = unsafe cache.pointee.rack else { return nil }
        let rack = unsafe raw.assumingMemoryBound(to: _Rack.self)
        let index = unsafe depot.pointee.index
        guard unsafe index < rack.pointee.capacity, let magazine = unsafe rack.pointee.entries[index] else { return nil }
        unsafe cache.pointee.depot = depot.pointee.id
        unsafe cache.pointee.magazine = UnsafeMutableRawPointer(magazine)
        return unsafe magazine
    }

    /// Takes a cached slot without any lock, or nil (empty, none yet, or asked to flush).
    @inlinable @inline(__always)
    static func takeCached(_ depot: UnsafeMutablePointer<_Depot>) -> UnsafeMutableRawPointer? {
        // Safe: the magazine is this thread's (see `current`).
        guard let magazine = unsafe current(depot) else { return nil }
        return unsafe _pop(magazine, of: depot, steps: _HardwareSteps())
    }

    /// Caches a released slot without any lock; false when the slow path must take it.
    @inlinable @inline(__always)
    static func putCached(_ slot: UnsafeMutableRawPointer, _ depot: UnsafeMutablePointer<_Depot>) -> Bool {
        // Safe: as in `takeCached`.
        guard let magazine = unsafe current(depot) else { return false }
        return unsafe _push(slot, magazine, of: depot, steps: _HardwareSteps())
    }

    /// The calling thread's magazine, registered if it has none yet.
    static func ensureMagazine(_ depot: UnsafeMutablePointer<_Depot>) -> UnsafeMutablePointer<_Magazine> {
        if let magazine = unsafe current(depot) { return unsafe magazine }
        let registry = _MagazineRegistry.shared
        registry.lock.lock()
        defer { registry.lock.unlock() }
        // Safe: under the registry lock: the rack's table and the depot's list are ours to change;
        // the table is this thread's own.
        let rack = unsafe registry.rack(creating: true)!
        let index = unsafe depot.pointee.index
        if unsafe index >= rack.pointee.capacity {
            let capacity = unsafe max(index + 1, rack.pointee.capacity * 2)
            let entries = UnsafeMutablePointer<UnsafeMutablePointer<_Magazine>?>.allocate(capacity: capacity)
            unsafe entries.initialize(repeating: nil, count: capacity)
            unsafe entries.update(from: rack.pointee.entries, count: rack.pointee.capacity)
            unsafe rack.pointee.entries.deallocate()
            unsafe rack.pointee.entries = entries
            unsafe rack.pointee.capacity = capacity
        }
        // A cache line of its own: each thread writes its counters on every operation.
        let raw = UnsafeMutableRawPointer.allocate(byteCount: _roundUp(MemoryLayout<_Magazine>.size, to: 64), alignment: 64)
        let magazine = unsafe raw.bindMemory(to: _Magazine.self, capacity: 1)
        unsafe magazine.initialize(to: _Magazine(depot: depot, rack: rack, capacity: depot.pointee.magazineSize,
                                                 seen: depot.pointee.generation.load(ordering: .relaxed) & ~1))
        let first = unsafe depot.pointee.first.load(ordering: .relaxed)
        unsafe magazine.pointee.next.store(first, ordering: .relaxed)
        unsafe first?.pointee.previous.store(magazine, ordering: .relaxed)
        unsafe depot.pointee.first.store(magazine, ordering: .relaxed)
        unsafe depot.pointee.magazines.store(depot.pointee.magazines.load(ordering: .relaxed) + 1, ordering: .relaxed)
        unsafe rack.pointee.entries[index] = magazine
        let cache = unsafe fastalloc_magazine_cache_get()!
        unsafe cache.pointee.depot = depot.pointee.id
        unsafe cache.pointee.magazine = UnsafeMutableRawPointer(magazine)
        return unsafe magazine
    }

    /// The acquire slow path: the magazine is empty, missing, or asked to flush (`_takeSlow`).
    @usableFromInline
    static func takeSlow(_ depot: UnsafeMutablePointer<_Depot>) -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        // Safe: the magazine is this thread's, made if it had none.
        let magazine = unsafe ensureMagazine(depot)
        return unsafe _takeSlow(magazine, of: depot, from: _CoreSource(depot), steps: _HardwareSteps())
    }

    /// Asks every magazine to flush at its thread's next use (pool lock held).
    static func requestFlush(_ depot: UnsafeMutablePointer<_Depot>) {
        unsafe _requestFlush(depot, steps: _HardwareSteps())
    }

    /// The release slow path: the magazine is full, missing, or asked to flush (`_putSlow`).
    /// Returns false when the pool object is gone (release builds, handles outlived it): the
    /// caller then gives the slot to the core itself.
    @usableFromInline
    static func putSlow(_ slot: UnsafeMutableRawPointer, _ depot: UnsafeMutablePointer<_Depot>) -> Bool {
        // Safe: as in `takeSlow`.
        let magazine = unsafe ensureMagazine(depot)
        return unsafe _putSlow(slot, magazine, of: depot, to: _CoreSource(depot), steps: _HardwareSteps())
    }

    /// Gives all but the newest `keeping` slots back to the shared core (pool lock held, on the
    /// owner thread or where nobody else can use the magazine).
    static func flush(_ magazine: UnsafeMutablePointer<_Magazine>, keeping: Int) {
        // Safe: the magazine's depot is live while it is (see the call sites).
        let depot = unsafe magazine.pointee.depot
        unsafe _flush(magazine, keeping: UInt(keeping), to: _CoreSource(depot), steps: _HardwareSteps())
    }

    // MARK: The algorithms, against `_AtomicSteps` (docs/INTERLEAVINGS.md)
    //
    // Production runs them with `_HardwareSteps` and the pool's core; the interleaving checker
    // runs the same source with its model steps and a model free list. The magazine's entries
    // (slot addresses) are plain words: the owner thread's, or, under the pool lock, those of a
    // thread that has seen the owner's last `count` store (releasing on the fast paths, ordered
    // by the lock on the slow ones).

    /// The acquire fast path: pops the newest cached slot, or nil (empty, or the depot asked for
    /// a flush since this magazine last agreed with it). No lock, no shared line written.
    @inlinable @inline(__always)
    package static func _pop<Steps: _AtomicSteps>(
        _ magazine: UnsafeMutablePointer<_Magazine>, of depot: UnsafeMutablePointer<_Depot>, steps: Steps
    ) -> UnsafeMutableRawPointer? {
        // Safe: the caller's thread owns the magazine; its first `count` entries hold slots.
        let count = unsafe steps.load(magazine.pointee.count, ordering: .relaxed)
        guard unsafe count > 0
                && steps.load(magazine.pointee.seen, ordering: .relaxed) == steps.load(depot.pointee.generation, ordering: .relaxed)
        else { return nil }
        let slot = unsafe steps.loadWord(at: magazine.pointee.entry(count &- 1))
        unsafe steps.addSingleWriter(1, to: magazine.pointee.hits)
        // The count last, releasing (a plain store on x86-64): see `_push`.
        unsafe steps.store(count &- 1, to: magazine.pointee.count, ordering: .releasing)
        // A zero entry comes only from a model execution already abandoned (its steps return
        // 0); in production the first `count` entries always hold slot addresses.
        return UnsafeMutableRawPointer(bitPattern: slot)
    }

    /// The release fast path: caches the slot; false when the slow path must take it (full, or
    /// asked to flush).
    @inlinable @inline(__always)
    package static func _push<Steps: _AtomicSteps>(
        _ slot: UnsafeMutableRawPointer, _ magazine: UnsafeMutablePointer<_Magazine>,
        of depot: UnsafeMutablePointer<_Depot>, steps: Steps
    ) -> Bool {
        // Safe: as in `_pop`; entry `count` is below capacity, so it is ours to write.
        let count = unsafe steps.load(magazine.pointee.count, ordering: .relaxed)
        guard unsafe count < UInt(bitPattern: magazine.pointee.capacity)
                && steps.load(magazine.pointee.seen, ordering: .relaxed) == steps.load(depot.pointee.generation, ordering: .relaxed)
        else { return false }
        unsafe steps.storeWord(UInt(bitPattern: slot), at: magazine.pointee.entry(count))
        unsafe steps.addSingleWriter(1, to: magazine.pointee.absorbed)
        // The count is this release's last touch of the magazine, stored releasing: a thread that
        // loads it (acquiring) to decide the pool's last slot is back (`_retire`, `putAll`) and
        // then flushes and frees the magazine sees the entry written and this thread done with
        // it. (A release that races with the pool's death is a handle outliving its pool: debug
        // builds trap on it, release builds keep the storage; this ordering keeps that path from
        // freeing memory under a release still finishing.)
        unsafe steps.store(count &+ 1, to: magazine.pointee.count, ordering: .releasing)
        return true
    }

    /// The acquire slow path, under the pool lock. Asked to flush: everything goes back, and
    /// this call takes one slot from the source without refilling, so that the thread that asked
    /// can have the rest. Empty: refills half a magazine of reused slots (never fresh ones, so
    /// every cached slot holds a value) and hands out the newest. With nothing to refill from,
    /// takes a slot as a pool without magazines does; nil when the pool is exhausted, and then
    /// every magazine is asked to flush.
    package static func _takeSlow<Steps: _AtomicSteps, Source: _MagazineSource>(
        _ magazine: UnsafeMutablePointer<_Magazine>, of depot: UnsafeMutablePointer<_Depot>,
        from source: Source, steps: Steps
    ) -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        // Safe: the caller's thread owns the magazine; the pool lock serialises the source and
        // the depot's generation and counters.
        let lock = unsafe depot.pointee.lock
        lock.lock(steps: steps, contended: { lock.waitContended(steps: steps) })
        let generation = unsafe steps.load(depot.pointee.generation, ordering: .relaxed)
        let asked = unsafe _catchUp(magazine, generation: generation, to: source, steps: steps)
        var count = unsafe steps.load(magazine.pointee.count, ordering: .relaxed)
        if !asked && count == 0 {
            let batch = unsafe UInt(bitPattern: depot.pointee.batch)
            while count < batch, let slot = source.takeReused() {
                unsafe steps.storeWord(UInt(bitPattern: slot), at: magazine.pointee.entry(count))
                count += 1
            }
            unsafe steps.addSingleWriter(count, to: depot.pointee.refilled)
        }
        // (The `let` fails only on a zero entry: an abandoned model execution, see `_pop`.)
        if count > 0, let slot = unsafe UnsafeMutableRawPointer(bitPattern: steps.loadWord(at: magazine.pointee.entry(count - 1))) {
            unsafe steps.store(count - 1, to: magazine.pointee.count, ordering: .relaxed)
            unsafe steps.addSingleWriter(1, to: magazine.pointee.hits)
            lock.unlock(steps: steps)
            return (slot, false)
        }
        let taken = source.take()
        if taken == nil {
            // Other threads may cache free slots: ask them all to give them back.
            unsafe _requestFlush(depot, steps: steps)
        }
        lock.unlock(steps: steps)
        return taken
    }

    /// The release slow path, under the pool lock: catches up with a flush request, flushes
    /// the older half of a full magazine, then caches the slot. False when the pool object is
    /// gone (the generation's bit 0): the slot is not taken.
    package static func _putSlow<Steps: _AtomicSteps, Source: _MagazineSource>(
        _ slot: UnsafeMutableRawPointer, _ magazine: UnsafeMutablePointer<_Magazine>,
        of depot: UnsafeMutablePointer<_Depot>, to source: Source, steps: Steps
    ) -> Bool {
        // Safe: as in `_takeSlow`.
        let lock = unsafe depot.pointee.lock
        lock.lock(steps: steps, contended: { lock.waitContended(steps: steps) })
        let generation = unsafe steps.load(depot.pointee.generation, ordering: .relaxed)
        _ = unsafe _catchUp(magazine, generation: generation, to: source, steps: steps)
        if generation & 1 != 0 {
            lock.unlock(steps: steps)
            return false
        }
        let capacity = unsafe UInt(bitPattern: magazine.pointee.capacity)
        if unsafe steps.load(magazine.pointee.count, ordering: .relaxed) >= capacity {
            unsafe _flush(magazine, keeping: capacity - UInt(bitPattern: depot.pointee.batch), to: source, steps: steps)
        }
        let count = unsafe steps.load(magazine.pointee.count, ordering: .relaxed)
        unsafe steps.storeWord(UInt(bitPattern: slot), at: magazine.pointee.entry(count))
        unsafe steps.store(count + 1, to: magazine.pointee.count, ordering: .relaxed)
        unsafe steps.addSingleWriter(1, to: magazine.pointee.absorbed)
        lock.unlock(steps: steps)
        return true
    }

    /// Agrees with the depot's generation (pool lock held): asked to flush, everything goes
    /// back. Returns whether it was asked.
    package static func _catchUp<Steps: _AtomicSteps, Source: _MagazineSource>(
        _ magazine: UnsafeMutablePointer<_Magazine>, generation: UInt, to source: Source, steps: Steps
    ) -> Bool {
        // Safe: pool lock held; the magazine is the caller's (see `_flush`).
        guard unsafe steps.load(magazine.pointee.seen, ordering: .relaxed) != generation else { return false }
        unsafe _flush(magazine, keeping: 0, to: source, steps: steps)
        unsafe steps.store(generation & ~1, to: magazine.pointee.seen, ordering: .relaxed)
        return true
    }

    /// Asks every magazine to flush at its thread's next use (pool lock held: the generation's
    /// and the counter's one writer).
    package static func _requestFlush<Steps: _AtomicSteps>(_ depot: UnsafeMutablePointer<_Depot>, steps: Steps) {
        // Safe: the depot is live while its pool is.
        unsafe steps.store(steps.load(depot.pointee.generation, ordering: .relaxed) &+ 2, to: depot.pointee.generation, ordering: .relaxed)
        unsafe steps.addSingleWriter(1, to: depot.pointee.flushRequests)
    }

    /// Gives all but the newest `keeping` cached slots to `source`, oldest first, and moves the
    /// newest down (pool lock held; on the owner thread, or where nobody else can use the
    /// magazine: its thread exiting, the pool torn down).
    package static func _flush<Steps: _AtomicSteps, Source: _MagazineSource>(
        _ magazine: UnsafeMutablePointer<_Magazine>, keeping: UInt, to source: Source, steps: Steps
    ) {
        // Safe: the magazine's first `count` entries hold slots; the count is loaded acquiring
        // because it may have been stored by the owner's lock-free `_push` (see there).
        let count = unsafe steps.load(magazine.pointee.count, ordering: .acquiring)
        guard count > keeping else { return }
        let leaving = count - keeping
        for position in 0..<leaving {
            // (Nil only on a zero entry: an abandoned model execution, see `_pop`.)
            if let slot = unsafe UnsafeMutableRawPointer(bitPattern: steps.loadWord(at: magazine.pointee.entry(position))) {
                source.put(slot)
            }
        }
        for position in leaving..<count {
            unsafe steps.storeWord(steps.loadWord(at: magazine.pointee.entry(position)), at: magazine.pointee.entry(position - leaving))
        }
        unsafe steps.store(keeping, to: magazine.pointee.count, ordering: .relaxed)
    }

    /// A magazine's thread exited: its slots go back, its counters to the depot, its record away
    /// (registry lock held).
    static func retire(_ magazine: UnsafeMutablePointer<_Magazine>) {
        // Safe: under the registry lock, so the depot is live (teardown clears entries first);
        // the exiting thread is the magazine's owner.
        let depot = unsafe magazine.pointee.depot
        unsafe depot.pointee.lock.lock()
        unsafe flush(magazine, keeping: 0)
        unsafe _HardwareSteps().addSingleWriter(magazine.pointee.hits.load(ordering: .relaxed), to: depot.pointee.retiredHits)
        unsafe _HardwareSteps().addSingleWriter(magazine.pointee.absorbed.load(ordering: .relaxed), to: depot.pointee.retiredAbsorbed)
        unsafe depot.pointee.lock.unlock()
        unsafe unlink(magazine)
    }

    /// Removes a magazine from its depot's list and its rack, and frees it (registry lock held).
    static func unlink(_ magazine: UnsafeMutablePointer<_Magazine>) {
        // Safe: registry lock held: the list, the rack entry and the record are ours to change.
        let depot = unsafe magazine.pointee.depot
        let next = unsafe magazine.pointee.next.load(ordering: .relaxed)
        let previous = unsafe magazine.pointee.previous.load(ordering: .relaxed)
        if let previous = unsafe previous {
            unsafe previous.pointee.next.store(next, ordering: .relaxed)
        } else {
            unsafe depot.pointee.first.store(next, ordering: .relaxed)
        }
        unsafe next?.pointee.previous.store(previous, ordering: .relaxed)
        unsafe depot.pointee.magazines.store(depot.pointee.magazines.load(ordering: .relaxed) - 1, ordering: .relaxed)
        unsafe magazine.pointee.rack.unsafelyUnwrapped.pointee.entries[depot.pointee.index] = nil  // production magazines have a rack
        unsafe magazine.pointee.slots.deallocate()
        unsafe magazine.deinitialize(count: 1)
        unsafe UnsafeMutableRawPointer(magazine).deallocate()
    }

    /// Calls `body` on every magazine of the depot (registry lock held: the list is stable).
    static func forEach(_ depot: UnsafeMutablePointer<_Depot>, _ body: (UnsafeMutablePointer<_Magazine>) -> Void) {
        // Safe: registry lock held: every magazine on the list is live; `next` is read before
        // `body` runs, so `body` may free the magazine.
        var next = unsafe depot.pointee.first.load(ordering: .relaxed)
        while let magazine = unsafe next {
            unsafe next = magazine.pointee.next.load(ordering: .relaxed)
            unsafe body(magazine)
        }
    }

    /// Slots all magazines hold now (registry lock held).
    static func cached(_ depot: UnsafeMutablePointer<_Depot>) -> Int {
        var total = 0
        // Safe: see `forEach`; `count` is an atomic.
        unsafe forEach(depot) { total += unsafe Int(bitPattern: $0.pointee.count.load(ordering: .acquiring)) }
        return total
    }

    /// Applies the magazines to the shared core's figures (registry lock and pool lock held).
    static func statistics(_ depot: UnsafeMutablePointer<_Depot>, core: PoolStatistics) -> PoolStatistics {
        // Safe: both locks held: the list is stable and refills/flushes are not running.
        var hits = unsafe UInt64(depot.pointee.retiredHits.load(ordering: .relaxed))
        var absorbed = unsafe UInt64(depot.pointee.retiredAbsorbed.load(ordering: .relaxed))
        unsafe forEach(depot) { magazine in
            hits &+= unsafe UInt64(magazine.pointee.hits.load(ordering: .relaxed))
            absorbed &+= unsafe UInt64(magazine.pointee.absorbed.load(ordering: .relaxed))
        }
        let cached = unsafe cached(depot)
        var stats = core
        // While acquires and releases run, a slot can be counted in two magazines (read one, then
        // the slot goes from it to a handle to another thread's magazine, read later): never
        // report less than nothing.
        stats.inUse = max(0, core.inUse - cached)
        stats.acquisitions = unsafe core.acquisitions &- UInt64(depot.pointee.refilled.load(ordering: .relaxed)) &+ hits
        stats.releases = stats.acquisitions &- UInt64(stats.inUse)
        stats.magazineAcquisitions = hits
        stats.magazineReleases = absorbed
        stats.cachedInMagazines = cached
        stats.magazines = unsafe depot.pointee.magazines.load(ordering: .relaxed)
        stats.magazineFlushRequests = unsafe UInt64(depot.pointee.flushRequests.load(ordering: .relaxed))
        return stats
    }

    /// The pool is gone and no slot is out (registry lock held): every magazine is emptied into
    /// the core and freed, the index goes back, and the depot is freed. Nobody can use a
    /// magazine of this depot any more (no pool, no handle), so this thread may.
    @unsafe
    static func tearDown(_ depot: UnsafeMutablePointer<_Depot>) {
        // Safe: see above; each magazine is unlinked (its rack entry cleared) and freed once.
        unsafe depot.pointee.lock.lock()
        unsafe forEach(depot) { unsafe flush($0, keeping: 0) }
        unsafe depot.pointee.lock.unlock()
        unsafe forEach(depot) { unsafe unlink($0) }
        _MagazineRegistry.shared.freeIndex(unsafe depot.pointee.index)
        unsafe depot.deinitialize(count: 1)
        unsafe depot.deallocate()
    }
}

/// A single-writer increment of a published counter: a relaxed load and store (plain moves on
/// x86-64, no read-modify-write). Only one thread at a time may call it on a given counter.
@inlinable @inline(__always)
package func _singleWriterAdd(_ amount: UInt64, to counter: borrowing Atomic<UInt64>) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}
