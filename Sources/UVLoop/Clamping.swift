// Seconds to the integers libuv's timers and the monotonic clock take, clamped: never a trap.

// MARK: Seconds to the integers timers take

/// Whole milliseconds for a time in seconds, as libuv's timers take them: rounded to the
/// nearest millisecond, and a positive time is at least 1 ms (a tiny timeout still times out
/// instead of reading as 0, which the callers take as "none"). NaN, 0, negative times and -inf
/// give 0; +inf and any time of 2^64 ms or more give `UInt64.max`. Never traps.
public func clampedMilliseconds(_ seconds: Double) -> UInt64 {
    clampedUnits(seconds, perSecond: 1e3)
}

/// Whole nanoseconds for a time in seconds, as `EventLoop.hrtime()` counts them; the same
/// rounding and clamping as `clampedMilliseconds` (2^64 ns is about 584 years).
public func clampedNanoseconds(_ seconds: Double) -> UInt64 {
    clampedUnits(seconds, perSecond: 1e9)
}

private func clampedUnits(_ seconds: Double, perSecond: Double) -> UInt64 {
    guard seconds > 0 else { return 0 }  // NaN, 0, negatives, -inf
    let units = (seconds * perSecond).rounded()
    // 2^64 is exactly representable as a Double; UInt64(2^64) itself would trap.
    if units >= 18_446_744_073_709_551_616.0 { return .max }  // +inf included
    return max(1, UInt64(units))
}

#if canImport(Glibc)
import Glibc

/// Counts the entries of a directory whose names do not start with a dot (`/proc/self/fd`:
/// the open descriptors, plus the one of the listing itself). Nil if it cannot be opened.
public func countDirectoryEntries(_ path: String) -> Int? {
    // Safe: the directory stream is closed once, by the deferred closedir, after its last use;
    // each entry is used before the next readdir.
    guard let directory = unsafe opendir(path) else { return nil }
    defer { unsafe closedir(directory) }
    // readdir's records are only as long as their names: the last one in its buffer can end
    // well before sizeof(dirent), so never copy a whole `dirent` (entry.pointee); read the
    // name's first byte where it lies.
    let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!
    var count = 0
    while let entry = unsafe readdir(directory) {
        // Safe: d_name starts inside every record readdir returns, and holds at least its NUL.
        let first = unsafe UnsafeRawPointer(entry).load(fromByteOffset: nameOffset, as: UInt8.self)
        if first != UInt8(ascii: ".") { count += 1 }
    }
    return count
}
#endif
