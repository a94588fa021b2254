import UVLoop

// The integers a load run's timers and schedule use, computed from the configuration in this
// one place. Each clamps: it never traps, whatever the fields hold (validate() keeps them
// sensible; these stay safe even for a configuration never validated, which the fuzzer checks).

extension LoadConfig {
    /// Nanoseconds of warm-up; 0 in a fixed-count run (every message counts).
    public var warmupNanoseconds: UInt64 {
        messagesPerConnection != nil ? 0 : clampedNanoseconds(warmup)
    }

    /// Nanoseconds measured after the warm-up; nil in a fixed-count run (it ends by its count).
    public var durationNanoseconds: UInt64? {
        messagesPerConnection != nil ? nil : clampedNanoseconds(duration)
    }

    /// Milliseconds a connection may take to connect (libuv timer units).
    public var connectTimeoutMilliseconds: UInt64 { clampedMilliseconds(connectTimeout) }

    /// Open loop: nanoseconds between two messages of one connection (--connections / --rate
    /// seconds), at least 1; 0 for a closed loop (no rate). A NaN, zero or negative rate (which
    /// validate() refuses) is taken as no rate; an interval beyond 2^64 ns is `UInt64.max`.
    public var intervalNanoseconds: UInt64 {
        guard let rate, rate > 0 else { return 0 }  // nil, NaN, 0, negatives
        return max(1, clampedNanoseconds(Double(max(1, connections)) / rate))
    }

    /// A fixed-count run: the bytes after which a connection is done (messages × size,
    /// saturating at Int.max); nil otherwise.
    public var bytesPerConnection: Int? {
        guard let messages = messagesPerConnection else { return nil }
        let (bytes, overflow) = max(0, messages).multipliedReportingOverflow(by: max(0, size))
        return overflow ? Int.max : bytes
    }
}

/// `a + b`, or `UInt64.max` when that overflows: instants far in the future stay far in the
/// future instead of trapping (or wrapping into the past).
@inline(__always)
func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
