import ProxyProtocol
import Testing
import UVLoop

@Suite struct ProxyHeaderEncodeTests {
    // MARK: Exact bytes

    @Test func v1TCP4_theSpecsExample() {
        #expect(encoded(.v1, address("192.168.0.1", 56324), address("192.168.0.11", 443)) == ascii("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"))
        #expect(encoded(.v1, address("0.0.0.0", 0), address("255.255.255.255", 65535)) == ascii("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"))
    }

    @Test func v1TCP6() {
        #expect(encoded(.v1, address("2001:db8::1", 56324), address("2001:db8::2", 443)) == ascii("PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n"))
    }

    /// The spec's longest TCP6 line is maximumEncodedLength.
    @Test func v1TCP6_widest_isMaximumEncodedLength() {
        let widest = address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
        let line = encoded(.v1, widest, widest)
        #expect(line == ascii("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"))
        #expect(line.count == ProxyHeader.maximumEncodedLength)
    }

    /// An IPv4 address beside an IPv6 one goes as its IPv4-mapped IPv6 address, in a TCP6
    /// line or header, as haproxy sends it.
    @Test func mixedFamilies_TCP6WithTheIPv4AddressMapped() {
        #expect(encoded(.v1, address("1.2.3.4", 1), address("::1", 2)) == ascii("PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"))
        #expect(encoded(.v1, address("2001:db8::1", 1), address("10.0.0.1", 2)) == ascii("PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 2\r\n"))
        #expect(encoded(.v2, address("1.2.3.4", 1), address("::1", 2)) == v2Proxy("::ffff:1.2.3.4", 1, "::1", 2))
    }

    @Test func v2TCP4_asHaproxySendsIt() {
        #expect(encoded(.v2, address("172.19.0.1", 42578), address("172.19.0.3", 80)) == Array(capturedV2[0..<28]))
    }

    @Test func v2TCP6() {
        let header = encoded(.v2, address("2001:db8::1", 1234), address("2001:db8::2", 443))
        #expect(header == v2Signature + [0x21, 0x21, 0x00, 0x24]
            + [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]
            + [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02]
            + [0x04, 0xd2, 0x01, 0xbb])
    }

    @Test func local() {
        #expect(encodedLocal(.v1) == ascii("PROXY UNKNOWN\r\n"))
        #expect(encodedLocal(.v2) == v2Signature + [0x20, 0x00, 0x00, 0x00])
        for version in ProxyProtocolVersion.allCases {
            #expect(ProxyHeader.parse(encodedLocal(version)) == .header(ProxyHeader(version: version, command: .local, length: encodedLocal(version).count)))
        }
    }

    /// No address on either side: the local header, as haproxy sends without addresses.
    @Test func noAddress_theLocalHeader() {
        for version in ProxyProtocolVersion.allCases {
            #expect(encoded(version, RawSocketAddress(), address("1.2.3.4", 1)) == encodedLocal(version))
            #expect(encoded(version, address("::1", 1), RawSocketAddress()) == encodedLocal(version))
        }
    }

    /// RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups
    /// (the first of equal runs) as `::`, IPv4-mapped addresses with a dotted quad.
    @Test(arguments: [
        ("2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ("0:0:1::", "0:0:1::"),
        ("2001:db8::", "2001:db8::"),
        ("1::", "1::"),
        ("::", "::"),
        ("::1", "::1"),
        ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"),
        ("ABCD:EF01::10", "abcd:ef01::10"),
        ("fe80::a00:27ff:fe4e:66a1", "fe80::a00:27ff:fe4e:66a1"),
        ("0:0:0:0:0:ffff:102:304", "::ffff:1.2.3.4"),
        ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),
        ("::ffff:255.255.255.255", "::ffff:255.255.255.255"),
        ("::fffe:1.2.3.4", "::fffe:102:304"),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
    ])
    func v1IPv6Text(_ host: String, _ text: String) {
        #expect(encoded(.v1, address(host, 1), address("::1", 2)) == ascii("PROXY TCP6 \(text) ::1 1 2\r\n"))
    }

    // MARK: Round trips

    @Test(arguments: ProxyProtocolVersion.allCases, [
        ("1.2.3.4", 1, "5.6.7.8", 2),
        ("0.0.0.0", 0, "255.255.255.255", 65535),
        ("::1", 40000, "2001:db8::1", 443),
        ("::ffff:1.2.3.4", 5, "::", 6),
        ("fe80::1", 65535, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 0),
    ])
    func roundTrip_sameAddresses(_ version: ProxyProtocolVersion, _ pair: (String, Int, String, Int)) {
        let source = address(pair.0, pair.1), destination = address(pair.2, pair.3)
        let header = encoded(version, source, destination)
        #expect(ProxyHeader.parse(header) == .header(ProxyHeader(version: version, command: .proxy(source: source, destination: destination),
                                                                 length: header.count)))
    }

    /// A mixed pair comes back as two IPv6 addresses, the IPv4 one mapped.
    @Test(arguments: ProxyProtocolVersion.allCases)
    func roundTrip_mixedFamilies_IPv4Mapped(_ version: ProxyProtocolVersion) {
        let pairs = [(address("1.2.3.4", 1), address("::1", 2), address("::ffff:1.2.3.4", 1), address("::1", 2)),
                     (address("2001:db8::1", 3), address("10.0.0.1", 4), address("2001:db8::1", 3), address("::ffff:10.0.0.1", 4))]
        for (source, destination, parsedSource, parsedDestination) in pairs {
            let header = encoded(version, source, destination)
            #expect(ProxyHeader.parse(header) == .header(ProxyHeader(version: version, command: .proxy(source: parsedSource, destination: parsedDestination),
                                                                     length: header.count)))
        }
    }

    /// Random addresses of both families, and IPv6 ones with runs of zero groups (where the
    /// `::` goes is the easy part to get wrong).
    @Test(arguments: ProxyProtocolVersion.allCases)
    func roundTrip_randomAddresses(_ version: ProxyProtocolVersion) {
        var generator = SplitMix(seed: 42)
        func randomAddress() -> RawSocketAddress {
            let port = UInt16(truncatingIfNeeded: generator.next())
            if generator.next() % 3 == 0 {
                return RawSocketAddress(kind: .ipv4, port: port, high: generator.next() & 0xffff_ffff, low: 0)
            }
            // Each group zero with probability 1/2.
            var high: UInt64 = 0, low: UInt64 = 0
            for group in 0..<8 where generator.next() % 2 == 0 {
                let value = generator.next() & 0xffff
                if group < 4 { high |= value << (16 * group) } else { low |= value << (16 * (group - 4)) }
            }
            return RawSocketAddress(kind: .ipv6, port: port, high: high, low: low)
        }
        for _ in 0..<2000 {
            let source = randomAddress(), destination = randomAddress()
            let header = encoded(version, source, destination)
            #expect(header.count <= ProxyHeader.maximumEncodedLength)
            guard case .header(let parsed) = ProxyHeader.parse(header), case .proxy(let parsedSource, let parsedDestination) = parsed.command else {
                Issue.record("\(header) does not parse")
                return
            }
            #expect(parsed.length == header.count)
            if source.kind == destination.kind {
                #expect(parsedSource == source && parsedDestination == destination)
            } else {
                #expect(parsedSource == mapped(source) && parsedDestination == mapped(destination))
            }
        }
    }

    /// An IPv4 address as its IPv4-mapped IPv6 address, from text; an IPv6 address unchanged.
    func mapped(_ address: RawSocketAddress) -> RawSocketAddress {
        address.kind == .ipv4 ? ProxyProtocolTests.address("::ffff:" + SocketAddress(address)!.host, Int(address.port)) : address
    }

    /// encode writes its header and nothing after it.
    @Test func writesNothingPastTheHeader() {
        for version in ProxyProtocolVersion.allCases {
            var buffer = [UInt8](repeating: 0xAA, count: 200)
            let count = buffer.withUnsafeMutableBytes {
                ProxyHeader.encode(version, source: address("1.2.3.4", 1), destination: address("5.6.7.8", 2), into: $0)
            }
            #expect(buffer[count...].allSatisfy { $0 == 0xAA })
        }
    }

    @Test func bufferTooSmall_traps() async {
        await #expect(processExitsWith: .failure) {
            var buffer = [UInt8](repeating: 0, count: ProxyHeader.maximumEncodedLength - 1)
            _ = buffer.withUnsafeMutableBytes {
                ProxyHeader.encode(.v2, source: RawSocketAddress(kind: .ipv4, port: 1, high: 1, low: 0),
                                   destination: RawSocketAddress(kind: .ipv4, port: 2, high: 2, low: 0), into: $0)
            }
        }
    }
}
