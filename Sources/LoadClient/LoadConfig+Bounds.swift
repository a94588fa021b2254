import Options

// The ceiling of every duration, size, count and rate the load client takes, and why.
// validate() enforces them with a named rule; the conversions (LoadConfig+Conversions.swift)
// clamp besides, so that a configuration never validated cannot trap either.

extension LoadConfig {
    /// Connections in all. A million is beyond one machine's ephemeral ports toward one target.
    public static let connectionsRange = 1...1_000_000

    /// Messages in flight per connection.
    public static let depthRange = 1...65_536

    /// Messages in flight in all (--connections × --depth): 2^24. Each keeps its send time
    /// (8 bytes, allocated at start), so this bounds that table to 128 MiB; the two flags'
    /// own ceilings alone would allow 65 billion.
    public static let maxInFlight = 1 << 24

    /// Event-loop threads: at most 256 (and at most --connections). A thread each is created at
    /// start and a failed creation is not something a load run can go on from.
    public static let maxThreads = 256

    /// A fixed-count run's messages per connection: at most 10^9, so that the bytes one
    /// connection sends (messages × --size, at most 16 MiB each) fit an Int many times over.
    public static let messagesRange = 1...1_000_000_000

    /// Messages per second in all: from 0.001 to 10^9. A connection's interval between two
    /// messages is --connections / --rate seconds, kept in nanoseconds: at 10^9/s and one
    /// connection it is 1 ns (never 0, which would mean closed loop), and at 0.001/s and a
    /// million connections 10^18 ns (31.7 years), still inside a UInt64 of nanoseconds.
    public static let rateRange = 0.001...1_000_000_000.0
    static let rateRuleText = "messages per second from 0.001 to 1000000000, like 10000"

    /// The measured time and the warm-up: at most 7 days each (a soak runs minutes to hours);
    /// the connect timeout at most an hour (Linux gives up an unanswered connect after ~2 min).
    public static let maxDuration: Double = 7 * 86_400
    public static let maxConnectTimeout: Double = 3_600

    /// The rules of the duration flags (their ranges above).
    static let durationRule = DurationRule(zeroAllowed: false, maximum: maxDuration, text: "a time > 0, at most 7d, like 10s or 500ms")
    static let warmupRule = DurationRule(zeroAllowed: true, maximum: maxDuration, text: "a time from 0 to 7d, like 2s")
    static let connectTimeoutRule = DurationRule(zeroAllowed: false, maximum: maxConnectTimeout, text: "a time > 0, at most 1h, like 5s")
}
