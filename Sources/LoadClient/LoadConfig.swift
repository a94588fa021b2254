import FastAlloc
import UVLoop

/// What a load run does. Validated by `validate()`, whose errors name the flag and the rule.
public struct LoadConfig: Sendable {
    public var target: SocketAddress
    /// Connections in all, spread over `threads`.
    public var connections: Int = 64
    /// Bytes per message.
    public var size: Int = 64
    /// Messages in flight per connection (pipelining).
    public var depth: Int = 1
    /// Seconds measured after the warm-up.
    public var duration: Double = 10
    /// Seconds of warm-up whose results are discarded.
    public var warmup: Double = 2
    /// Event-loop threads.
    public var threads: Int = 1
    /// Messages per second in all, open loop (latency counts from each message's intended send
    /// time); nil: as fast as the server answers (closed loop).
    public var rate: Double?
    /// Check every echoed byte.
    public var verify: Bool = true
    /// Seed of the byte pattern.
    public var seed: UInt64 = 1
    /// Stop each connection after this many messages instead of after the duration (a fixed
    /// count run: warm-up is then 0 and every message counts).
    public var messagesPerConnection: Int?
    /// Seconds a connection may take to connect.
    public var connectTimeout: Double = 5

    public init(target: SocketAddress) {
        self.target = target
    }

    /// The largest message.
    public static let maxSize = 16 << 20

    /// Checks every rule; the error names the first flag that breaks one. Every value it
    /// accepts runs without a trap: the ceilings (LoadConfig+Bounds.swift) keep the arithmetic
    /// in range, and the conversions (LoadConfig+Conversions.swift) clamp besides.
    public func validate() throws(LoadConfigError) {
        func fail(_ flag: String, _ value: Any, _ rule: String) -> LoadConfigError {
            ConfigError(field: flag, value: "\(value)", expected: rule)
        }
        if target.port == 0 { throw fail("--target", target, "a port from 1 to 65535") }
        if !LoadConfig.connectionsRange.contains(connections) { throw fail("--connections", connections, "1...1000000") }
        if size < 1 || size > LoadConfig.maxSize { throw fail("--size", size, "1...\(LoadConfig.maxSize) bytes") }
        if !LoadConfig.depthRange.contains(depth) { throw fail("--depth", depth, "1...65536") }
        if connections * depth > LoadConfig.maxInFlight {  // both in range: no overflow
            throw fail("--depth", depth, "--connections × --depth at most \(LoadConfig.maxInFlight) messages in flight "
                + "(this run asks for \(connections * depth))")
        }
        if threads < 1 || threads > min(LoadConfig.maxThreads, connections) {
            throw fail("--threads", threads, connections < LoadConfig.maxThreads
                ? "1...connections (\(connections))" : "1...\(LoadConfig.maxThreads)")
        }
        if let messages = messagesPerConnection {
            if !LoadConfig.messagesRange.contains(messages) { throw fail("--messages", messages, "1...1000000000") }
        } else if !LoadConfig.durationRule.allows(duration) {
            throw fail("--duration", duration, LoadConfig.durationRule.text)
        }
        if !LoadConfig.warmupRule.allows(warmup) { throw fail("--warmup", warmup, LoadConfig.warmupRule.text) }
        if let rate, !LoadConfig.rateRange.contains(rate) { throw fail("--rate", rate, LoadConfig.rateRuleText) }
        if !LoadConfig.connectTimeoutRule.allows(connectTimeout) {
            throw fail("--connect-timeout", connectTimeout, LoadConfig.connectTimeoutRule.text)
        }
    }
}

/// The load client's flags break rules as the rest of the package's configurations do.
public typealias LoadConfigError = ConfigError

