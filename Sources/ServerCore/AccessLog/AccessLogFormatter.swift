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

/// The access log's two line formats, written into a `ByteOutput` (docs/OPERATIONS.md#access-log).
enum AccessLogFormatter {
    /// The longest line either format can make (two IPv6 addresses, every number at its widest,
    /// every cause), with room to spare.
    static let maxLine = 1024

    static func write(_ record: borrowing AccessLogRecord, as format: AccessLogFormat, into output: inout ByteOutput) {
        switch format {
        case .text: text(record, into: &output)
        case .json: json(record, into: &output)
        }
    }

    /// `start_time=… client=IP:PORT worker=N mode=echo|relay [upstream=IP:PORT tries=N
    /// connect_ms=N] duration_ms=N bytes_received=N bytes_sent=N [upstream_bytes_sent=N
    /// upstream_bytes_received=N] reason=R causes=R,R`
    static func text(_ record: borrowing AccessLogRecord, into output: inout ByteOutput) {
        output.append("start_time=")
        output.appendTimestamp(millisecondsSinceEpoch: record.startMilliseconds)
        output.append(" client=")
        output.appendAddress(record.client)
        output.append(" worker=")
        output.append(UInt64(record.worker))
        output.append(record.relay ? " mode=relay" : " mode=echo")
        if record.relay {
            output.append(" upstream=")
            output.appendAddress(record.upstream)
            output.append(" tries=")
            output.append(UInt64(record.tries))
            output.append(" connect_ms=")
            output.append(record.connectMilliseconds)
        }
        output.append(" duration_ms=")
        output.append(record.durationMilliseconds)
        output.append(" bytes_received=")
        output.append(record.bytesReceived)
        output.append(" bytes_sent=")
        output.append(record.bytesSent)
        if record.relay {
            output.append(" upstream_bytes_sent=")
            output.append(record.upstreamBytesSent)
            output.append(" upstream_bytes_received=")
            output.append(record.upstreamBytesReceived)
        }
        output.append(" reason=")
        output.append(record.reason.name)
        output.append(" causes=")
        appendCauses(record.causes, quoted: false, into: &output)
        output.append(UInt8(ascii: "\n"))
    }

    /// One JSON object per line, the same fields: the addresses split into `_ip` and `_port`.
    static func json(_ record: borrowing AccessLogRecord, into output: inout ByteOutput) {
        output.append("{\"start_time\":\"")
        output.appendTimestamp(millisecondsSinceEpoch: record.startMilliseconds)
        output.append("\",\"client_ip\":")
        appendQuotedHost(record.client, into: &output)
        output.append(",\"client_port\":")
        output.append(UInt64(record.client.port))
        output.append(",\"worker\":")
        output.append(UInt64(record.worker))
        output.append(record.relay ? ",\"mode\":\"relay\"" : ",\"mode\":\"echo\"")
        if record.relay {
            output.append(",\"upstream_ip\":")
            appendQuotedHost(record.upstream, into: &output)
            output.append(",\"upstream_port\":")
            if record.upstream.kind == .none { output.append("null") } else { output.append(UInt64(record.upstream.port)) }
            output.append(",\"tries\":")
            output.append(UInt64(record.tries))
            output.append(",\"connect_ms\":")
            output.append(record.connectMilliseconds)
        }
        output.append(",\"duration_ms\":")
        output.append(record.durationMilliseconds)
        output.append(",\"bytes_received\":")
        output.append(record.bytesReceived)
        output.append(",\"bytes_sent\":")
        output.append(record.bytesSent)
        if record.relay {
            output.append(",\"upstream_bytes_sent\":")
            output.append(record.upstreamBytesSent)
            output.append(",\"upstream_bytes_received\":")
            output.append(record.upstreamBytesReceived)
        }
        output.append(",\"reason\":\"")
        output.append(record.reason.name)
        output.append("\",\"causes\":[")
        appendCauses(record.causes, quoted: true, into: &output)
        output.append("]}\n")
    }

    /// `"HOST"` (every character of an address is plain ASCII: nothing to escape), or `null`.
    private static func appendQuotedHost(_ address: RawSocketAddress, into output: inout ByteOutput) {
        guard address.kind != .none else {
            output.append("null")
            return
        }
        output.append(UInt8(ascii: "\""))
        output.appendHost(address)
        output.append(UInt8(ascii: "\""))
    }

    /// Every cause in the set, in the reasons' order, comma-separated (`-` in text when none).
    private static func appendCauses(_ causes: SessionEndReasons, quoted: Bool, into output: inout ByteOutput) {
        var first = true
        // By raw value rather than `allCases`, which may build an array per call.
        var raw: UInt8 = 0
        while let reason = SessionEndReason(rawValue: raw) {
            raw += 1
            guard causes.contains(reason) else { continue }
            if !first { output.append(UInt8(ascii: ",")) }
            first = false
            if quoted { output.append(UInt8(ascii: "\"")) }
            output.append(reason.name)
            if quoted { output.append(UInt8(ascii: "\"")) }
        }
        if first && !quoted { output.append(UInt8(ascii: "-")) }
    }
}
