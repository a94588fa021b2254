import FastAlloc
import UVLoop

/// What a load run does. Each field's initial value is its default; `LoadConfig.table`
/// (LoadConfig+Options.swift) declares the flag that sets it. Validated by `validate()`, whose
/// errors name the flag and the rule.
public struct LoadConfig: Sendable {
    /// The server (or the relay in front of one).
    public var target = SocketAddress(host: "127.0.0.1", port: 7000)
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
    /// How the executable prints the report: one JSON object instead of the summary. The run
    /// itself does not read it.
    public var jsonOutput = false

    /// The defaults, `target` included (127.0.0.1:7000).
    public init() {}

    public init(target: SocketAddress) {
        self.target = target
    }

    /// A configuration from flag values (name without dashes to text, as
    /// `LoadConfig.table.parse(commandLine:)` reads them); the rest keep their defaults.
    /// Validated: the error names the first flag whose text or value breaks its rule.
    public init(values: [String: String]) throws(LoadConfigError) {
        self.init()
        _ = try LoadConfig.table.apply(values: values, environment: [:], to: &self)
        try validate()
    }

    /// The largest message.
    public static let maxSize = 16 << 20

    /// Checks every rule, each flag's own (the table's, in its order) and those between flags;
    /// the error names the first flag that breaks one. Every value it accepts runs without a
    /// trap: the ceilings (LoadConfig+Bounds.swift) keep the arithmetic in range, and the
    /// conversions (LoadConfig+Conversions.swift) clamp besides.
    public func validate() throws(LoadConfigError) {
        func fail(_ flag: String, _ value: Any, _ rule: String) -> LoadConfigError {
            ConfigError(field: flag, value: "\(value)", expected: rule)
        }
        try LoadConfig.table.validate(self)
        if connections * depth > LoadConfig.maxInFlight {  // both in range (the table's rules): no overflow
            throw fail("--depth", depth, "--connections × --depth at most \(LoadConfig.maxInFlight) messages in flight "
                + "(this run asks for \(connections * depth))")
        }
        if threads < 1 || threads > min(LoadConfig.maxThreads, connections) {
            throw fail("--threads", threads, connections < LoadConfig.maxThreads
                ? "1...connections (\(connections))" : "1...\(LoadConfig.maxThreads)")
        }
    }
}

/// The load client's flags break rules as the rest of the package's configurations do.
public typealias LoadConfigError = ConfigError
