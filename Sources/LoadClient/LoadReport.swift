/// What a load run measured.
public struct LoadReport: Sendable, Equatable {
    /// Messages completed (echoed back in full) in the measured window.
    public var messages: Int = 0
    /// Bytes echoed back in the measured window.
    public var bytes: Int = 0
    /// Messages completed during the warm-up (not counted above).
    public var warmupMessages: Int = 0
    /// The measured window, in seconds.
    public var seconds: Double = 0
    /// Latency percentiles in nanoseconds: 50, 90, 99, 99.9, 99.99 and the maximum.
    public var latency: [String: UInt64] = [:]
    public var connectFailures: Int = 0
    /// Connections the server closed (or reset) while messages were still due.
    public var earlyCloses: Int = 0
    /// Echoed bytes that differed from what was sent.
    public var mismatchedBytes: Int = 0
    /// The first mismatch: connection and stream offset.
    public var firstMismatch: (connection: Int, offset: Int)?
    /// The first errors met, in words (at most 10).
    public var errors: [String] = []
    public var connections: Int = 0
    public var threads: Int = 0
    public var size: Int = 0
    public var depth: Int = 0
    public var rate: Double?

    public var messagesPerSecond: Double { seconds > 0 ? Double(messages) / seconds : 0 }
    public var megabytesPerSecond: Double { seconds > 0 ? Double(bytes) / seconds / 1_000_000 : 0 }

    /// Whether everything went well: no mismatch, no failed or early-closed connection.
    public var succeeded: Bool { mismatchedBytes == 0 && connectFailures == 0 && earlyCloses == 0 && errors.isEmpty }

    /// Why the run failed, in one line, or nil.
    public var failureReason: String? {
        var reasons: [String] = []
        if mismatchedBytes > 0, let first = firstMismatch {
            reasons.append("\(mismatchedBytes) mismatched byte(s), first at offset \(first.offset) of connection \(first.connection)")
        }
        if connectFailures > 0 { reasons.append("\(connectFailures) connection(s) failed to connect") }
        if earlyCloses > 0 { reasons.append("\(earlyCloses) connection(s) closed early") }
        if reasons.isEmpty, let error = errors.first { reasons.append(error) }
        if !errors.isEmpty, !reasons.contains(errors[0]) { reasons.append("first error: \(errors[0])") }
        return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
    }

    public static func == (lhs: LoadReport, rhs: LoadReport) -> Bool {
        lhs.messages == rhs.messages && lhs.bytes == rhs.bytes && lhs.mismatchedBytes == rhs.mismatchedBytes
            && lhs.earlyCloses == rhs.earlyCloses && lhs.connectFailures == rhs.connectFailures && lhs.latency == rhs.latency
    }

    static let percentiles: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("p99.99", 99.99)]

    /// The human summary.
    public func summary() -> String {
        func time(_ nanoseconds: UInt64?) -> String {
            guard let nanoseconds else { return "-" }
            if nanoseconds < 10_000 { return "\(nanoseconds) ns" }
            if nanoseconds < 10_000_000 { return "\(format(Double(nanoseconds) / 1000, 1)) µs" }
            return "\(format(Double(nanoseconds) / 1_000_000, 2)) ms"
        }
        var lines: [String] = []
        let mode = rate.map { "open loop at \(format($0, 0)) msg/s" } ?? "closed loop"
        lines.append("\(connections) connections on \(threads) thread(s), \(size)-byte messages, depth \(depth), \(mode)")
        lines.append("  \(messages) messages in \(format(seconds, 2)) s: \(format(messagesPerSecond, 0)) msg/s, \(format(megabytesPerSecond, 2)) MB/s (warm-up: \(warmupMessages) discarded)")
        let percentiles = LoadReport.percentiles.map { "\($0.0) \(time(latency[$0.0]))" }.joined(separator: ", ")
        lines.append("  latency: \(percentiles), max \(time(latency["max"]))")
        lines.append("  connect failures \(connectFailures), early closes \(earlyCloses), mismatched bytes \(mismatchedBytes)")
        if let reason = failureReason { lines.append("FAILED: \(reason)") }
        return lines.joined(separator: "\n")
    }

    /// One JSON object.
    public func json() -> String {
        var fields: [(String, String)] = [
            ("connections", "\(connections)"), ("threads", "\(threads)"), ("size", "\(size)"), ("depth", "\(depth)"),
            ("rate", rate.map { "\($0)" } ?? "null"),
            ("messages", "\(messages)"), ("bytes", "\(bytes)"), ("warmup_messages", "\(warmupMessages)"),
            ("seconds", "\(seconds)"), ("messages_per_second", "\(messagesPerSecond)"),
            ("megabytes_per_second", "\(megabytesPerSecond)"),
        ]
        let latencyFields = (LoadReport.percentiles.map(\.0) + ["max"]).map { "\"\($0)\": \(latency[$0].map { "\($0)" } ?? "null")" }
        fields.append(("latency_ns", "{" + latencyFields.joined(separator: ", ") + "}"))
        fields.append(("connect_failures", "\(connectFailures)"))
        fields.append(("early_closes", "\(earlyCloses)"))
        fields.append(("mismatched_bytes", "\(mismatchedBytes)"))
        fields.append(("first_mismatch", firstMismatch.map { "{\"connection\": \($0.connection), \"offset\": \($0.offset)}" } ?? "null"))
        fields.append(("errors", "[" + errors.map(jsonString).joined(separator: ", ") + "]"))
        fields.append(("succeeded", succeeded ? "true" : "false"))
        return "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
    }
}

func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(scalar.value, radix: 16).count) + String(scalar.value, radix: 16) } else { out.unicodeScalars.append(scalar) }
        }
    }
    return out + "\""
}

func format(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    var text = "\(rounded)"
    // Int(rounded) would trap beyond ±2^63; such a figure prints as a Double instead.
    if decimals == 0 { return abs(rounded) < 9.2e18 ? "\(Int(rounded))" : "\(rounded)" }
    if let dot = text.firstIndex(of: ".") {
        let have = text.distance(from: dot, to: text.endIndex) - 1
        if have < decimals { text += String(repeating: "0", count: decimals - have) }
    }
    return text
}
