import CPacketBuffersShims

/// Owns one fixed-size byte buffer of a packet-buffer pool, and the count of bytes in use.
///
/// Noncopyable: exactly one owner returns it, by `deinit` or `release()`. It goes home to the
/// pool it came from wherever it is released: on its worker's thread straight to the local free
/// list; on any other thread onto that pool's return ring, which the worker drains; overflow
/// buffers to the overflow pool, under its lock. It is `Sendable`, so it may travel, but it must
/// not outlive its worker: once the worker's pool is retired (`WorkerBufferPool.retire()`), a
/// release still goes home safely and is counted, but debug builds trap on it.
///
/// For C (libuv's `alloc_cb`, `read_cb`, write completions) a buffer can be lent out as a raw
/// address and taken back by that address in O(1): see `unsafeLend()` and
/// `unsafeReclaim(_:)`.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: `_data` is the start of the
/// `capacity` bytes of one buffer, just after its 64-byte header, owned by this handle alone
/// (it is noncopyable); the header's `home` names the live `_Home` it came from, which outlives
/// the buffer (`PacketBufferPools`). The C lending API has unsafe types, so its callers mark it.
@safe
public struct PacketBuffer: ~Copyable, @unchecked Sendable {
    // @unchecked Sendable: the handle owns its buffer alone, and its way home is safe from any
    // thread (see deinit). The data pointer comes first: ThreadSanitizer reports a `mutating`
    // access to a noncopyable struct at the address its first word holds.
    @usableFromInline let _data: UnsafeMutableRawPointer

    @inlinable
    init(data: UnsafeMutableRawPointer) {
        // Safe: the pools pass the data address of a buffer just taken (see the type).
        unsafe _data = data
    }

    // Safe: the header is the 64 bytes before the data, in the same slot.
    @inlinable
    var _header: UnsafeMutableRawPointer { unsafe _data - _Header.size }

    @inlinable
    deinit {
        // Safe: this handle owns the buffer, header included, until it goes home here.
        #if DEBUG
        unsafe _PacketBufferChecks.release(_header)
        #endif
        unsafe PacketBuffer._goHome(_header)
    }

    /// Sends the slot whose header is at `header` back to its home pool.
    @inlinable @inline(__always)
    static func _goHome(_ header: UnsafeMutableRawPointer) {
        // Safe: the header of a held or lent buffer names the live `_Home` it was taken from
        // and that home's route.
        // The route (a read-mostly line of its own) decides; the home is read only by the
        // paths that need it.
        let route = unsafe header.load(fromByteOffset: _Header.routeOffset, as: UnsafeMutablePointer<_Route>.self)
        if unsafe route.pointee.isOverflow {
            unsafe _Home.putOverflow(header, into: header.load(fromByteOffset: _Header.homeOffset, as: UnsafeMutablePointer<_Home>.self))
        } else if unsafe _Home.isOwnedByCurrentThread(route) {
            unsafe _Home.putLocal(header, into: header.load(fromByteOffset: _Header.homeOffset, as: UnsafeMutablePointer<_Home>.self))
        } else {
            unsafe _Home.pushRemote(header, route: route)
        }
    }

    /// Returns the buffer to its pool now.
    @inlinable
    public consuming func release() {}

    /// Bytes in the buffer (the pool's buffer size).
    @inlinable
    public var capacity: Int {
        // Safe: the header belongs to the buffer this handle owns.
        unsafe _header.load(fromByteOffset: _Header.capacityOffset, as: Int.self)
    }

    /// Bytes in use, from 0 to `capacity`. Setting it out of range traps.
    @inlinable
    public var length: Int {
        // Safe: the header belongs to the buffer this handle owns.
        get { unsafe _header.load(fromByteOffset: _Header.lengthOffset, as: Int.self) }
        set {
            if newValue < 0 || newValue > capacity {
                fatalError("PacketBuffer: length \(newValue) is outside 0...\(capacity)")
            }
            unsafe _header.storeBytes(of: newValue, toByteOffset: _Header.lengthOffset, as: Int.self)
        }
    }

    /// Calls `body` with all `capacity` bytes, to fill; set `length` after. Valid only inside.
    @inlinable
    public mutating func withUnsafeMutableBytes<Result, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Safe: the buffer's `capacity` bytes follow its header and belong to this handle.
        try unsafe body(UnsafeMutableRawBufferPointer(start: _data, count: capacity))
    }

    /// Calls `body` with the `length` bytes in use, read-only. Valid only inside.
    @inlinable
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Safe: length <= capacity (enforced by the setter), all inside the owned buffer.
        try unsafe body(UnsafeRawBufferPointer(start: _data, count: length))
    }

    /// Appends `bytes`; returns how many fit (the rest did not).
    @inlinable
    public mutating func append(contentsOf bytes: UnsafeRawBufferPointer) -> Int {
        let start = length
        let count = min(bytes.count, capacity - start)
        if count > 0, let source = bytes.baseAddress {
            // Safe: start + count <= capacity; source and destination do not overlap (the
            // destination is this handle's buffer, which nobody else can reach).
            unsafe (_data + start).copyMemory(from: source, byteCount: count)
            length = start + count
        }
        return count
    }

    /// The address of the bytes, for identity and alignment checks only.
    // Safe: the address only, no access.
    public var address: UInt { unsafe UInt(bitPattern: _data) }

    // MARK: Lending to C

    /// Gives up the handle and returns the buffer's bytes (its full capacity) for C code to
    /// fill or send, as libuv's `alloc_cb` needs.
    ///
    /// Rules: pass the exact `baseAddress` to `unsafeReclaim(_:)` exactly once, later, on any
    /// thread; touch the bytes only until then; the length travels with the buffer. A lent
    /// buffer that is never reclaimed never goes home (the pool reports it in use). Debug builds
    /// trap on a second reclaim or on an address that is not a lent buffer's.
    public consuming func unsafeLend() -> UnsafeMutableRawBufferPointer {
        // Safe here: the handle owns the buffer and gives it up (`discard`); the rules above
        // are the caller's from then on.
        let data = unsafe _data
        let capacity = self.capacity
        #if DEBUG
        unsafe _PacketBufferChecks.lend(_header)
        #endif
        discard self  // no deinit: the buffer stays out until it is reclaimed
        return unsafe UnsafeMutableRawBufferPointer(start: data, count: capacity)
    }

    /// Takes back a buffer lent by `unsafeLend()`, by its base address, in O(1): the header
    /// sits just before the bytes. See `unsafeLend()` for the rules.
    @inlinable
    public static func unsafeReclaim(_ baseAddress: UnsafeMutableRawPointer) -> PacketBuffer {
        // Safe only under the rules of `unsafeLend()`: `baseAddress` is a lent buffer's, once.
        #if DEBUG
        unsafe _PacketBufferChecks.reclaim(baseAddress - _Header.size)
        #endif
        return unsafe PacketBuffer(data: baseAddress)
    }
}

/// Debug-build checks of the buffer lifecycle, through the state word in each header.
/// Safe: each takes the header of a buffer the caller holds (or, for `reclaim`, claims to).
@usableFromInline
enum _PacketBufferChecks {
    @usableFromInline
    static func release(_ header: UnsafeMutableRawPointer) {
        unsafe expect(header, state: _Header.stateHeld, "released")
        unsafe header.storeBytes(of: _Header.stateFree, toByteOffset: _Header.stateOffset, as: UInt8.self)
    }

    @usableFromInline
    static func lend(_ header: UnsafeMutableRawPointer) {
        unsafe expect(header, state: _Header.stateHeld, "lent")
        unsafe header.storeBytes(of: _Header.stateLent, toByteOffset: _Header.stateOffset, as: UInt8.self)
    }

    @usableFromInline
    static func reclaim(_ header: UnsafeMutableRawPointer) {
        // Safe: a pointer handed out by unsafeLend has a header; for other pointers this read may
        // be out of bounds, which is what debug builds (and AddressSanitizer) are for.
        guard unsafe header.load(fromByteOffset: _Header.magicOffset, as: UInt64.self) == _Header.magic else {
            fatalError(unsafe "PacketBuffer.unsafeReclaim: \(header + _Header.size) is not the base address of a packet buffer")
        }
        unsafe expect(header, state: _Header.stateLent, "reclaimed")
        unsafe header.storeBytes(of: _Header.stateHeld, toByteOffset: _Header.stateOffset, as: UInt8.self)
    }

    private static func expect(_ header: UnsafeMutableRawPointer, state: UInt8, _ verb: String) {
        let actual = unsafe header.load(fromByteOffset: _Header.stateOffset, as: UInt8.self)
        if actual != state {
            let what = actual == _Header.stateFree ? "already back in its pool" : actual == _Header.stateLent ? "lent to C" : "held by a handle"
            fatalError(unsafe "PacketBuffer at \(header + _Header.size) \(verb) while \(what)")
        }
    }
}
