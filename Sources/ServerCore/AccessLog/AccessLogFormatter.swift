import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// Bytes appended to preallocated memory: the access log's lines are built here by the writer
/// thread without a String or an allocation (the whole process, writer included, stays at 0
/// allocations per connection). The caller keeps `room` at least `AccessLogFormatter.maxLine`
/// before each line.
struct ByteOutput {
    let base: UnsafeMutablePointer<UInt8>
    let capacity: Int
    var count = 0

    // Safe: `base` holds `capacity` bytes, owned by the writer thread until deallocate(); every
    // append writes at `count` and the caller keeps `room` at least a whole line
    // (AccessLogFormatter.maxLine) before each line, so no append passes `capacity`.
    init(capacity: Int) {
        base = .allocate(capacity: capacity)
        self.capacity = capacity
    }

    func deallocate() { base.deallocate() }

    var room: Int { capacity - count }

    mutating func reset() { count = 0 }

    @inline(__always)
    mutating func append(_ byte: UInt8) {
        base[count] = byte
        count += 1
    }

    mutating func append(_ text: StaticString) {
        text.withUTF8Buffer { bytes in
            (base + count).update(from: bytes.baseAddress!, count: bytes.count)
            count += bytes.count
        }
    }

    /// A whole number in decimal.
    mutating func append(_ value: UInt64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var length = 0
        var rest = value
        // Safe: the 20 digit bytes live on the stack for this closure; at most 20 are copied
        // (UInt64.max has 20 digits) to `base + count`, inside the room the caller keeps.
        withUnsafeMutableBytes(of: &digits) { buffer in
            repeat {
                buffer[19 - length] = UInt8(truncatingIfNeeded: rest % 10) + UInt8(ascii: "0")
                rest /= 10
                length += 1
            } while rest > 0
            (base + count).update(from: buffer.baseAddress!.assumingMemoryBound(to: UInt8.self) + 20 - length, count: length)
        }
        count += length
    }

    mutating func append(_ value: Int64) {
        if value < 0 {
            append(UInt8(ascii: "-"))
            append(value.magnitude)
        } else {
            append(UInt64(value))
        }
    }

    /// `value` in exactly `width` digits, zeros in front.
    mutating func append(_ value: Int, width: Int) {
        var rest = value
        for index in stride(from: width - 1, through: 0, by: -1) {
            base[count + index] = UInt8(truncatingIfNeeded: rest % 10) + UInt8(ascii: "0")
            rest /= 10
        }
        count += width
    }

    /// The address's host as text (`inet_ntop`, into this memory directly); `-` for none.
    mutating func appendHost(_ address: RawSocketAddress) {
        var words = address.bytes
        let family: Int32
        switch address.kind {
        case .none:
            append(UInt8(ascii: "-"))
            return
        case .ipv4: family = AF_INET
        case .ipv6: family = AF_INET6
        }
        // Safe: `words` holds the address bytes for the call; inet_ntop writes at most
        // INET6_ADDRSTRLEN bytes (its NUL included) at `base + count`, inside the kept room.
        let written = withUnsafeBytes(of: &words) { source in
            inet_ntop(family, source.baseAddress, UnsafeMutableRawPointer(base + count).assumingMemoryBound(to: CChar.self),
                      socklen_t(INET6_ADDRSTRLEN))
        }
        guard let written else {
            append(UInt8(ascii: "?"))
            return
        }
        count += strlen(written)
    }

    /// `HOST:PORT`, an IPv6 host in brackets; `-` for none.
    mutating func appendAddress(_ address: RawSocketAddress) {
        guard address.kind != .none else {
            append(UInt8(ascii: "-"))
            return
        }
        if address.kind == .ipv6 { append(UInt8(ascii: "[")) }
        appendHost(address)
        if address.kind == .ipv6 { append(UInt8(ascii: "]")) }
        append(UInt8(ascii: ":"))
        append(UInt64(address.port))
    }

    /// RFC 3339 in UTC with milliseconds: `2026-12-02T10:50:41.123Z`.
    mutating func appendTimestamp(millisecondsSinceEpoch milliseconds: Int64) {
        let (seconds, millis) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        let adjustedSeconds = millis < 0 ? seconds - 1 : seconds
        let millisecond = Int(millis < 0 ? millis + 1000 : millis)
        var days = adjustedSeconds / 86_400
        var secondOfDay = adjustedSeconds % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let (year, month, day) = ByteOutput.civil(daysSinceEpoch: days)
        append(year, width: 4)
        append(UInt8(ascii: "-"))
        append(month, width: 2)
        append(UInt8(ascii: "-"))
        append(day, width: 2)
        append(UInt8(ascii: "T"))
        append(Int(secondOfDay / 3600), width: 2)
        append(UInt8(ascii: ":"))
        append(Int(secondOfDay % 3600 / 60), width: 2)
        append(UInt8(ascii: ":"))
        append(Int(secondOfDay % 60), width: 2)
        append(UInt8(ascii: "."))
        append(millisecond, width: 3)
        append(UInt8(ascii: "Z"))
    }

    /// The proleptic Gregorian date of a day count from 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`): no table, no time zone, no libc call.
    static func civil(daysSinceEpoch: Int64) -> (year: Int, month: Int, day: Int) {
        let z = daysSinceEpoch + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (Int(year), Int(month), Int(day))
    }
}

/// The access log's two line formats, written into a `ByteOutput` (docs/OPERATIONS.md#access-log):
/// text, `key=value` pairs (logfmt), and JSON, an object per line with the same keys (the
/// addresses split into `_ip` and `_port`). One sequence of fields serves both.
enum AccessLogFormatter {
    /// The longest line either format can make (two IPv6 addresses, every number at its widest,
    /// every cause), with room to spare.
    static let maxLine = 1024

    /// `start_time client worker mode [upstream tries connect_ms] duration_ms bytes_received
    /// bytes_sent [upstream_bytes_sent upstream_bytes_received] reason causes`; the bracketed
    /// fields in a relay's lines only.
    static func write(_ record: borrowing AccessLogRecord, as format: AccessLogFormat, into output: inout ByteOutput) {
        var line = Line(json: format == .json, output: output)
        line.timestamp("start_time", record.startMilliseconds)
        line.address("client", ip: "client_ip", port: "client_port", record.client, portWhenNone: true)
        line.number("worker", UInt64(record.worker))
        line.word("mode", record.relay ? "relay" : "echo")
        if record.relay {
            line.address("upstream", ip: "upstream_ip", port: "upstream_port", record.upstream)
            line.number("tries", UInt64(record.tries))
            line.signed("connect_ms", record.connectMilliseconds)
        }
        line.number("duration_ms", record.durationMilliseconds)
        line.number("bytes_received", record.bytesReceived)
        line.number("bytes_sent", record.bytesSent)
        if record.relay {
            line.number("upstream_bytes_sent", record.upstreamBytesSent)
            line.number("upstream_bytes_received", record.upstreamBytesReceived)
        }
        line.word("reason", record.reason.name)
        line.causes("causes", record.causes)
        line.end()
        output = line.output
    }

    /// One line being written: the keys and separators of its format.
    private struct Line {
        let json: Bool
        var output: ByteOutput
        var first = true

        /// ` key=` or `,"key":` (`key=` or `{"key":` first).
        mutating func key(_ name: StaticString) {
            if json {
                output.append(first ? "{\"" : ",\"")
                output.append(name)
                output.append("\":")
            } else {
                if !first { output.append(UInt8(ascii: " ")) }
                output.append(name)
                output.append(UInt8(ascii: "="))
            }
            first = false
        }

        mutating func number(_ name: StaticString, _ value: UInt64) {
            key(name)
            output.append(value)
        }

        mutating func signed(_ name: StaticString, _ value: Int64) {
            key(name)
            output.append(value)
        }

        /// A word from the access log's own vocabulary (plain ASCII: nothing to escape).
        mutating func word(_ name: StaticString, _ value: StaticString) {
            key(name)
            if json { output.append(UInt8(ascii: "\"")) }
            output.append(value)
            if json { output.append(UInt8(ascii: "\"")) }
        }

        mutating func timestamp(_ name: StaticString, _ milliseconds: Int64) {
            key(name)
            if json { output.append(UInt8(ascii: "\"")) }
            output.appendTimestamp(millisecondsSinceEpoch: milliseconds)
            if json { output.append(UInt8(ascii: "\"")) }
        }

        /// Text: `name=IP:PORT` (`-` for none). JSON: `"ip":"IP","port":PORT` under the names
        /// given (null for none; the port 0 instead with `portWhenNone`, as for the client). Every character of
        /// an address is plain ASCII.
        mutating func address(_ name: StaticString, ip: StaticString, port: StaticString, _ address: RawSocketAddress,
                              portWhenNone zero: Bool = false) {
            guard json else {
                key(name)
                output.appendAddress(address)
                return
            }
            key(ip)
            if address.kind == .none {
                output.append("null")
            } else {
                output.append(UInt8(ascii: "\""))
                output.appendHost(address)
                output.append(UInt8(ascii: "\""))
            }
            key(port)
            if address.kind == .none && !zero { output.append("null") } else { output.append(UInt64(address.port)) }
        }

        /// Every cause in the set, in the reasons' order: text `a,b` (`-` for none), JSON `["a","b"]`.
        mutating func causes(_ name: StaticString, _ causes: SessionEndReasons) {
            key(name)
            if json { output.append(UInt8(ascii: "[")) }
            var none = true
            // By raw value rather than `allCases`, which may build an array per call.
            var raw: UInt8 = 0
            while let reason = SessionEndReason(rawValue: raw) {
                raw += 1
                guard causes.contains(reason) else { continue }
                if !none { output.append(UInt8(ascii: ",")) }
                none = false
                if json { output.append(UInt8(ascii: "\"")) }
                output.append(reason.name)
                if json { output.append(UInt8(ascii: "\"")) }
            }
            if json { output.append(UInt8(ascii: "]")) } else if none { output.append(UInt8(ascii: "-")) }
        }

        mutating func end() {
            if json { output.append(UInt8(ascii: "}")) }
            output.append(UInt8(ascii: "\n"))
        }
    }
}
