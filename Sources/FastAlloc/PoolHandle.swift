/// Owns one slot of a `FixedPool`, `GrowingPool` or `ThreadLocalPool` and the value in it.
///
/// A handle cannot be copied, so exactly one owner returns the slot: its `deinit` does, or an
/// explicit `release()`. Reach the value through `value`, `withValue { }` or
/// `withUnsafeMutableBytes { }`; no pointer escapes. A handle is not `Sendable`: it must be
/// released on the thread of its (unsynchronised) pool.
///
/// The pool must outlive its handles: debug builds trap when a pool is destroyed with handles
/// still out; release builds keep the storage until the last of them comes back.
///
/// Memory safety: `@safe`; every `unsafe` in it rests on this: `_unsafePointer` is an in-use
/// slot of the core at `_core`, owned by this handle alone (it is noncopyable and not
/// `Sendable`), holding an initialised Element; the core outlives the handle.
@safe
public struct PoolHandle<Element>: ~Copyable, PoolSlotHandle {
    // The slot pointer first, as in SharedPoolHandle (ThreadSanitizer reports `mutating`
    // accesses at the address the first word holds).
    public let _unsafePointer: UnsafeMutablePointer<Element>
    @usableFromInline let _core: UnsafeMutablePointer<_TypedCore<Element>>

    @inlinable
    init(core: UnsafeMutablePointer<_TypedCore<Element>>, pointer: UnsafeMutablePointer<Element>) {
        // Safe: the pool hands over an in-use slot holding an initialised Element (see the type).
        unsafe _core = core
        unsafe _unsafePointer = pointer
    }

    @inlinable
    deinit {
        // Safe: this handle owns the in-use slot at `_unsafePointer`, which holds an initialised
        // Element, and the core outlives every handle (see `_TypedCore.retire`).
        unsafe _TypedCore.prepareRelease(_unsafePointer, of: _core)
        unsafe _core.pointee.slots.pointee.put(UnsafeMutableRawPointer(_unsafePointer))
        unsafe _TypedCore.destroyIfOrphanedAndEmpty(_core)
    }

    /// Returns the slot to its pool now (the value stays there for reuse).
    @inlinable
    public consuming func release() {}
}

@available(*, unavailable, message: "a PoolHandle must be released on its pool's thread; use ThreadSafePool for handles that cross threads")
extension PoolHandle: Sendable {}

/// What every handle offers: scoped access to the value in the slot it owns. `PoolHandle`
/// and `SharedPoolHandle` conform; the accessors are written once, here.
///
/// Memory safety: the accessors below are safe only because the library's two conformers
/// keep `_unsafePointer` an initialised, in-use slot that the handle owns alone. They trust
/// it: do not conform other types.
public protocol PoolSlotHandle: ~Copyable {
    associatedtype Element
    /// The owned slot. Underscored: not for use outside the library (reach the value through
    /// the accessors below).
    var _unsafePointer: UnsafeMutablePointer<Element> { get }
}

extension PoolSlotHandle where Self: ~Copyable {
    /// The value in the slot.
    @inlinable
    public var value: Element {
        // Safe: the slot is in use and owned by this handle, so it holds an initialised Element.
        get { unsafe _unsafePointer.pointee }
        set { unsafe _unsafePointer.pointee = newValue }
    }

    /// Calls `body` with the value in place.
    @inlinable
    public mutating func withValue<Result, Failure: Error>(
        _ body: (inout Element) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Safe: the slot is owned by this handle, and `mutating` keeps other accesses out.
        try unsafe body(&_unsafePointer.pointee)
    }

    /// Calls `body` with the value's bytes (`MemoryLayout<Element>.size` of them), valid only inside.
    @inlinable
    public mutating func withUnsafeMutableBytes<Result, Failure: Error>(
        _ body: (UnsafeMutableRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Safe: the slot holds `MemoryLayout<Element>.size` initialised bytes owned by this handle.
        try unsafe body(UnsafeMutableRawBufferPointer(start: _unsafePointer, count: MemoryLayout<Element>.size))
    }

    /// Calls `body` with the value's bytes, read-only, valid only inside.
    @inlinable
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // Safe: as in withUnsafeMutableBytes, read-only.
        try unsafe body(UnsafeRawBufferPointer(start: _unsafePointer, count: MemoryLayout<Element>.size))
    }

    /// Whether the slot's address is a multiple of `alignment` (for tests and diagnostics).
    public func isAligned(to alignment: Int) -> Bool {
        // Safe: the address only, no access.
        unsafe Int(bitPattern: _unsafePointer) & (alignment - 1) == 0
    }

    /// The slot's address, for identity checks (is it the same slot as before, did it move).
    /// Not a way to reach the value: use `withValue`.
    // Safe: the address only, no access.
    public var address: UInt { unsafe UInt(bitPattern: _unsafePointer) }
}

