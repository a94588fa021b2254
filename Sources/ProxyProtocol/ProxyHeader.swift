// The PROXY protocol, versions 1 (text) and 2 (binary), as haproxy's doc/proxy-protocol.txt
// defines it: the header a proxy puts before a relayed connection's first byte to pass on the
// client's address. `parse` reads one (ProxyHeader+Parse.swift), `encode` writes one
// (ProxyHeader+Encode.swift); neither allocates.
import UVLoop

/// The two versions of the header: v1 a line of text, v2 binary.
public enum ProxyProtocolVersion: String, Sendable, CaseIterable {
    case v1, v2
}

/// A PROXY protocol header, read from the start of a connection or to be written there.
public struct ProxyHeader: Sendable, Equatable {
    public enum Command: Sendable, Equatable {
        /// Use the connection's real addresses. What `parse` returns for a v2 LOCAL header
        /// (whatever its family), a v1 UNKNOWN line, and a v2 PROXY header whose family is
        /// UNSPEC (the sender knows no address) or UNIX (the addresses are socket paths, which
        /// mean nothing to a TCP receiver; they are skipped, their 216 bytes counted in `length`).
        case local
        /// The relayed connection's client (`source`) and the address it connected to
        /// (`destination`): both IPv4 (TCP4) or both IPv6 (TCP6), as on the wire. An IPv4
        /// client relayed in a TCP6 header (haproxy does that for a mixed pair) stays the
        /// IPv4-mapped IPv6 address `::ffff:a.b.c.d`: `parse` does not unmap it.
        case proxy(source: RawSocketAddress, destination: RawSocketAddress)
    }

    public var version: ProxyProtocolVersion
    public var command: Command
    /// The header's whole length on the wire, v2 TLVs included. May be larger than the bytes
    /// parse() was given (v2 TLVs not yet received): the caller discards the rest as it arrives.
    public var length: Int

    public init(version: ProxyProtocolVersion, command: Command, length: Int) {
        self.version = version
        self.command = command
        self.length = length
    }

    /// The most bytes parse() needs to decide: 108 (a v1 header is at most 107 bytes; a v2 header's
    /// fixed part and TCP6 addresses are 52).
    public static let decisionBytes = 108
    /// The most bytes encode writes (a v1 TCP6 header at full length, 104).
    public static let maximumEncodedLength: Int = 104

    /// The longest v1 line, CRLF included (`PROXY UNKNOWN` and two 39-character IPv6 addresses).
    public static let maximumV1Length = 107
    /// The longest v2 header: the 16 fixed bytes and the most its 16-bit length can add.
    public static let maximumV2Length = 16 + 65535
}

/// Why bytes are not a PROXY header. The raw value is a short name for logs and metrics.
public enum ProxyHeaderError: String, Sendable, CaseIterable {
    /// The first bytes are not those of a header at all: they differ from both "PROXY " and the
    /// v2 signature within their first 4 bytes (`GET /`, `POST`, HTTP/2's `PRI *`, TLS, ...).
    /// A client that speaks its protocol without a header.
    case notAHeader = "not_a_header"
    /// Started like a header (the first 4 bytes of "PROXY " or of the v2 signature) and then
    /// differed before the signature's end: `PROXZ`, `PROXY` without its space, a v2
    /// signature with a byte changed from the fifth on.
    case signature
    /// v2: the version nibble of the 13th byte is not 2.
    case version
    /// v2: the command nibble of the 13th byte is neither LOCAL (0) nor PROXY (1).
    case command
    /// v2 PROXY: a family and transport other than UNSPEC (0x00), TCP over IPv4 (0x11), TCP
    /// over IPv6 (0x21) or a UNIX stream (0x31); UDP (0x12, 0x22) and UNIX datagrams (0x32)
    /// included, which mean nothing on a TCP connection. v1: a protocol other than TCP4,
    /// TCP6 or UNKNOWN (`PROXY TCP5 ...`, `PROXY UDP4 ...`).
    case family
    /// v2: a length shorter than its family's addresses (TCP4 12, TCP6 36, UNIX 216). v1: no
    /// CRLF within the first 107 bytes.
    case length
    /// v1: a malformed TCP4 or TCP6 line: other than exactly one space between the four
    /// fields; an address that is not one of the line's family (an IPv6 address after TCP4,
    /// dotted IPv4 after TCP6); an IPv4 address or a port with a leading zero (the spec
    /// forbids them, "to avoid any possible confusion with octal numbers"); a port above
    /// 65535; a byte no address or port has; a CR not followed by LF; a bare LF.
    case text
}

/// What `ProxyHeader.parse` makes of a connection's first bytes.
public enum ProxyHeaderParse: Sendable, Equatable {
    /// A valid prefix so far; give more bytes (never with >= decisionBytes bytes).
    case needMore
    case header(ProxyHeader)
    case failure(ProxyHeaderError)
}
