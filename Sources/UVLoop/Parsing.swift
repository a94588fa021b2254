// Parsing of the values the command lines share (durations; addresses are SocketAddress's).

/// Parses a duration: `10s`, `500ms`, `2m`, `1.5s`, or plain seconds (`10`).
public func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000_001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let value = Double(text.dropLast(suffix.count)), value.isFinite, value >= 0 else { return nil }
        return value * scale
    }
    guard let value = Double(text), value.isFinite, value >= 0 else { return nil }
    return value
}
