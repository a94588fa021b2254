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

    public func validate() throws(LoadConfigError) {
        func fail(_ flag: String, _ value: Any, _ rule: String) -> LoadConfigError {
            ConfigError(field: flag, value: "\(value)", expected: rule)
        }
        if target.port == 0 { throw fail("--target", target, "a port from 1 to 65535") }
        if connections < 1 || connections > 1_000_000 { throw fail("--connections", connections, "1...1000000") }
        if size < 1 || size > LoadConfig.maxSize { throw fail("--size", size, "1...\(LoadConfig.maxSize) bytes") }
        if depth < 1 || depth > 65536 { throw fail("--depth", depth, "1...65536") }
        if threads < 1 || threads > connections { throw fail("--threads", threads, "1...connections (\(connections))") }
        if messagesPerConnection == nil {
            if !(duration > 0) || !duration.isFinite { throw fail("--duration", duration, "a time > 0, like 10s or 500ms") }
        } else if messagesPerConnection! < 1 {
            throw fail("--messages", messagesPerConnection!, ">= 1")
        }
        if !(warmup >= 0) || !warmup.isFinite { throw fail("--warmup", warmup, "a time >= 0, like 2s") }
        if let rate, !(rate > 0) || !rate.isFinite { throw fail("--rate", rate, "messages per second > 0") }
        if !(connectTimeout > 0) { throw fail("--connect-timeout", connectTimeout, "a time > 0") }
    }
}

/// The load client's flags break rules as the rest of the package's configurations do.
public typealias LoadConfigError = ConfigError

