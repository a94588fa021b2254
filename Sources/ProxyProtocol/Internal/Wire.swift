/// The protocol's fixed bytes (doc/proxy-protocol.txt, sections 2.1 and 2.2).
enum Wire {
    /// v1: "PROXY ".
    static let v1Signature: InlineArray<6, UInt8> = [0x50, 0x52, 0x4F, 0x58, 0x59, 0x20]
    /// v1 protocols: "TCP4", "TCP6", "UNKNOWN".
    static let tcp4: InlineArray<4, UInt8> = [0x54, 0x43, 0x50, 0x34]
    static let tcp6: InlineArray<4, UInt8> = [0x54, 0x43, 0x50, 0x36]
    static let unknown: InlineArray<7, UInt8> = [0x55, 0x4E, 0x4B, 0x4E, 0x4F, 0x57, 0x4E]
    /// v1: where the first address starts in a TCP4 or TCP6 line ("PROXY TCP4 ").
    static let v1AddressesStart = 11
    /// v1: where the rest of an UNKNOWN line starts ("PROXY UNKNOWN").
    static let v1UnknownRestStart = 13

    /// v2: the 12-byte signature (a NUL in its fifth byte: never a C string).
    static let v2Signature: InlineArray<12, UInt8> = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    /// v2: signature, version and command, family and transport, length.
    static let v2FixedLength = 16
    /// v2, 13th byte: version 2 in the high nibble, the command in the low one.
    static let v2Version: UInt8 = 0x2
    static let v2CommandLocal: UInt8 = 0x0
    static let v2CommandProxy: UInt8 = 0x1
    /// v2, 14th byte: address family in the high nibble, transport in the low one.
    static let v2FamilyUnspec: UInt8 = 0x00
    static let v2FamilyTCP4: UInt8 = 0x11
    static let v2FamilyTCP6: UInt8 = 0x21
    static let v2FamilyUnixStream: UInt8 = 0x31
    /// v2: the address block's length for each family.
    static let v2AddressLengthTCP4 = 12
    static let v2AddressLengthTCP6 = 36
    static let v2AddressLengthUnix = 216

    /// How many bytes of a signature a connection's first bytes must match to count as a
    /// header gone wrong (`.signature`) rather than no header at all (`.notAHeader`): "PROX",
    /// or the v2 signature's "\r\n\r\n". Fewer would call `POST`, `PUT` or HTTP/2's `PRI *`
    /// a broken PROXY header.
    static let signatureCommitment = 4
}
