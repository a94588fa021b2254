// Addresses and ports as v1 text, both ways, by hand: no String, no allocation, no C call
// (inet_pton needs a NUL-terminated copy). The readers accept exactly what glibc's inet_pton
// accepts (the tests and the fuzzer compare them); the writers make RFC 5952 text.

enum ASCII {
    static let space = UInt8(ascii: " ")
    static let cr = UInt8(ascii: "\r")
    static let lf = UInt8(ascii: "\n")
    static let dot = UInt8(ascii: ".")
    static let colon = UInt8(ascii: ":")
    static let zero = UInt8(ascii: "0")

    static func isDigit(_ byte: UInt8) -> Bool { byte &- zero < 10 }

    /// The value of a hexadecimal digit, either case; nil for any other byte.
    static func hexValue(_ byte: UInt8) -> UInt16? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt16(byte &- UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt16(byte &- UInt8(ascii: "a") &+ 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt16(byte &- UInt8(ascii: "A") &+ 10)
        default: nil
        }
    }

    /// The lowercase hexadecimal digit for 0...15.
    static func hexDigit(_ value: UInt16) -> UInt8 {
        value < 10 ? zero &+ UInt8(value) : UInt8(ascii: "a") &+ UInt8(value - 10)
    }
}

// MARK: Reading

enum AddressText {
    /// A dotted-quad IPv4 address filling `range`, as glibc's inet_pton(AF_INET) reads one:
    /// exactly four numbers of 0...255 in decimal, one dot between each, no leading zero (`0`
    /// is a number, `01` is not: the spec forbids them against octal confusion, and inet_pton
    /// agrees). The address's 4 bytes in the first 4 of the result.
    static func ipv4(_ text: Span<UInt8>, _ range: Range<Int>) -> AddressBytes? {
        var bytes = AddressBytes()
        var octet = 0  // the octet being read, 0..<4
        var value = 0
        var digits = 0
        for index in range {
            let byte = text[index]
            if ASCII.isDigit(byte) {
                if digits > 0 && value == 0 { return nil }  // a leading zero
                value = value * 10 + Int(byte &- ASCII.zero)
                guard value <= 255 else { return nil }
                digits += 1
            } else if byte == ASCII.dot && digits > 0 && octet < 3 {
                bytes[octet] = UInt8(value)
                octet += 1
                value = 0
                digits = 0
            } else {
                return nil
            }
        }
        guard octet == 3 && digits > 0 else { return nil }
        bytes[3] = UInt8(value)
        return bytes
    }

    /// IPv6 text filling `range`, as glibc's inet_pton(AF_INET6) reads it (RFC 4291 2.2):
    /// eight groups of 1 to 4 hex digits (either case, leading zeros allowed) separated by
    /// colons; one `::` for one or more zero groups; the last 32 bits may be a dotted quad
    /// (`::ffff:1.2.3.4`, `64:ff9b::192.0.2.1`). No zone (`%eth0`), no brackets.
    static func ipv6(_ text: Span<UInt8>, _ range: Range<Int>) -> AddressBytes? {
        var bytes = AddressBytes()
        var filled = 0  // address bytes written
        var gap: Int? = nil  // where `::` stands, in address bytes
        var at = range.lowerBound
        let end = range.upperBound
        guard at < end else { return nil }
        // A leading colon must be half of a `::`.
        if text[at] == ASCII.colon {
            at += 1
            guard at < end && text[at] == ASCII.colon else { return nil }
        }
        var token = at  // where the current group starts (a dotted quad starts there)
        var digits = 0
        var value: UInt16 = 0
        while at < end {
            let byte = text[at]
            at += 1
            if let digit = ASCII.hexValue(byte) {
                guard digits < 4 else { return nil }
                value = value << 4 | digit
                digits += 1
            } else if byte == ASCII.colon {
                token = at
                if digits == 0 {
                    guard gap == nil else { return nil }  // a second `::`, or `:::`
                    gap = filled
                    continue
                }
                guard at < end, filled + 2 <= 16 else { return nil }  // a trailing single colon; too many groups
                bytes[filled] = UInt8(value >> 8)
                bytes[filled + 1] = UInt8(truncatingIfNeeded: value)
                filled += 2
                digits = 0
                value = 0
            } else if byte == ASCII.dot && filled + 4 <= 16, let quad = ipv4(text, token..<end) {
                for index in 0..<4 { bytes[filled + index] = quad[index] }
                filled += 4
                digits = 0
                at = end
            } else {
                return nil
            }
        }
        if digits > 0 {
            guard filled + 2 <= 16 else { return nil }
            bytes[filled] = UInt8(value >> 8)
            bytes[filled + 1] = UInt8(truncatingIfNeeded: value)
            filled += 2
        }
        if let gap {
            guard filled < 16 else { return nil }  // `::` standing for no group at all
            // Move the groups after the gap to the end; zeros in between.
            let moved = filled - gap
            for index in stride(from: moved - 1, through: 0, by: -1) { bytes[16 - moved + index] = bytes[gap + index] }
            for index in gap..<(16 - moved) { bytes[index] = 0 }
            filled = 16
        }
        return filled == 16 ? bytes : nil
    }

    /// A port filling `range`: 0...65535 in decimal, no leading zero (as the spec says).
    static func port(_ text: Span<UInt8>, _ range: Range<Int>) -> UInt16? {
        guard !range.isEmpty, range.count <= 5 else { return nil }
        guard text[range.lowerBound] != ASCII.zero || range.count == 1 else { return nil }
        var value = 0
        for index in range {
            let byte = text[index]
            guard ASCII.isDigit(byte) else { return nil }
            value = value * 10 + Int(byte &- ASCII.zero)
        }
        return value <= 65535 ? UInt16(value) : nil
    }
}

// MARK: Writing

/// Writes bytes from `at` on into a span whose bounds are checked on every store.
struct TextWriter {
    var at = 0

    mutating func put(_ byte: UInt8, _ out: inout MutableSpan<UInt8>) {
        out[at] = byte
        at += 1
    }

    mutating func put<let count: Int>(_ bytes: InlineArray<count, UInt8>, _ out: inout MutableSpan<UInt8>) {
        for index in bytes.indices { put(bytes[index], &out) }
    }

    /// `value` in network byte order (2 bytes).
    mutating func bigEndian(_ value: UInt16, _ out: inout MutableSpan<UInt8>) {
        put(UInt8(value >> 8), &out)
        put(UInt8(truncatingIfNeeded: value), &out)
    }

    /// `value` in decimal, no leading zero.
    mutating func decimal(_ value: UInt16, _ out: inout MutableSpan<UInt8>) {
        var digits = 1
        var rest = value / 10
        while rest > 0 { digits += 1; rest /= 10 }
        var remaining = value
        for index in stride(from: at + digits - 1, through: at, by: -1) {
            out[index] = ASCII.zero &+ UInt8(remaining % 10)
            remaining /= 10
        }
        at += digits
    }

    /// `value` in lowercase hexadecimal, no leading zero (RFC 5952 4.1).
    mutating func hex(_ value: UInt16, _ out: inout MutableSpan<UInt8>) {
        var shift: UInt16 = 12
        while shift > 0 && value >> shift == 0 { shift -= 4 }
        while true {
            put(ASCII.hexDigit(value >> shift & 0xf), &out)
            if shift == 0 { break }
            shift -= 4
        }
    }

    /// The first 4 bytes of `bytes` as a dotted quad: 7 to 15 bytes.
    mutating func ipv4(_ bytes: AddressBytes, from: Int = 0, _ out: inout MutableSpan<UInt8>) {
        for index in from..<from + 4 {
            if index > from { put(ASCII.dot, &out) }
            decimal(UInt16(bytes[index]), &out)
        }
    }

    /// An IPv6 address in RFC 5952's form: lowercase, no leading zeros, the longest run of two
    /// or more zero groups (the first of equal runs) as `::`; an IPv4-mapped address as
    /// `::ffff:a.b.c.d` (section 5). 2 to 39 bytes. This is glibc's inet_ntop but for the
    /// deprecated IPv4-compatible addresses (`::/96` but `::` and `::1`), which glibc
    /// writes `::1.2.3.4` and this writes `::102:304`; both read back the same.
    mutating func ipv6(_ bytes: AddressBytes, _ out: inout MutableSpan<UInt8>) {
        if bytes.isIPv4Mapped {
            put(ASCII.colon, &out)
            put(ASCII.colon, &out)
            hex(0xffff, &out)
            put(ASCII.colon, &out)
            ipv4(bytes, from: 12, &out)
            return
        }
        // The longest run of zero groups.
        var bestStart = -1
        var bestCount = 0
        var runStart = -1
        for group in 0..<8 {
            if bytes.group(group) == 0 {
                if runStart < 0 { runStart = group }
                if group - runStart + 1 > bestCount {
                    bestStart = runStart
                    bestCount = group - runStart + 1
                }
            } else {
                runStart = -1
            }
        }
        if bestCount < 2 { bestStart = -1; bestCount = 0 }  // `::` never stands for a single group (4.2.2)
        var group = 0
        while group < 8 {
            if group == bestStart {
                put(ASCII.colon, &out)
                put(ASCII.colon, &out)
                group += bestCount
                continue
            }
            if group > 0 && group != bestStart + bestCount { put(ASCII.colon, &out) }
            hex(bytes.group(group), &out)
            group += 1
        }
    }
}
