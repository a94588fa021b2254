import ProxyProtocol
import Testing
import UVLoop

/// One row of the table: bytes as a connection's first read, and what parse must make of them.
struct ParseCase: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    let expected: ProxyHeaderParse
    var testDescription: String { name }

    init(_ name: String, _ bytes: [UInt8], _ expected: ProxyHeaderParse) {
        self.name = name
        self.bytes = bytes
        self.expected = expected
    }

    /// A v1 line (the text, CRLF included) that parses to a proxied connection.
    static func v1(_ name: String, _ line: String, _ source: String, _ sourcePort: Int, _ destination: String, _ destinationPort: Int,
                   then data: String = "") -> ParseCase {
        ParseCase(name, ascii(line + data), proxy(.v1, source, sourcePort, destination, destinationPort, length: line.utf8.count))
    }

    static func failure(_ name: String, _ text: String, _ error: ProxyHeaderError) -> ParseCase {
        ParseCase(name, ascii(text), .failure(error))
    }

    static func failure(_ name: String, _ bytes: [UInt8], _ error: ProxyHeaderError) -> ParseCase {
        ParseCase(name, bytes, .failure(error))
    }
}

let tlvs: [UInt8] = [0x01, 0x00, 0x02] + ascii("h2")  // ALPN
    + [0x02, 0x00, 0x0B] + ascii("example.com")       // AUTHORITY
    + [0x04, 0x00, 0x03, 0x00, 0x00, 0x00]            // NOOP
let maximumUnknown = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
/// haproxy sending v2 for 172.19.0.1:42578 -> 172.19.0.3:80, then a request (a capture).
let capturedV2: [UInt8] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c,
    0xac, 0x13, 0x00, 0x01, 0xac, 0x13, 0x00, 0x03, 0xa6, 0x52, 0x00, 0x50,
] + ascii("GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n")

let parseTable: [ParseCase] = [
    // v1, valid
    .v1("v1 TCP4, the spec's example", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", "192.168.0.1", 56324, "192.168.0.11", 443),
    .v1("v1 TCP4, widest", "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "255.255.255.255", 65535, "255.255.255.255", 65535),
    .v1("v1 TCP4, zeros", "PROXY TCP4 0.0.0.0 10.0.0.1 0 0\r\n", "0.0.0.0", 0, "10.0.0.1", 0),
    .v1("v1 TCP4 followed by data", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "1.2.3.4", 1, "5.6.7.8", 2, then: "GET / HTTP/1.1\r\n\r\n"),
    .v1("v1 TCP6", "PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n", "2001:db8::1", 56324, "2001:db8::2", 443),
    .v1("v1 TCP6, loopback and any", "PROXY TCP6 ::1 :: 1 2\r\n", "::1", 1, "::", 2),
    .v1("v1 TCP6, upper case, leading zeros in groups, a dotted quad", "PROXY TCP6 2001:0DB8:0000::0001 ::ffff:10.0.0.1 1 65535\r\n",
        "2001:db8::1", 1, "::ffff:10.0.0.1", 65535),
    .v1("v1 TCP6, widest", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
    .v1("v1 TCP6 followed by data", "PROXY TCP6 fe80::1 fe80::2 3 4\r\n", "fe80::1", 3, "fe80::2", 4, then: "SSH-2.0-x\r\n"),
    ParseCase("v1 UNKNOWN", ascii("PROXY UNKNOWN\r\n"), local(.v1, length: 15)),
    ParseCase("v1 UNKNOWN followed by data", ascii("PROXY UNKNOWN\r\nHELO\r\n"), local(.v1, length: 15)),
    ParseCase("v1 UNKNOWN with anything before the CRLF", ascii("PROXY UNKNOWN whatever \r \n\r\n"), local(.v1, length: 28)),
    ParseCase("v1 UNKNOWN, 107 bytes exactly", ascii(maximumUnknown), local(.v1, length: 107)),
    // v1, failures
    .failure("v1 UNKNOWN, 108 bytes", "PROXY UNKNOWN " + String(repeating: "x", count: 92) + "\r\n", .length),
    .failure("v1, 107 bytes without CRLF", "PROXY UNKNOWN " + String(repeating: "x", count: 93), .length),
    .failure("v1 TCP4, 107 digits without CRLF", "PROXY TCP4 " + String(repeating: "1", count: 96), .length),
    .failure("v1 TCP6, 108 bytes with dotted quads", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
        + "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n", .length),
    .failure("GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", .notAHeader),
    .failure("POST", "POST / HTTP/1.1\r\n", .notAHeader),
    .failure("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", .notAHeader),
    .failure("TLS client hello", [0x16, 0x03, 0x01, 0x02, 0x00, 0x01], .notAHeader),
    .failure("PROXZ", "PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .signature),
    .failure("PROXY without its space", "PROXY\r\n", .signature),
    .failure("lower-case proxy", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .notAHeader),
    .failure("v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", .family),
    .failure("v1 UDP4", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", .family),
    .failure("v1 TCP44", "PROXY TCP44 1.2.3.4 5.6.7.8 1 2\r\n", .family),
    .failure("v1 lower-case tcp4", "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", .family),
    .failure("v1 UNKNOW", "PROXY UNKNOW\r\n", .family),
    .failure("v1 TCP4 without addresses", "PROXY TCP4\r\n", .text),
    .failure("v1, two spaces before the protocol", "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", .text),
    .failure("v1, two spaces between addresses", "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", .text),
    .failure("v1, a space before the CRLF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", .text),
    .failure("v1, three fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", .text),
    .failure("v1, five fields", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", .text),
    .failure("v1, nothing after the protocol", "PROXY TCP4 \r\n", .text),
    .failure("v1, an IPv4 octet with a leading zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", .text),
    .failure("v1, an IPv4 octet above 255", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", .text),
    .failure("v1, three octets", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", .text),
    .failure("v1, five octets", "PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", .text),
    .failure("v1, an empty octet", "PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n", .text),
    .failure("v1, a port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", .text),
    .failure("v1, port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", .text),
    .failure("v1, a six-digit port", "PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", .text),
    .failure("v1 TCP4 with IPv6 addresses", "PROXY TCP4 ::1 ::1 1 2\r\n", .text),
    .failure("v1 TCP4, a hex digit", "PROXY TCP4 1.2.3.a 5.6.7.8 1 2\r\n", .text),
    .failure("v1 TCP6 with IPv4 addresses", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", .text),
    .failure("v1 TCP6, one IPv4 address", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", .text),
    .failure("v1 TCP6, a zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", .text),
    .failure("v1 TCP6, brackets", "PROXY TCP6 [::1] [::2] 1 2\r\n", .text),
    .failure("v1 TCP6, two ::", "PROXY TCP6 1::2::3 ::2 1 2\r\n", .text),
    .failure("v1 TCP6, nine groups", "PROXY TCP6 1:2:3:4:5:6:7:8:9 ::2 1 2\r\n", .text),
    .failure("v1 TCP6, seven groups", "PROXY TCP6 1:2:3:4:5:6:7 ::2 1 2\r\n", .text),
    .failure("v1 TCP6, a five-digit group", "PROXY TCP6 12345::1 ::2 1 2\r\n", .text),
    .failure("v1 TCP6, a trailing colon", "PROXY TCP6 1:2:3:4:5:6:7:8: ::2 1 2\r\n", .text),
    .failure("v1 TCP6, a leading colon", "PROXY TCP6 :1:2:3:4:5:6:7:8 ::2 1 2\r\n", .text),
    .failure("v1, a bare LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", .text),
    .failure("v1, CR without LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", .text),
    .failure("v1, CR CR LF", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", .text),
    .failure("v1, a tab", "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", .text),
    // v2, valid
    ParseCase("v2 TCP4, captured from haproxy, followed by a request", capturedV2, proxy(.v2, "172.19.0.1", 42578, "172.19.0.3", 80, length: 28)),
    ParseCase("v2 TCP6", v2Proxy("2001:db8::1", 1234, "2001:db8::2", 443), proxy(.v2, "2001:db8::1", 1234, "2001:db8::2", 443, length: 52)),
    ParseCase("v2 TCP6 with TLVs", v2Proxy("2001:db8::1", 1234, "2001:db8::2", 443, tlvs: tlvs),
              proxy(.v2, "2001:db8::1", 1234, "2001:db8::2", 443, length: 52 + tlvs.count)),
    ParseCase("v2 TCP6 with TLVs not yet received", Array(v2Proxy("2001:db8::1", 1234, "2001:db8::2", 443, tlvs: tlvs)[0..<52]),
              proxy(.v2, "2001:db8::1", 1234, "2001:db8::2", 443, length: 52 + tlvs.count)),
    ParseCase("v2 TCP4, the largest length", v2(0x21, 0x11, length: 65535, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]),
              proxy(.v2, "1.2.3.4", 1, "5.6.7.8", 2, length: 16 + 65535)),
    ParseCase("v2 LOCAL", v2(0x20, 0x00), local(.v2, length: 16)),
    ParseCase("v2 LOCAL followed by data", v2(0x20, 0x00) + ascii("GET / HTTP/1.1\r\n"), local(.v2, length: 16)),
    ParseCase("v2 LOCAL with TCP4 addresses", v2Proxy("1.2.3.4", 1, "5.6.7.8", 2).enumerated().map { $0 == 12 ? 0x20 : $1 },
              local(.v2, length: 28)),
    ParseCase("v2 LOCAL, TCP4 and length 0", v2(0x20, 0x11), local(.v2, length: 16)),
    ParseCase("v2 LOCAL, an unassigned family", v2(0x20, 0x45, [1, 2, 3]), local(.v2, length: 19)),
    ParseCase("v2 PROXY UNSPEC", v2(0x21, 0x00), local(.v2, length: 16)),
    ParseCase("v2 PROXY UNSPEC with bytes", v2(0x21, 0x00, [1, 2, 3, 4]), local(.v2, length: 20)),
    ParseCase("v2 PROXY UNIX", v2(0x21, 0x31, ascii("/run/client.sock") + [UInt8](repeating: 0, count: 92) + ascii("/run/server.sock")
        + [UInt8](repeating: 0, count: 92)), local(.v2, length: 232)),
    ParseCase("v2 PROXY UNIX, addresses not yet received", v2(0x21, 0x31, length: 216), local(.v2, length: 232)),
    // v2, failures
    .failure("v2 signature, byte 7 changed", v2Proxy("1.2.3.4", 1, "5.6.7.8", 2).enumerated().map { $0 == 7 ? 0x52 : $1 }, .signature),
    .failure("v2 signature, NUL missing", [0x0D, 0x0A, 0x0D, 0x0A, 0x0D, 0x0A], .signature),
    .failure("CR LF then a request", "\r\nGET / HTTP/1.1\r\n", .notAHeader),
    .failure("v2 version 1", v2(0x11, 0x11, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]), .version),
    .failure("v2 version 3", v2(0x31, 0x11, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]), .version),
    .failure("v2 version 0", v2(0x01, 0x11), .version),
    .failure("v2 command 2", v2(0x22, 0x11, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]), .command),
    .failure("v2 command 15", v2(0x2F, 0x00), .command),
    .failure("v2 UDP over IPv4", v2(0x21, 0x12, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]), .family),
    .failure("v2 UDP over IPv6", v2(0x21, 0x22, [UInt8](repeating: 0, count: 36)), .family),
    .failure("v2 UNIX datagram", v2(0x21, 0x32, [UInt8](repeating: 0, count: 216)), .family),
    .failure("v2 IPv4, transport unspecified", v2(0x21, 0x10, [UInt8](repeating: 0, count: 12)), .family),
    .failure("v2 family unspecified over a stream", v2(0x21, 0x01), .family),
    .failure("v2 an unassigned family", v2(0x21, 0x41, [UInt8](repeating: 0, count: 12)), .family),
    .failure("v2 PROXY TCP4 with length 0", v2(0x21, 0x11), .length),
    .failure("v2 PROXY TCP4 with length 11", v2(0x21, 0x11, [UInt8](repeating: 1, count: 11)), .length),
    .failure("v2 PROXY TCP6 with length 35", v2(0x21, 0x21, [UInt8](repeating: 1, count: 35)), .length),
    .failure("v2 PROXY TCP6 with TCP4's length", v2(0x21, 0x21, addressBytes("1.2.3.4") + addressBytes("5.6.7.8") + [0, 1, 0, 2]), .length),
    .failure("v2 PROXY UNIX with length 215", v2(0x21, 0x31, [UInt8](repeating: 0, count: 215)), .length),
]

@Suite struct ProxyHeaderParseTests {
    @Test(arguments: parseTable)
    func wholeInput(_ row: ParseCase) {
        #expect(ProxyHeader.parse(row.bytes) == row.expected)
        // The RawSpan entry point says the same.
        #expect(ProxyHeader.parse(row.bytes.span.bytes) == row.expected)
    }

    /// Every prefix: needMore up to some length no larger than decisionBytes, then the whole
    /// input's result, unchanged by more bytes. A header needs exactly its line (v1), or its
    /// fixed part and addresses (v2), so every shorter prefix of a header is needMore.
    @Test(arguments: parseTable)
    func everyPrefix_needMoreThenTheWholeResult(_ row: ParseCase) {
        var decidedAt: Int? = nil
        for count in 0...row.bytes.count {
            let result = ProxyHeader.parse(Array(row.bytes[0..<count]))
            if result == .needMore {
                #expect(decidedAt == nil, "needMore with \(count) bytes after a decision with \(decidedAt ?? 0)")
                #expect(count < ProxyHeader.decisionBytes)
            } else {
                #expect(result == row.expected, "\(count) bytes: \(result)")
                if decidedAt == nil { decidedAt = count }
            }
        }
        guard case .header(let header) = row.expected, let decidedAt else { return }
        let needed = switch (header.version, header.command) {
        case (.v1, _): header.length
        case (.v2, .local): 16
        case (.v2, .proxy(let source, _)): source.kind == .ipv4 ? 28 : 52
        }
        #expect(decidedAt == needed)
        #expect(header.length >= needed)
    }

    @Test func v1SplitAfterSevenBytes_needMoreThenTheHeader() {
        let line = ascii("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
        var received = Array(line[0..<7])
        for count in 0...7 { #expect(ProxyHeader.parse(Array(received[0..<count])) == .needMore) }
        received += line[7...]
        #expect(ProxyHeader.parse(received) == proxy(.v1, "192.168.0.1", 56324, "192.168.0.11", 443, length: line.count))
    }

    @Test func truncatedV2_needMoreUntilTheAddresses() {
        for (header, needed) in [(v2Proxy("1.2.3.4", 1, "5.6.7.8", 2, tlvs: tlvs), 28), (v2Proxy("::1", 1, "::2", 2, tlvs: tlvs), 52),
                                 (v2(0x20, 0x00), 16), (v2(0x21, 0x31, length: 216), 16)] {
            for count in 0..<needed { #expect(ProxyHeader.parse(Array(header[0..<count])) == .needMore, "\(count) of \(needed)") }
            #expect(ProxyHeader.parse(Array(header[0..<needed])) != .needMore)
        }
    }

    /// A signature with one byte changed: no header at all in the first 4 bytes (a client
    /// that sent something else), a broken one from the fifth on.
    @Test func signatureWithOneByteChanged() {
        let headers = [v2Proxy("1.2.3.4", 1, "5.6.7.8", 2), ascii("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")]
        for header in headers {
            let signatureLength = header[0] == 0x0D ? 12 : 6
            for index in 0..<signatureLength {
                var changed = header
                changed[index] ^= 0x40
                let expected: ProxyHeaderError = index < 4 ? .notAHeader : .signature
                #expect(ProxyHeader.parse(changed) == .failure(expected), "byte \(index) of \(header[0] == 0x0D ? "v2" : "v1")")
                #expect(ProxyHeader.parse(Array(changed[0...index])) == .failure(expected), "only up to byte \(index)")
            }
        }
    }

    @Test func emptyInput_needMore() {
        #expect(ProxyHeader.parse([]) == .needMore)
        #expect(ProxyHeader.parse(ascii("P")) == .needMore)
        #expect(ProxyHeader.parse([0x0D]) == .needMore)
    }

    @Test func errorNames() {
        #expect(ProxyHeaderError.notAHeader.rawValue == "not_a_header")
        #expect(ProxyHeaderError.allCases.map(\.rawValue) == ["not_a_header", "signature", "version", "command", "family", "length", "text"])
    }

    /// Random bytes after each table row's start, and fully random ones: never needMore with
    /// decisionBytes or more, and every prefix needMore or the whole input's result.
    @Test func randomInputs_decideWithinDecisionBytes_andPrefixesAgree() {
        var generator = SplitMix(seed: 0x5eed)
        let starts = parseTable.map { Array($0.bytes.prefix(Int(generator.next() % 40))) } + [[]]
        for _ in 0..<3000 {
            var bytes = starts[Int(generator.next() % UInt64(starts.count))]
            let alphabet = ascii("PROXY TCP46UNKOW0123456789abcdef.:\r\n ")
            while bytes.count < 120 {
                bytes.append(generator.next() % 2 == 0 ? UInt8(truncatingIfNeeded: generator.next()) : alphabet[Int(generator.next() % UInt64(alphabet.count))])
            }
            let whole = ProxyHeader.parse(bytes)
            #expect(whole != .needMore)
            for count in stride(from: 0, through: ProxyHeader.decisionBytes, by: 1) {
                let result = ProxyHeader.parse(bytes.span.extracting(0..<count))
                if result != .needMore && result != whole {
                    Issue.record("\(bytes): \(count) bytes give \(result), all \(whole)")
                    return
                }
            }
        }
    }
}

/// A small deterministic generator (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
