#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A growing pool that belongs to the thread that made it: no locks, no atomics.
///
/// Make one per worker thread (each worker of a server owns one). It is not `Sendable`, nor are
/// its handles, so the compiler keeps them on their thread in Swift 6 code; debug builds also
/// trap when it is used from another thread through unchecked code.
public final class ThreadLocalPool<Element>: UnsynchronizedPool<Element> {
    public init(config: PoolConfig<Element>) throws(PoolConfigError) {
        try config.validate()
        super.init(validated: config, kind: "ThreadLocalPool")
        #if DEBUG
        // Safe: the core was just made by `super.init`, and nobody else has it yet.
        unsafe _core.pointee.slots.pointee.ownerThread = pthread_self()
        #endif
    }

    /// Every growth so far, oldest first.
    // Safe: the core lives as long as the pool (`UnsynchronizedPool`), on one thread.
    public var growthEvents: [GrowthEvent] { unsafe _core.pointee.slots.pointee.events }
}
