import FastAlloc

/// The shape of a server's packet-buffer memory: the size of every buffer, how many each worker
/// owns, and how the shared overflow pool grows. Validated once; errors name the field, the
/// value and the rule.
public struct PacketBufferConfig: Sendable, Hashable {
    /// The smallest and largest buffer size.
    public static let bufferSizeRange = 64...(1 << 20)

    /// Bytes in every buffer (64 B to 1 MiB). 64 KiB by default: libuv suggests 64 KiB for
    /// each read, and a read that fills the buffer is one system call for 64 KiB of data.
    public var bufferSize: Int
    /// Buffers each worker owns, taken and returned without a lock.
    public var localBuffers: Int
    /// Buffers the shared overflow pool starts with.
    public var overflowInitial: Int
    /// How the overflow pool grows when it is empty: `.none`, `.linear(n)`, `.exponential(f)`.
    public var overflowGrowth: GrowthStrategy
    /// The most buffers the overflow pool will ever hold; beyond, takes return nil.
    public var overflowMax: Int
    /// How many of the latest overflow growth events the statistics keep.
    public var recentGrowthEventLimit: Int

    public init(
        bufferSize: Int = 64 * 1024,
        localBuffers: Int = 128,
        overflowInitial: Int = 64,
        overflowGrowth: GrowthStrategy = .exponential(2),
        overflowMax: Int = 1024,
        recentGrowthEventLimit: Int = 16
    ) throws(PoolConfigError) {
        self.bufferSize = bufferSize
        self.localBuffers = localBuffers
        self.overflowInitial = overflowInitial
        self.overflowGrowth = overflowGrowth
        self.overflowMax = overflowMax
        self.recentGrowthEventLimit = recentGrowthEventLimit
        try validate()
    }

    /// Checks every rule; throws `PoolConfigError` naming the first field that breaks one.
    public func validate() throws(PoolConfigError) {
        let range = PacketBufferConfig.bufferSizeRange
        if !range.contains(bufferSize) {
            throw PoolConfigError(field: "bufferSize", value: "\(bufferSize)",
                                  expected: "\(range.lowerBound)...\(range.upperBound) bytes")
        }
        if localBuffers <= 0 {
            throw PoolConfigError(field: "localBuffers", value: "\(localBuffers)", expected: "> 0")
        }
        if overflowInitial <= 0 {
            throw PoolConfigError(field: "overflowInitial", value: "\(overflowInitial)", expected: "> 0")
        }
        // The growth rules are PoolConfig's; reuse them, renaming the fields.
        do {
            _ = try PoolConfig<UInt8>(capacity: overflowInitial, growth: overflowGrowth, maxCapacity: overflowMax)
        } catch {
            switch error.field {
            case "growth":
                throw PoolConfigError(field: "overflowGrowth", value: error.value, expected: error.expected)
            case "maxCapacity":
                throw PoolConfigError(field: "overflowMax", value: error.value,
                                      expected: overflowMax < overflowInitial ? ">= overflowInitial (\(overflowInitial))" : error.expected)
            default:
                throw error
            }
        }
        if recentGrowthEventLimit < 0 {
            throw PoolConfigError(field: "recentGrowthEventLimit", value: "\(recentGrowthEventLimit)", expected: ">= 0")
        }
    }
}
