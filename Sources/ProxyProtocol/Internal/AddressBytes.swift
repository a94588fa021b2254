import UVLoop

/// An address's 16 bytes in network order, by index, whatever the host's byte order.
///
/// RawSocketAddress keeps byte i of the address as byte i of `high` (i < 8) or of `low`
/// (i >= 8) *in memory order*; here byte i sits at bits 8i..<8i+8 of `first` or `second`, the
/// little-endian reading of those words, so that a shift reaches it on any host.
struct AddressBytes: Equatable {
    /// Bytes 0..<8, byte i at bits 8i..<8i+8.
    var first: UInt64 = 0
    /// Bytes 8..<16, byte 8+i at bits 8i..<8i+8.
    var second: UInt64 = 0

    init() {}

    /// The bytes of `address` (an IPv4 address in bytes 0..<4, the rest zero).
    init(_ address: RawSocketAddress) {
        first = address.high.littleEndian
        second = address.low.littleEndian
    }

    subscript(index: Int) -> UInt8 {
        get {
            let shift = UInt64(8 * (index & 7))
            return UInt8(truncatingIfNeeded: (index < 8 ? first : second) >> shift)
        }
        set {
            let shift = UInt64(8 * (index & 7))
            let mask = ~(UInt64(0xff) << shift)
            let bits = UInt64(newValue) << shift
            if index < 8 { first = first & mask | bits } else { second = second & mask | bits }
        }
    }

    /// The 16-bit group `index` (0..<8) of an IPv6 address, in host order.
    func group(_ index: Int) -> UInt16 {
        UInt16(self[2 * index]) << 8 | UInt16(self[2 * index + 1])
    }

    /// The address with these bytes.
    func address(_ kind: RawSocketAddress.Kind, port: UInt16) -> RawSocketAddress {
        RawSocketAddress(kind: kind, port: port, high: UInt64(littleEndian: first), low: UInt64(littleEndian: second))
    }

    /// The IPv6 form of an address: itself when IPv6; the IPv4-mapped `::ffff:a.b.c.d`
    /// (RFC 4291 2.5.5.2) of an IPv4 address, as haproxy's v4tov6 makes it.
    static func ipv6(_ address: RawSocketAddress) -> AddressBytes {
        let bytes = AddressBytes(address)
        guard address.kind == .ipv4 else { return bytes }
        var mapped = AddressBytes()
        mapped.second = 0xffff_0000 | (bytes.first & 0xffff_ffff) << 32  // bytes 10, 11 = 0xff; 12..<16 = the IPv4 address
        return mapped
    }

    /// Whether the address is IPv4-mapped (`::ffff:0:0/96`).
    var isIPv4Mapped: Bool { first == 0 && second & 0xffff_ffff == 0xffff_0000 }
}
