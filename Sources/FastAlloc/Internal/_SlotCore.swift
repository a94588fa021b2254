#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One contiguous block of slots. Chunks are never moved or freed while their pool lives.
///
/// `@safe`: a plain record. Its `base` has an unsafe type, so every use of it is marked.
@safe @usableFromInline
package struct _Chunk {
    @usableFromInline package let base: UnsafeMutableRawPointer
    @usableFromInline package let firstIndex: Int
    @usableFromInline package let count: Int
}

/// The untyped heart of every pool: chunks of equally sized slots, a free list (LIFO) or a free
/// bitmap (lowest first), a bump region of never-used slots, growth, counters and the debug
/// checks. It knows nothing of the values in the slots and nothing of threads: callers
/// serialise access (one owner thread, or a lock).
///
/// Slot states: a slot is *fresh* (never handed out; it lies in the bump region
/// `bumpNext..<bumpEnd` of the newest chunk, or beyond it in no chunk at all), *in use* (a handle
/// owns it), or *free* (on the free list or set in the bitmap). Chunks only ever grow in number,
/// and the bump region is always in the newest chunk: a pool grows only when it has neither a
/// free nor a fresh slot.
///
/// Each slot carries a link word at `linkOffset` (8-byte aligned): while the slot is free it
/// holds the next free slot (an intrusive free list); while it is in use, its owner may use it
/// (a batch chains its slots through it). Typed pools put the link after the value, so a free
/// slot keeps its value for reuse; raw byte pools may put it at offset 0, over the bytes.
///
/// Memory safety: `@safe` because its raw storage is reached only through its own methods, and
/// every `unsafe` in them rests on these invariants: `chunkTable` holds `chunkCount` initialised
/// entries and room for `chunkTableCapacity`; `bitmap` (lowest-first only) holds `bitmapWords`
/// words, enough for `capacity` bits; `bumpNext..<bumpEnd` lies in the newest chunk, a whole
/// number of strides; `spare` and the `freeHead` list hold free slots of this core only. What the
/// type cannot check is left to its callers, who see unsafe types and mark their calls: they
/// serialise access (one thread, or a lock), give `put` only in-use slots of this core, and keep
/// the one instance at the address its pool allocated (a copy would share the chunk table and
/// the bitmap, which growth reallocates: copies are only ever read). `freeStorage()` is `@unsafe`.
@safe @usableFromInline
package struct _SlotCore {
    // MARK: Hot: touched by every acquire and release.
    @usableFromInline package var freeHead: UnsafeMutableRawPointer?
    /// LIFO order: the most recently freed slot, not yet linked into `freeHead`'s list.
    @usableFromInline package var spare: UnsafeMutableRawPointer?
    @usableFromInline package var bumpNext: UnsafeMutableRawPointer
    @usableFromInline package var bumpEnd: UnsafeMutableRawPointer
    @usableFromInline package var inUse: Int = 0
    @usableFromInline package var highWater: Int = 0
    @usableFromInline package var acquisitions: UInt64 = 0
    @usableFromInline package let stride: Int
    @usableFromInline package let linkOffset: Int
    @usableFromInline package let lowestFirst: Bool
    /// Set when the pool object died while handles were still out (release builds): the last
    /// handle to come back frees the storage.
    @usableFromInline package var orphaned = false

    // MARK: Cold: growth, statistics, the bitmap, debug state.
    @usableFromInline package var failedAcquisitions: UInt64 = 0
    @usableFromInline package var capacity: Int
    @usableFromInline package let maxCapacity: Int
    package let growth: GrowthStrategy
    package let chunkAlignment: Int
    @usableFromInline package let name: String
    /// The chunks, oldest first, in a manually managed table: the lookups below run on the
    /// lowest-first hot path and in debug checks, where an Array's reference counting and the
    /// copies of `self` that non-mutating calls make would cost more than the lookup.
    @usableFromInline package var chunkTable: UnsafeMutablePointer<_Chunk>
    @usableFromInline package var chunkCount = 0
    package var chunkTableCapacity = 4
    package var growthEvents: [GrowthEvent] = []
    /// `.lowestFirst` only: bit `i` set means slot `i` is free (and was used before).
    @usableFromInline package var bitmap: UnsafeMutablePointer<UInt64>?
    @usableFromInline package var bitmapWords = 0
    /// No word below this index has a set bit.
    @usableFromInline package var bitmapHint = 0
    #if DEBUG
    /// Debug builds only: which slots are in use, to catch double and foreign releases.
    package var slotInUse: [Bool] = []
    /// Debug builds only: the one thread allowed to use this core, if confined.
    package var ownerThread: pthread_t?
    #endif

    /// - Parameters:
    ///   - valueSize: bytes of the value stored at offset 0 of each slot.
    ///   - alignment: slot alignment, a power of two (validated by `PoolConfig`).
    ///   - linkAfterValue: put the link word after the value (typed pools, which keep a released
    ///     value for reuse) rather than over it (raw byte pools).
    package init(valueSize: Int, alignment: Int, linkAfterValue: Bool, capacity: Int, maxCapacity: Int,
         growth: GrowthStrategy, order: AllocationOrder, name: String) {
        // `unsafe` for naming the pointer type only: no pointer is used.
        let linkSize = unsafe MemoryLayout<UnsafeMutableRawPointer?>.size
        let align = unsafe max(alignment, MemoryLayout<UnsafeMutableRawPointer?>.alignment)
        let linkOffset = linkAfterValue ? _roundUp(max(valueSize, 0), to: linkSize) : 0
        self.linkOffset = linkOffset
        self.stride = _roundUp(max(linkOffset + linkSize, valueSize), to: align)
        self.chunkAlignment = max(align, 16)
        self.lowestFirst = order == .lowestFirst
        self.growth = growth
        if case .none = growth { self.maxCapacity = capacity } else { self.maxCapacity = maxCapacity }
        self.name = name
        self.capacity = 0
        // Safe: a new table and a new chunk of `capacity` slots; the bump region is all of it.
        unsafe self.chunkTable = .allocate(capacity: 4)
        let first = unsafe _SlotCore.allocateChunk(count: capacity, stride: stride, alignment: chunkAlignment, name: name)
        unsafe self.bumpNext = first
        unsafe self.bumpEnd = first + capacity * stride
        unsafe addChunk(base: first, count: capacity)
    }

    // MARK: Acquire and release

    /// Takes a slot: the most recently freed (LIFO) or the lowest free one, else a fresh one, else
    /// grows. `fresh` is true when the slot never held a value. Nil when exhausted at maximum.
    @inlinable @inline(__always)
    package mutating func take() -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        // Safe: `spare` and the free list hold free slots of this core only (type invariant).
        if let slot = unsafe spare {  // the most recently freed slot, kept off the list
            unsafe spare = nil
            unsafe noteAcquired(slot)
            return unsafe (slot, false)
        }
        if let slot = unsafe freeHead {  // always nil in lowest-first order
            // Safe: every slot on the free list lies in a live chunk, and its link word
            // (8-byte aligned, inside the slot) holds the next free slot or nil.
            unsafe freeHead = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            unsafe noteAcquired(slot)
            return unsafe (slot, false)
        }
        return unsafe takeSlow()
    }

    @inlinable @inline(__always)
    package mutating func noteAcquired(_ slot: UnsafeMutableRawPointer) {
        acquisitions &+= 1
        inUse &+= 1
        if inUse > highWater { highWater = inUse }
        #if DEBUG
        // Safe: the slot is only compared with the chunks' bounds.
        unsafe debugNoteAcquired(slot)
        #endif
    }

    /// Gives an in-use slot back. The caller has already run the release hooks.
    @inlinable @inline(__always)
    package mutating func put(_ slot: UnsafeMutableRawPointer) {
        // Safe: the caller gives back an in-use slot of this core (debug builds check it here;
        // release builds trust it), so it may join the free slots.
        #if DEBUG
        unsafe debugCheckRelease(slot)
        #endif
        inUse &-= 1
        if lowestFirst {
            unsafe putLowest(slot)
            return
        }
        // The newest free slot waits in `spare`; the one it displaces goes on the list. Same
        // LIFO order, but a take right after a release (the common ping-pong) touches no link
        // word (measured: a packet-buffer take+release went from 3.2 to 2.5 ns).
        if let previous = unsafe spare {
            // Safe: `previous` is a free slot of this core, so its link word is ours to write.
            unsafe (previous + linkOffset).storeBytes(of: freeHead, as: UnsafeMutableRawPointer?.self)
            unsafe freeHead = previous
        }
        unsafe spare = slot
    }

    /// Takes a free slot that held a value before (LIFO order only), or nil: never a fresh slot,
    /// never growth. Magazines refill with these, so every slot a magazine holds has a value.
    @inlinable @inline(__always)
    package mutating func takeReused() -> UnsafeMutableRawPointer? {
        // Safe: `spare` and the free list hold free slots of this core only (type invariant).
        if let slot = unsafe spare {
            unsafe spare = nil
            unsafe noteAcquired(slot)
            return unsafe slot
        }
        if let slot = unsafe freeHead {
            // Safe: as in `take()`.
            unsafe freeHead = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
            unsafe noteAcquired(slot)
            return unsafe slot
        }
        return nil
    }

    /// The bitmap, the bump region and growth: everything but a LIFO free-list hit.
    @usableFromInline
    package mutating func takeSlow() -> (slot: UnsafeMutableRawPointer, fresh: Bool)? {
        if lowestFirst, let index = takeLowestFreeIndex() {
            // Safe: a set bit's index is below `capacity`, so `pointer(at:)` finds its chunk.
            let slot = unsafe _SlotCore.pointer(at: index, table: chunkTable, count: chunkCount, stride: stride)
            unsafe noteAcquired(slot)
            return unsafe (slot, false)
        }
        if unsafe bumpNext < bumpEnd || grow() {
            let slot = unsafe bumpNext
            // Safe: bumpNext < bumpEnd, both in the newest chunk, so the slot is fresh and inside it.
            unsafe bumpNext += stride
            unsafe noteAcquired(slot)
            return unsafe (slot, true)
        }
        failedAcquisitions &+= 1
        return nil
    }

    /// Slots that can still be handed out, counting growth up to the maximum.
    @usableFromInline
    package var obtainable: Int { maxCapacity - inUse }

    // MARK: Lowest-first bitmap

    @usableFromInline
    package mutating func takeLowestFreeIndex() -> Int? {
        // Safe: `word < bitmapWords`, the bitmap's initialised length.
        guard let bitmap = unsafe bitmap else { return nil }
        var word = bitmapHint
        while word < bitmapWords {
            let bits = unsafe bitmap[word]
            if bits != 0 {
                unsafe bitmap[word] = bits & (bits &- 1)  // clear the lowest set bit
                bitmapHint = word
                return word << 6 | bits.trailingZeroBitCount
            }
            word += 1
        }
        bitmapHint = bitmapWords
        return nil
    }

    @usableFromInline
    package mutating func putLowest(_ slot: UnsafeMutableRawPointer) {
        // Safe: `index(of:)` only compares addresses, and a found index is below `capacity`,
        // so its word is below `bitmapWords`. A foreign pointer traps here, in every build.
        guard let index = unsafe _SlotCore.index(of: slot, table: chunkTable, count: chunkCount, stride: stride),
              let bitmap = unsafe bitmap else {
            fatalError("FastAlloc: pool '\(name)': released a pointer that is not one of its slots")
        }
        let word = index >> 6
        unsafe bitmap[word] |= 1 << UInt64(index & 63)
        if word < bitmapHint { bitmapHint = word }
    }

    // MARK: Slots, indices and chunks

    /// The slot index of `slot`, or nil when it is not the start of one of this core's slots.
    /// Static, like `pointer(at:)`: a non-mutating call from a mutating method would copy `self`.
    @usableFromInline
    package static func index(of slot: UnsafeMutableRawPointer, table: UnsafeMutablePointer<_Chunk>, count: Int, stride: Int) -> Int? {
        for position in 0..<count {
            // Safe: position < count, the number of initialised entries in the table; `slot`
            // is only compared with the chunk's bounds, never dereferenced.
            let chunk = unsafe table[position]
            let offset = unsafe slot - chunk.base
            if offset >= 0 && offset < chunk.count * stride {
                return offset % stride == 0 ? chunk.firstIndex + offset / stride : nil
            }
        }
        return nil
    }

    /// The slot with this index; the index must be below `capacity`.
    @usableFromInline
    package static func pointer(at index: Int, table: UnsafeMutablePointer<_Chunk>, count: Int, stride: Int) -> UnsafeMutableRawPointer {
        var low = 0
        var high = count - 1
        while low < high {  // the last chunk whose firstIndex <= index
            let mid = (low + high + 1) / 2
            // Safe: 0 <= low <= mid <= high < count.
            if unsafe table[mid].firstIndex <= index { low = mid } else { high = mid - 1 }
        }
        let chunk = unsafe table[low]
        // Safe: firstIndex <= index < firstIndex + count, so the slot lies inside this chunk.
        return unsafe chunk.base + (index - chunk.firstIndex) * stride
    }

    /// Adds one growth step if the strategy and the maximum allow it.
    @usableFromInline
    package mutating func grow() -> Bool {
        let before = capacity
        let after = growth.nextCapacity(after: before, maximum: maxCapacity)
        guard after > before else { return false }
        let added = after - before
        // Safe: a new chunk of `added` slots becomes the bump region (the old one was empty).
        let base = unsafe _SlotCore.allocateChunk(count: added, stride: stride, alignment: chunkAlignment, name: name)
        unsafe bumpNext = base
        unsafe bumpEnd = base + added * stride
        unsafe addChunk(base: base, count: added)
        growthEvents.append(GrowthEvent(
            monotonicNanoseconds: _monotonicNanoseconds(), capacityBefore: before, capacityAfter: after))
        return true
    }

    private mutating func addChunk(base: UnsafeMutableRawPointer, count: Int) {
        if chunkCount == chunkTableCapacity {
            let grown = UnsafeMutablePointer<_Chunk>.allocate(capacity: chunkTableCapacity * 2)
            // Safe: the old table holds chunkCount initialised entries; the new one has room for twice that.
            unsafe grown.moveInitialize(from: chunkTable, count: chunkCount)
            unsafe chunkTable.deallocate()
            unsafe chunkTable = grown
            chunkTableCapacity *= 2
        }
        // Safe: chunkCount < chunkTableCapacity.
        unsafe (chunkTable + chunkCount).initialize(to: _Chunk(base: base, firstIndex: capacity, count: count))
        chunkCount += 1
        capacity += count
        if lowestFirst {
            let words = (capacity + 63) / 64
            if words > bitmapWords {
                let grown = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
                // Safe: both buffers hold at least bitmapWords initialised words; the tail is zeroed.
                if let bitmap = unsafe bitmap {
                    unsafe grown.update(from: bitmap, count: bitmapWords)
                    unsafe bitmap.deallocate()
                }
                unsafe (grown + bitmapWords).initialize(repeating: 0, count: words - bitmapWords)
                unsafe bitmap = grown
                bitmapWords = words
            }
        }
        #if DEBUG
        slotInUse.append(contentsOf: repeatElement(false, count: count))
        #endif
    }

    private static func allocateChunk(count: Int, stride: Int, alignment: Int, name: String) -> UnsafeMutableRawPointer {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: stride)
        if overflow {
            fatalError("FastAlloc: pool '\(name)': \(count) slots of \(stride) bytes overflow Int")
        }
        // Safe: `bytes` did not overflow; `alignment` is a power of two (PoolConfig validates it).
        return UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: alignment)
    }

    /// Calls `body` with each free slot that held a value (not the fresh ones).
    package func forEachFreeUsedSlot(_ body: (UnsafeMutableRawPointer) -> Void) {
        if lowestFirst {
            // Safe: words below `bitmapWords`; a set bit's index is below `capacity`.
            guard let bitmap = unsafe bitmap else { return }
            for word in 0..<bitmapWords {
                var bits = unsafe bitmap[word]
                while bits != 0 {
                    unsafe body(_SlotCore.pointer(at: word << 6 | bits.trailingZeroBitCount, table: chunkTable, count: chunkCount, stride: stride))
                    bits &= bits &- 1
                }
            }
        } else {
            if let spare = unsafe spare { unsafe body(spare) }
            var next = unsafe freeHead
            while let slot = unsafe next {
                // Safe: free-list slots lie in live chunks and their link word holds the next one.
                unsafe next = (slot + linkOffset).load(as: UnsafeMutableRawPointer?.self)
                unsafe body(slot)
            }
        }
    }

    /// Frees every chunk and the bitmap. Values must have been deinitialised first.
    ///
    /// `@unsafe`: every slot pointer this core handed out dangles afterwards, as do copies of
    /// it. Callers: only with no slot in use, once, as the core's last use.
    @unsafe
    package mutating func freeStorage() {
        // Safe: the table's `chunkCount` entries are initialised; each chunk and the bitmap were
        // allocated by this core and are freed once.
        for position in 0..<chunkCount { unsafe chunkTable[position].base.deallocate() }
        unsafe chunkTable.deinitialize(count: chunkCount)
        unsafe chunkTable.deallocate()
        chunkCount = 0
        unsafe bitmap?.deallocate()
        unsafe bitmap = nil
    }

    package var statistics: PoolStatistics {
        PoolStatistics(
            name: name, capacity: capacity, maxCapacity: maxCapacity, inUse: inUse, highWater: highWater,
            acquisitions: acquisitions, releases: acquisitions - UInt64(inUse),
            failedAcquisitions: failedAcquisitions, growthEvents: growthEvents.count)
    }

    package var events: [GrowthEvent] { growthEvents }

    // MARK: Debug checks (compiled only in debug builds)

    #if DEBUG
    @usableFromInline
    package mutating func debugNoteAcquired(_ slot: UnsafeMutableRawPointer) {
        debugCheckThread("acquire from")
        // Safe: `index(of:)` only compares the slot with the chunks' bounds.
        guard let index = unsafe _SlotCore.index(of: slot, table: chunkTable, count: chunkCount, stride: stride) else {
            fatalError("FastAlloc: pool '\(name)': internal error, handed out a slot outside its chunks")
        }
        slotInUse[index] = true
    }

    @usableFromInline
    package mutating func debugCheckRelease(_ slot: UnsafeMutableRawPointer) {
        debugCheckThread("release to")
        // Safe: `index(of:)` only compares the slot with the chunks' bounds; the message prints
        // the address.
        guard let index = unsafe _SlotCore.index(of: slot, table: chunkTable, count: chunkCount, stride: stride) else {
            fatalError(unsafe "FastAlloc: pool '\(name)': released \(slot), which is not one of its slots (out of range or misaligned)")
        }
        guard slotInUse[index] else {
            fatalError("FastAlloc: pool '\(name)': double release of slot \(index)")
        }
        slotInUse[index] = false
    }

    package func debugCheckThread(_ verb: String) {
        if let ownerThread, pthread_equal(ownerThread, pthread_self()) == 0 {
            fatalError("FastAlloc: pool '\(name)' belongs to another thread: \(verb) it only on the thread that made it")
        }
    }
    #endif
}

@usableFromInline
package func _roundUp(_ value: Int, to alignment: Int) -> Int {
    (value + alignment - 1) & ~(alignment - 1)
}

/// `CLOCK_MONOTONIC` in nanoseconds.
@usableFromInline
package func _monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    // Safe: `&now` points to a live timespec for the call only.
    unsafe clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}
