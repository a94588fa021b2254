// Parsing of the values the command lines share (durations; addresses are SocketAddress's).

/// Parses a duration: `10s`, `500ms`, `250us`, `2m`, `1h`, `7d`, `1.5s`, or plain seconds
/// (`10`). Nil for anything else, and for a negative, infinite or NaN time (`-1s`, `inf`,
/// `1e308d`, whose seconds overflow a Double): callers check their own range on a finite
/// number of seconds >= 0.
public func parseDuration(_ text: String) -> Double? {
    let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000_001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
    var number = Substring(text)
    var scale = 1.0
    if let (suffix, unitScale) = units.first(where: { text.hasSuffix($0.0) }) {
        number = number.dropLast(suffix.count)
        scale = unitScale
    }
    guard let value = Double(number), value.isFinite, value >= 0 else { return nil }
    let seconds = value * scale
    return seconds.isFinite ? seconds : nil
}
