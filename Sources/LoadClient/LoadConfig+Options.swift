import Options
import UVLoop

// The load client's flags, each declared once: name, field (whose initial value in LoadConfig
// is the default), parser, rule and help. fastalloc-load's command line, validate(), --help,
// the documentation test and the fuzzer all read this table. The load client reads no
// environment variables: a run is what its command line says.

extension LoadConfig {
    /// Every flag, in `--help` order. The rules between flags (--threads at most
    /// --connections, --connections × --depth) are validate()'s.
    public static let table = OptionTable<LoadConfig>([
        ConfigOption("target", environment: nil, valueName: "HOST:PORT", help: "The server, HOST:PORT; an IPv6 host in brackets, [::1]:7000.",
                     store: { config, text throws(OptionRuleError) in
                         do throws(AddressError) { config.target = try SocketAddress(parsing: text) } catch {
                             throw OptionRuleError("HOST:PORT with a numeric host, like 127.0.0.1:7000 (\(error.reason))")
                         }
                     }, check: { config in
                         config.target.port != 0 ? nil : OptionViolation(value: "\(config.target)", rule: "a port from 1 to 65535")
                     }, render: { $0.target.description }),
        .integer("connections", environment: nil, \.connections, range: connectionsRange,
                 help: "Connections in all, 1 to 1000000."),
        .integer("size", environment: nil, \.size, range: 1...maxSize, rule: "1...\(maxSize) bytes",
                 help: "Bytes per message, 1 to 16777216."),
        .integer("depth", environment: nil, \.depth, range: depthRange,
                 help: "Messages in flight per connection, 1 to 65536 (and --connections × --depth at most 16777216)."),
        .duration("duration", environment: nil, \.duration, rule: durationRule, onlyWhen: { $0.messagesPerConnection == nil },
                  help: "Measured time after the warm-up: 10s, 500ms, 2m; at most 7d. A fixed-count run (--messages) "
                      + "does not use it."),
        .duration("warmup", environment: nil, \.warmup, rule: warmupRule,
                  help: "Warm-up time whose results are discarded, 0 to 7d."),
        .integer("threads", environment: nil, \.threads, range: nil,
                 help: "Event-loop threads, 1 to 256 (and at most --connections)."),
        .optional("rate", environment: nil, \.rate, valueName: "N", syntax: rateRuleText, parse: { Double($0) },
                  rule: rateRuleText, allows: { rateRange.contains($0) },
                  help: "Messages per second in all, open loop, 0.001 to 1000000000. Omit for as fast as possible."),
        .optional("messages", environment: nil, \.messagesPerConnection, valueName: "N", syntax: "a whole number",
                  parse: { Int($0) }, rule: "\(messagesRange.lowerBound)...\(messagesRange.upperBound)",
                  allows: { messagesRange.contains($0) },
                  help: "Send this many messages per connection and stop (a fixed-count run, no warm-up), 1 to 1000000000."),
        .duration("connect-timeout", environment: nil, \.connectTimeout, rule: connectTimeoutRule,
                  help: "Time a connection may take to connect, at most 1h."),
        .flag("json", environment: nil, \.jsonOutput, help: "Print one JSON object instead of the summary."),
        .flag("no-verify", environment: nil, \.verify, setting: false, help: "Do not check the echoed bytes (only count them)."),
        ConfigOption("seed", environment: nil, valueName: "N", help: "Seed of the byte pattern.",
                     store: { config, text throws(OptionRuleError) in
                         guard let seed = UInt64(text) else { throw OptionRuleError("a whole number from 0 to \(UInt64.max)") }
                         config.seed = seed
                     }, render: { "\($0.seed)" }),
    ], environmentPrefix: nil)
}
