import UVLoop

extension ProxyHeader {
    /// Writes a PROXY header for a proxied TCP connection into `buffer`; returns its length.
    /// Precondition: buffer.count >= maximumEncodedLength. No heap allocation: the text is
    /// written digit by digit, straight into `buffer`.
    ///
    /// `source` is the client, `destination` the address it connected to (this server's).
    /// - Both IPv4: v1 `PROXY TCP4 a.b.c.d e.f.g.h SPORT DPORT\r\n`, v2 PROXY TCP4 (28 bytes).
    /// - Both IPv6, or one of each: v1 `PROXY TCP6 ...`, v2 PROXY TCP6 (52 bytes), an IPv4
    ///   address written as its IPv4-mapped IPv6 address `::ffff:a.b.c.d`. haproxy's
    ///   make_proxy_line_v1 and make_proxy_line_v2 do the same with a mixed pair (v4tov6), so
    ///   a receiver sees what haproxy would send it; parse then returns both addresses as
    ///   IPv6, the IPv4 one mapped.
    /// - Either address missing (kind `.none`): what haproxy sends when it has no addresses,
    ///   v1 `PROXY UNKNOWN\r\n` and v2 LOCAL, the same as `encodeLocal`: the receiver uses
    ///   the connection's own addresses.
    ///
    /// v1 IPv6 text is RFC 5952's: lowercase, no leading zeros, the longest run of two or more
    /// zero groups as `::`, an IPv4-mapped address as `::ffff:1.2.3.4`; what glibc's inet_ntop
    /// (haproxy's writer) gives, and what nginx's, haproxy's and inet_pton's readers take.
    /// v2 carries no TLVs.
    public static func encode(_ version: ProxyProtocolVersion, source: RawSocketAddress, destination: RawSocketAddress,
                              into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= maximumEncodedLength,
                     "ProxyHeader.encode: buffer of \(buffer.count) bytes (expected: at least maximumEncodedLength, \(maximumEncodedLength))")
        guard source.kind != .none && destination.kind != .none else {
            // Safe: the caller's buffer, passed on as it came, for the length of this call.
            return unsafe encodeLocal(version, into: buffer)
        }
        // Safe: the caller's buffer is valid and writable for this call, and nothing else writes
        // it meanwhile; the span has its bounds, so every store below is bounds-checked, and it
        // does not outlive the call.
        var raw = unsafe buffer.mutableBytes
        // Safe: UInt8 has no invalid bit pattern and an alignment of 1.
        var out = unsafe raw._unsafeMutableView(as: UInt8.self)
        let ipv4 = source.kind == .ipv4 && destination.kind == .ipv4
        let sourceBytes = ipv4 ? AddressBytes(source) : AddressBytes.ipv6(source)
        let destinationBytes = ipv4 ? AddressBytes(destination) : AddressBytes.ipv6(destination)
        var writer = TextWriter()
        switch version {
        case .v1:
            writer.put(Wire.v1Signature, &out)
            writer.put(ipv4 ? Wire.tcp4 : Wire.tcp6, &out)
            writer.put(ASCII.space, &out)
            if ipv4 { writer.ipv4(sourceBytes, &out) } else { writer.ipv6(sourceBytes, &out) }
            writer.put(ASCII.space, &out)
            if ipv4 { writer.ipv4(destinationBytes, &out) } else { writer.ipv6(destinationBytes, &out) }
            writer.put(ASCII.space, &out)
            writer.decimal(source.port, &out)
            writer.put(ASCII.space, &out)
            writer.decimal(destination.port, &out)
            writer.put(ASCII.cr, &out)
            writer.put(ASCII.lf, &out)
        case .v2:
            let size = ipv4 ? 4 : 16
            let addressLength = ipv4 ? Wire.v2AddressLengthTCP4 : Wire.v2AddressLengthTCP6
            writer.put(Wire.v2Signature, &out)
            writer.put(Wire.v2Version << 4 | Wire.v2CommandProxy, &out)
            writer.put(ipv4 ? Wire.v2FamilyTCP4 : Wire.v2FamilyTCP6, &out)
            writer.bigEndian(UInt16(addressLength), &out)
            for index in 0..<size { writer.put(sourceBytes[index], &out) }
            for index in 0..<size { writer.put(destinationBytes[index], &out) }
            writer.bigEndian(source.port, &out)
            writer.bigEndian(destination.port, &out)
        }
        return writer.at
    }

    /// The header a health check sends: v2 LOCAL, or v1 "PROXY UNKNOWN\r\n".
    /// Precondition: buffer.count >= maximumEncodedLength (as `encode`).
    public static func encodeLocal(_ version: ProxyProtocolVersion, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(buffer.count >= maximumEncodedLength,
                     "ProxyHeader.encodeLocal: buffer of \(buffer.count) bytes (expected: at least maximumEncodedLength, \(maximumEncodedLength))")
        // Safe: as in `encode`: the caller's buffer, valid for the call, bounds-checked stores.
        var raw = unsafe buffer.mutableBytes
        // Safe: UInt8 has no invalid bit pattern and an alignment of 1.
        var out = unsafe raw._unsafeMutableView(as: UInt8.self)
        var writer = TextWriter()
        switch version {
        case .v1:
            writer.put(Wire.v1Signature, &out)
            writer.put(Wire.unknown, &out)
            writer.put(ASCII.cr, &out)
            writer.put(ASCII.lf, &out)
        case .v2:
            // LOCAL, family and transport UNSPEC, no addresses (the spec's advice for LOCAL).
            writer.put(Wire.v2Signature, &out)
            writer.put(Wire.v2Version << 4 | Wire.v2CommandLocal, &out)
            writer.put(Wire.v2FamilyUnspec, &out)
            writer.put(0, &out)
            writer.put(0, &out)
        }
        return writer.at
    }
}
