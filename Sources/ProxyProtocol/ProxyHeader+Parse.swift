import UVLoop

extension ProxyHeader {
    /// Parses the start of a connection's bytes (everything received so far, from the first byte).
    ///
    /// Tolerant of a header arriving in pieces, as the spec recommends: `.needMore` while the
    /// bytes are a valid prefix of a header and too few to decide, which never happens with
    /// `decisionBytes` or more. Strict otherwise: a failure as soon as the bytes received
    /// cannot begin a header. A decision depends only on the bytes it needed, so more bytes
    /// never change it: for any prefix of `bytes`, `parse(prefix)` is `.needMore` or the same
    /// result as `parse(bytes)`.
    ///
    /// v1: "PROXY ", then "TCP4 " or "TCP6 " and four fields with single spaces, a CRLF within
    /// the first 107 bytes; "UNKNOWN" and anything up to a CRLF (the spec: "the receiver must
    /// ignore anything presented before the CRLF") is `.local`. Nothing is decoded before the
    /// CRLF (the spec again), but a byte no TCP4 (digits, dots) or TCP6 (hex digits, colons,
    /// dots) line can hold fails at once. Addresses are read as glibc's inet_pton reads them:
    /// for IPv4 that is the spec's rule, four decimals without leading zeros (`01.2.3.4` is
    /// refused, as by inet_pton; haproxy's own readers, inetaddr_host_lim_ret and read_uint,
    /// check neither leading zeros nor ranges, but no sender writes them); IPv6 groups of 1 to 4
    /// hex digits in either case, leading zeros allowed (`2001:0db8::0001`), one `::`, a
    /// dotted quad at the end (`::ffff:1.2.3.4`), no zone. Ports are 0 to 65535 without a
    /// leading zero. See `ProxyHeaderError` for which failure is which.
    ///
    /// v2: the signature, version 2, LOCAL (`.local` whatever the family and length) or PROXY
    /// with TCP4, TCP6, UNSPEC or UNIX over a stream (UNSPEC and UNIX are `.local`), the
    /// length, the addresses. TLVs are skipped by the length, which `length` covers, and need
    /// not have arrived. haproxy's receiver takes the other families and transports (UDP, UNIX
    /// datagrams, unassigned values) as UNSPEC; this one refuses them (`.family`): a TCP
    /// connection relayed as UDP is a broken sender.
    public static func parse(_ bytes: RawSpan) -> ProxyHeaderParse {
        // Safe: UInt8 has no invalid bit pattern and an alignment of 1, so any bytes are a
        // Span<UInt8>; the view has the RawSpan's own bounds and lifetime.
        parse(unsafe bytes._unsafeView(as: UInt8.self))
    }

    /// `parse` on bytes already seen as UInt8.
    public static func parse(_ bytes: Span<UInt8>) -> ProxyHeaderParse {
        guard !bytes.isEmpty else { return .needMore }
        return bytes[0] == Wire.v2Signature[0] ? parseV2(bytes) : parseV1(bytes)
    }

    /// `parse` on an array (tests, tools).
    public static func parse(_ bytes: [UInt8]) -> ProxyHeaderParse {
        parse(bytes.span)
    }

    // MARK: v1

    private static func parseV1(_ bytes: Span<UInt8>) -> ProxyHeaderParse {
        if let failure = compareSignature(bytes, Wire.v1Signature) { return .failure(failure) }
        guard bytes.count > Wire.v1Signature.count else { return .needMore }
        switch v1Protocol(bytes) {
        case .needMore: return .needMore
        case .failure(let error): return .failure(error)
        case .unknown: return v1Unknown(bytes)
        case .tcp4: return v1TCP(bytes, version6: false)
        case .tcp6: return v1TCP(bytes, version6: true)
        }
    }

    private enum V1Protocol { case needMore, failure(ProxyHeaderError), unknown, tcp4, tcp6 }

    /// The word after "PROXY ": TCP4 and TCP6 must be followed by a space (anything else that
    /// ends a word, CR or LF, is `.text`: `PROXY TCP4\r\n` has no addresses); UNKNOWN by
    /// anything. A word that cannot become one of them is `.family` as soon as it differs.
    private static func v1Protocol(_ bytes: Span<UInt8>) -> V1Protocol {
        let start = Wire.v1Signature.count
        var tcp4 = true, tcp6 = true, unknown = true  // what the word can still be
        var index = start
        while index < bytes.count {
            let byte = bytes[index]
            let offset = index - start
            if unknown && offset == Wire.unknown.count { return .unknown }
            if byte == ASCII.space || byte == ASCII.cr || byte == ASCII.lf {
                if offset == 0 { return .failure(.text) }  // two spaces, or no protocol
                if offset == Wire.tcp4.count && (tcp4 || tcp6) { return byte == ASCII.space ? (tcp4 ? .tcp4 : .tcp6) : .failure(.text) }
                return .failure(.family)
            }
            tcp4 = tcp4 && offset < Wire.tcp4.count && byte == Wire.tcp4[offset]
            tcp6 = tcp6 && offset < Wire.tcp6.count && byte == Wire.tcp6[offset]
            unknown = unknown && offset < Wire.unknown.count && byte == Wire.unknown[offset]
            if !(tcp4 || tcp6 || unknown) { return .failure(.family) }
            index += 1
        }
        if unknown && index - start == Wire.unknown.count { return .unknown }
        return .needMore
    }

    /// "PROXY UNKNOWN" and anything up to a CRLF.
    private static func v1Unknown(_ bytes: Span<UInt8>) -> ProxyHeaderParse {
        // The CR may be at most at 105: the LF at 106 ends a line of 107 bytes.
        let lastCR = maximumV1Length - 2
        var index = Wire.v1UnknownRestStart
        while index <= lastCR && index + 1 < bytes.count {
            if bytes[index] == ASCII.cr && bytes[index + 1] == ASCII.lf {
                return .header(ProxyHeader(version: .v1, command: .local, length: index + 2))
            }
            index += 1
        }
        return bytes.count >= maximumV1Length ? .failure(.length) : .needMore
    }

    /// "PROXY TCP4 " or "PROXY TCP6 ", then SRC DST SPORT DPORT and a CRLF.
    private static func v1TCP(_ bytes: Span<UInt8>, version6: Bool) -> ProxyHeaderParse {
        // Find the CR, failing at the first byte such a line cannot hold.
        let lastCR = maximumV1Length - 2
        var lineEnd = -1
        var index = Wire.v1AddressesStart
        while index < min(bytes.count, maximumV1Length) {
            let byte = bytes[index]
            if byte == ASCII.cr {
                guard index <= lastCR else { return .failure(.length) }
                guard index + 1 < bytes.count else { return .needMore }
                guard bytes[index + 1] == ASCII.lf else { return .failure(.text) }
                lineEnd = index
                break
            }
            let allowed = ASCII.isDigit(byte) || byte == ASCII.dot || byte == ASCII.space
                || version6 && (byte == ASCII.colon || ASCII.hexValue(byte) != nil)
            guard allowed else { return .failure(.text) }
            index += 1
        }
        guard lineEnd >= 0 else { return bytes.count >= maximumV1Length ? .failure(.length) : .needMore }

        // Four fields, one space between each.
        var fields: (Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (0..<0, 0..<0, 0..<0, 0..<0)
        var count = 0
        var fieldStart = Wire.v1AddressesStart
        for at in Wire.v1AddressesStart...lineEnd where at == lineEnd || bytes[at] == ASCII.space {
            let field = fieldStart..<at
            guard !field.isEmpty else { return .failure(.text) }
            switch count {
            case 0: fields.0 = field
            case 1: fields.1 = field
            case 2: fields.2 = field
            case 3: fields.3 = field
            default: return .failure(.text)
            }
            count += 1
            fieldStart = at + 1
        }
        guard count == 4 else { return .failure(.text) }

        let read = version6 ? AddressText.ipv6 : AddressText.ipv4
        guard let source = read(bytes, fields.0), let destination = read(bytes, fields.1),
              let sourcePort = AddressText.port(bytes, fields.2), let destinationPort = AddressText.port(bytes, fields.3) else {
            return .failure(.text)
        }
        let kind: RawSocketAddress.Kind = version6 ? .ipv6 : .ipv4
        return .header(ProxyHeader(version: .v1, command: .proxy(source: source.address(kind, port: sourcePort),
                                                                   destination: destination.address(kind, port: destinationPort)),
                                   length: lineEnd + 2))
    }

    // MARK: v2

    private static func parseV2(_ bytes: Span<UInt8>) -> ProxyHeaderParse {
        if let failure = compareSignature(bytes, Wire.v2Signature) { return .failure(failure) }
        let versionCommand = 12, family = 13, lengthHigh = 14, lengthLow = 15
        guard bytes.count > versionCommand else { return .needMore }
        guard bytes[versionCommand] >> 4 == Wire.v2Version else { return .failure(.version) }
        let command = bytes[versionCommand] & 0x0f
        guard command == Wire.v2CommandLocal || command == Wire.v2CommandProxy else { return .failure(.command) }
        guard bytes.count > family else { return .needMore }
        // LOCAL: the family is to be ignored, with the addresses.
        let addressLength: Int
        switch bytes[family] {
        case _ where command == Wire.v2CommandLocal: addressLength = 0
        case Wire.v2FamilyUnspec: addressLength = 0
        case Wire.v2FamilyTCP4: addressLength = Wire.v2AddressLengthTCP4
        case Wire.v2FamilyTCP6: addressLength = Wire.v2AddressLengthTCP6
        case Wire.v2FamilyUnixStream: addressLength = Wire.v2AddressLengthUnix
        default: return .failure(.family)
        }
        guard bytes.count >= Wire.v2FixedLength else { return .needMore }
        let declared = Int(bytes[lengthHigh]) << 8 | Int(bytes[lengthLow])
        guard declared >= addressLength else { return .failure(.length) }
        let length = Wire.v2FixedLength + declared
        guard command == Wire.v2CommandProxy, bytes[family] == Wire.v2FamilyTCP4 || bytes[family] == Wire.v2FamilyTCP6 else {
            return .header(ProxyHeader(version: .v2, command: .local, length: length))  // LOCAL, UNSPEC, UNIX
        }
        guard bytes.count >= Wire.v2FixedLength + addressLength else { return .needMore }

        // Source address, destination address, source port, destination port.
        let size = bytes[family] == Wire.v2FamilyTCP4 ? 4 : 16
        let kind: RawSocketAddress.Kind = size == 4 ? .ipv4 : .ipv6
        var source = AddressBytes(), destination = AddressBytes()
        for index in 0..<size {
            source[index] = bytes[Wire.v2FixedLength + index]
            destination[index] = bytes[Wire.v2FixedLength + size + index]
        }
        let ports = Wire.v2FixedLength + 2 * size
        let sourcePort = UInt16(bytes[ports]) << 8 | UInt16(bytes[ports + 1])
        let destinationPort = UInt16(bytes[ports + 2]) << 8 | UInt16(bytes[ports + 3])
        return .header(ProxyHeader(version: .v2, command: .proxy(source: source.address(kind, port: sourcePort),
                                                                   destination: destination.address(kind, port: destinationPort)),
                                   length: length))
    }

    // MARK: Both

    /// The failure for bytes that differ from `signature` where both have bytes; nil when
    /// they agree so far.
    private static func compareSignature<let count: Int>(_ bytes: Span<UInt8>, _ signature: InlineArray<count, UInt8>) -> ProxyHeaderError? {
        for index in 0..<min(bytes.count, count) where bytes[index] != signature[index] {
            return index < Wire.signatureCommitment ? .notAHeader : .signature
        }
        return nil
    }
}
