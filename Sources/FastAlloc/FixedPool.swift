/// A pool of one contiguous slab that never moves and never grows.
///
/// Acquire and release are O(1) through an intrusive free list (or a bitmap in
/// `.lowestFirst` order). Use it from one thread; see `ThreadSafePool` for sharing.
///
/// ```swift
/// let pool = try FixedPool<Particle>(capacity: 1024)
/// var particle = pool.acquire(Particle())
/// particle.withValue { $0.velocity = 3 }
/// // `particle` goes back to the pool when it goes out of scope.
/// ```
public final class FixedPool<Element>: UnsynchronizedPool<Element> {
    /// A pool of `config.capacity` slots. The configuration's growth must be `.none`.
    public init(config: PoolConfig<Element>) throws(PoolConfigError) {
        try config.validate()
        guard case .none = config.growth else {
            throw PoolConfigError(field: "growth", value: config.growth.description, expected: ".none for a FixedPool")
        }
        super.init(validated: config, kind: "FixedPool")
    }

    /// A pool of `capacity` slots with the default configuration.
    public convenience init(capacity: Int) throws(PoolConfigError) {
        try self.init(config: PoolConfig(capacity: capacity))
    }

    /// The slab's address range, for tests of stability: it never changes.
    // Safe: the core lives as long as the pool, and chunk 0 exists from its init.
    public var slabAddress: UInt { unsafe UInt(bitPattern: _core.pointee.slots.pointee.chunkTable[0].base) }
}
