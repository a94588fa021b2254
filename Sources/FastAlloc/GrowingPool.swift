/// A pool that adds chunks of slots when it runs out, by its growth strategy, up to its maximum.
///
/// It never shrinks and never moves a slot: a new chunk is added beside the old ones, so every
/// address handed out stays valid. Each growth is recorded with its time and capacities.
/// Use it from one thread; see `ThreadSafePool` for sharing.
public final class GrowingPool<Element>: UnsynchronizedPool<Element> {
    public init(config: PoolConfig<Element>) throws(PoolConfigError) {
        try config.validate()
        super.init(validated: config, kind: "GrowingPool")
    }

    /// Every growth so far, oldest first.
    // Safe (both): the core lives as long as the pool (`UnsynchronizedPool`), on one thread.
    public var growthEvents: [GrowthEvent] { unsafe _core.pointee.slots.pointee.events }

    /// Chunks allocated so far (1 + growth events).
    public var chunkCount: Int { unsafe _core.pointee.slots.pointee.chunkCount }
}
