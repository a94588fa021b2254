/// How a pool adds capacity when it runs out of free slots.
public enum GrowthStrategy: Sendable, Hashable, CustomStringConvertible {
    /// Never grow: the pool keeps the capacity it was created with.
    case none
    /// Add this many slots at each growth step.
    case linear(Int)
    /// Multiply the capacity by this factor (> 1) at each growth step.
    case exponential(Double)

    public var description: String {
        switch self {
        case .none: return ".none"
        case .linear(let n): return ".linear(\(n))"
        case .exponential(let f): return ".exponential(\(f))"
        }
    }

    /// The capacity after one growth step from `capacity`, capped at `maximum`;
    /// always at least one more slot than before while below the maximum.
    func nextCapacity(after capacity: Int, maximum: Int) -> Int {
        let wanted: Int
        switch self {
        case .none:
            return capacity
        case .linear(let n):
            wanted = capacity.addingReportingOverflow(n).overflow ? Int.max : capacity + n
        case .exponential(let factor):
            let product = (Double(capacity) * factor).rounded(.up)
            wanted = product >= Double(Int.max) ? Int.max : max(Int(product), capacity + 1)
        }
        return min(wanted, maximum)
    }
}

/// The order in which free slots are handed out.
public enum AllocationOrder: Sendable, Hashable {
    /// Last released, first reused: an intrusive free list. The slot reused next is the one most
    /// recently touched, so it is likely still in cache. O(1) acquire and release. The default.
    case lifo
    /// The free slot with the lowest index first, found in a bitmap: a compact, predictable
    /// layout (the live slots stay packed at the start of the pool). Acquire scans the bitmap
    /// from the lowest word with a free slot; release clears one bit.
    case lowestFirst
}

/// A configuration value broke a rule. The message names the field (or command-line option),
/// the value and the rule, for example `alignment: 48 (expected: a power of two >= 8)`.
/// One type for every configuration in the package: pools, packet buffers, the load client's
/// flags and the server's options.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The field or option that is wrong (`capacity`, `alignment`, `--workers`, ...).
    public let field: String
    /// The value that was given, as text.
    public let value: String
    /// The rule the value broke.
    public let expected: String

    public init(field: String, value: String, expected: String) {
        self.field = field
        self.value = value
        self.expected = expected
    }

    public var description: String { "\(field): \(value) (expected: \(expected))" }
}

/// The name `PoolConfig` validation has always thrown.
public typealias PoolConfigError = ConfigError

/// The configuration of a pool of `Element` values, validated once when it is made.
///
/// ```swift
/// let config = try PoolConfig<Packet>(capacity: 256, alignment: 64,
///                                     growth: .exponential(2), maxCapacity: 4096)
/// ```
///
/// Rules: `capacity > 0`; `alignment` a power of two and at least `Element`'s own alignment;
/// `maxCapacity >= capacity`; a linear step > 0; an exponential factor > 1; `magazineSize` in
/// 0...1024, and 0 with `.lowestFirst`.
public struct PoolConfig<Element>: Sendable {
    /// Slots made when the pool is created.
    public var capacity: Int
    /// Byte alignment of every slot: a power of two, at least `MemoryLayout<Element>.alignment`.
    public var alignment: Int
    /// How the pool grows when it has no free slot (ignored by `FixedPool`, which requires `.none`).
    public var growth: GrowthStrategy
    /// The most slots the pool will ever hold. Defaults to `capacity` for `.none`, otherwise to
    /// `Int(Int32.max)`.
    public var maxCapacity: Int
    /// Which free slot `acquire` hands out.
    public var order: AllocationOrder
    /// A name that traps and statistics use to say which pool they are about.
    public var name: String
    /// Makes a value for a slot that has never held one, for `acquire()` without an argument
    /// (types you don't own; fastalloc's `initializer`).
    public var initialize: (@Sendable () -> Element)?
    /// Runs on every value as it is acquired, after the type's `Poolable.onAcquire` (fastalloc's
    /// `reset_fn`): reset state left by the previous user.
    public var onAcquire: (@Sendable (inout Element) -> Void)?
    /// Runs on every value as it is released, after the type's `Poolable.onRelease`.
    public var onRelease: (@Sendable (inout Element) -> Void)?
    /// `ThreadSafePool` only (the other pools ignore it): slots each thread may keep in its own
    /// magazine, a private stack that serves acquires and absorbs releases without the lock,
    /// refilled from and flushed to the shared pool half a magazine at a time under the lock.
    /// 0 (the default) keeps no magazines: every acquire and release takes the lock.
    ///
    /// Bound: at most `magazineSize` free slots per thread that used the pool sit in magazines;
    /// they are the pool's own slots (no extra memory), and while they sit there other threads
    /// cannot have them, so a `tryAcquire` can find the shared pool empty while other threads
    /// cache free slots. It then asks every thread to flush its magazine on its next use of the
    /// pool (and fails, as exhaustion does); a thread that exits flushes its magazine. Not with
    /// `order: .lowestFirst`, whose promise a magazine's cached slots would break.
    public var magazineSize: Int

    /// Makes and validates a configuration; throws `PoolConfigError` naming the first broken rule.
    public init(
        capacity: Int,
        alignment: Int? = nil,
        growth: GrowthStrategy = .none,
        maxCapacity: Int? = nil,
        order: AllocationOrder = .lifo,
        name: String? = nil,
        initialize: (@Sendable () -> Element)? = nil,
        onAcquire: (@Sendable (inout Element) -> Void)? = nil,
        onRelease: (@Sendable (inout Element) -> Void)? = nil,
        magazineSize: Int = 0
    ) throws(PoolConfigError) {
        self.capacity = capacity
        self.alignment = alignment ?? MemoryLayout<Element>.alignment
        self.growth = growth
        if let maxCapacity {
            self.maxCapacity = maxCapacity
        } else if case .none = growth {
            self.maxCapacity = capacity
        } else {
            self.maxCapacity = max(capacity, Int(Int32.max))
        }
        self.order = order
        self.name = name ?? "pool<\(Element.self)>"
        self.initialize = initialize
        self.onAcquire = onAcquire
        self.onRelease = onRelease
        self.magazineSize = magazineSize
        try validate()
    }

    /// The largest `magazineSize`: 1024 slots per thread.
    public static var maxMagazineSize: Int { 1024 }

    /// Checks every rule; throws `PoolConfigError` naming the first field that breaks one.
    /// Pools call this again, so a configuration changed after `init` is still checked.
    public func validate() throws(PoolConfigError) {
        if capacity <= 0 {
            throw PoolConfigError(field: "capacity", value: "\(capacity)", expected: "> 0")
        }
        let minimumAlignment = MemoryLayout<Element>.alignment
        if alignment <= 0 || alignment & (alignment - 1) != 0 || alignment < minimumAlignment {
            throw PoolConfigError(
                field: "alignment", value: "\(alignment)",
                expected: "a power of two >= \(minimumAlignment)")
        }
        if alignment > 1 << 20 {
            throw PoolConfigError(field: "alignment", value: "\(alignment)", expected: "<= 1048576")
        }
        switch growth {
        case .none:
            break
        case .linear(let n) where n <= 0:
            throw PoolConfigError(field: "growth", value: growth.description, expected: "a linear step > 0")
        case .exponential(let f) where !(f > 1) || !f.isFinite:
            throw PoolConfigError(field: "growth", value: growth.description, expected: "a finite factor > 1")
        default:
            break
        }
        if maxCapacity < capacity {
            throw PoolConfigError(
                field: "maxCapacity", value: "\(maxCapacity)", expected: ">= capacity (\(capacity))")
        }
        if maxCapacity > Int(Int32.max) {
            throw PoolConfigError(
                field: "maxCapacity", value: "\(maxCapacity)", expected: "<= \(Int32.max)")
        }
        if magazineSize < 0 || magazineSize > PoolConfig.maxMagazineSize {
            throw PoolConfigError(
                field: "magazineSize", value: "\(magazineSize)", expected: "0...\(PoolConfig.maxMagazineSize)")
        }
        if magazineSize > 0 && order == .lowestFirst {
            throw PoolConfigError(
                field: "magazineSize", value: "\(magazineSize)",
                expected: "0 with order .lowestFirst (a magazine hands out its cached slots, not the lowest free one)")
        }
    }
}
