/// Hooks a pooled type runs as it moves in and out of use, for reset-on-reuse.
///
/// Pools keep a released value in its slot, so the next `acquire()` gets it back ready for
/// reuse (an `Array` keeps its reserved capacity, a buffer its storage). `onAcquire` is the place
/// to reset what the previous user left; `onRelease` the place to drop what should not linger
/// (secrets, references). Both default to doing nothing.
///
/// ```swift
/// struct Scratch: Poolable {
///     var bytes: [UInt8] = []
///     mutating func onAcquire() { bytes.removeAll(keepingCapacity: true) }
/// }
/// ```
///
/// For types you don't own, `PoolConfig(onAcquire:onRelease:)` takes the same hooks as closures;
/// when both exist, the type's hook runs first.
public protocol Poolable {
    /// Runs on the value each time it is handed out, after it was placed in its slot.
    mutating func onAcquire()
    /// Runs on the value each time it is handed back, before its slot becomes free.
    mutating func onRelease()
}

extension Poolable {
    public mutating func onAcquire() {}
    public mutating func onRelease() {}
}

/// The hooks of one pool, resolved once when the pool is made: the element type's `Poolable`
/// hooks (if it conforms) followed by the configuration's closures.
///
/// Memory safety: `@safe`: making and storing the hooks touches no memory; they take a slot
/// pointer, so every call of one is marked, where the caller owns that initialised slot.
@safe @usableFromInline
struct _Hooks<Element> {
    @usableFromInline let onAcquire: ((UnsafeMutablePointer<Element>) -> Void)?
    @usableFromInline let onRelease: ((UnsafeMutablePointer<Element>) -> Void)?
    @usableFromInline let initialize: (@Sendable () -> Element)?

    init(_ config: PoolConfig<Element>) {
        // `unsafe`: closures over slot pointers are composed here, not called.
        let typeHooks = unsafe _poolableHooks(Element.self)
        unsafe onAcquire = _compose(typeHooks?.acquire, config.onAcquire)
        unsafe onRelease = _compose(typeHooks?.release, config.onRelease)
        initialize = config.initialize
    }
}

private func _compose<Element>(
    _ first: ((UnsafeMutablePointer<Element>) -> Void)?,
    _ second: (@Sendable (inout Element) -> Void)?
) -> ((UnsafeMutablePointer<Element>) -> Void)? {
    // `unsafe`: the closures are only composed here; see the comment below for their calls.
    switch unsafe (first, second) {
    case (nil, nil): return nil
    case (let first?, nil): return unsafe first
    // Safe: the pool calls hooks only with a pointer to an initialised slot it owns.
    case (nil, let second?): return { unsafe second(&$0.pointee) }
    case (let first?, let second?): return { unsafe first($0); unsafe second(&$0.pointee) }
    }
}

/// The `Poolable` hooks of `Element`, if it conforms, found once per pool rather than per call.
private func _poolableHooks<Element>(
    _: Element.Type
) -> (acquire: (UnsafeMutablePointer<Element>) -> Void, release: (UnsafeMutablePointer<Element>) -> Void)? {
    guard let poolable = Element.self as? any Poolable.Type else { return nil }
    func open<P: Poolable>(_: P.Type) -> (
        acquire: (UnsafeMutablePointer<Element>) -> Void, release: (UnsafeMutablePointer<Element>) -> Void
    ) {
        // Safe: `P` is `Element` (the cast above succeeded), and the pool calls hooks only with
        // a pointer to an initialised `Element` slot.
        return ({ unsafe UnsafeMutableRawPointer($0).assumingMemoryBound(to: P.self).pointee.onAcquire() },
                { unsafe UnsafeMutableRawPointer($0).assumingMemoryBound(to: P.self).pointee.onRelease() })
    }
    return unsafe open(poolable)
}
