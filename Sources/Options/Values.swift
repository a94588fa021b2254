// The value syntaxes the options share: times, byte counts, and how each prints back.

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

/// A duration as `parseDuration` reads it back: `60s`, `500ms`, `1.5s`, `0s`.
public func formatDuration(_ seconds: Double) -> String {
    guard seconds.isFinite else { return "\(seconds)" }
    if seconds != 0 && seconds < 1, (seconds * 1000).rounded() == seconds * 1000 { return "\(Int(seconds * 1000))ms" }
    if seconds.rounded() == seconds && seconds < 1e15 { return "\(Int(seconds))s" }
    return "\(seconds)s"
}

/// `65536`, `64K`, `64KiB`, `1M`, `1MiB`, `1G`, `1GiB` (powers of 1024). Nil when the count
/// does not fit an Int (`99999999999999999999K`).
public func parseByteCount(_ text: String) -> Int? {
    let units: [(String, Int)] = [("KiB", 1024), ("MiB", 1 << 20), ("GiB", 1 << 30), ("K", 1024), ("M", 1 << 20), ("G", 1 << 30),
                                  ("k", 1024)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        guard let value = Int(text.dropLast(suffix.count)), value >= 0, value <= Int.max / scale else { return nil }
        return value * scale
    }
    return Int(text)
}

/// A byte count as `parseByteCount` reads it back: `64KiB`, `1MiB`, `100`.
public func formatByteCount(_ bytes: Int) -> String {
    for (suffix, scale) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1024)] where bytes != 0 && bytes % scale == 0 {
        return "\(bytes / scale)\(suffix)"
    }
    return "\(bytes)"
}

/// `1536` → `1.5 KiB`, `67108864` → `64.0 GiB`: a byte figure for messages.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let tenths = (value * 10).rounded() / 10
    return "\(tenths) \(units[unit])"
}
