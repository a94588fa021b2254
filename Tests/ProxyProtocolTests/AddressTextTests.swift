@testable import ProxyProtocol
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The v1 address readers against glibc's inet_pton, and the IPv6 writer against inet_ntop:
/// the spec names inet_pton's forms, and haproxy writes with inet_ntop.
@Suite struct AddressTextTests {
    /// inet_pton's 16 bytes (4 for IPv4), or nil.
    func pton(_ family: Int32, _ text: String) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: 16)
        let status = bytes.withUnsafeMutableBytes { inet_pton(family, text, $0.baseAddress) }
        return status == 1 ? Array(bytes[0..<(family == AF_INET ? 4 : 16)]) : nil
    }

    func ours(_ version6: Bool, _ text: String) -> [UInt8]? {
        let bytes = ascii(text)
        let span = bytes.span
        guard let parsed = version6 ? AddressText.ipv6(span, 0..<bytes.count) : AddressText.ipv4(span, 0..<bytes.count) else { return nil }
        return (0..<(version6 ? 16 : 4)).map { parsed[$0] }
    }

    static let ipv6Texts = [
        "::", "::1", "1::", "1::2", ":::", "1:::2", "1::2::3", ":1::", "::1:", "1:", ":1", ":", "",
        "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8::",
        "::1:2:3:4:5:6:7:8", "1:2:3:4::5:6:7:8", "1:2:3::4:5:6:7",
        "0001:0002::", "00001::", "12345::", "abcd::EF01", "g::1", "::ffff:1.2.3.4", "::1.2.3.4", "1.2.3.4", "::ffff:1.2.3",
        "::ffff:1.2.3.4.5", "::ffff:01.2.3.4", "::ffff:1.2.3.256", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4",
        "1:2:3:4:5:1.2.3.4", "::1.2.3.4:5", "1.2.3.4::", "::1234.1.1.1", "::ab.1.1.1", "::1.2.3.4.", "::.1.2.3",
        "fe80::1%eth0", "[::1]", " ::1", "::1 ", "::0:0", "0::0", "::0.0.0.0", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
    ]

    static let ipv4Texts = [
        "1.2.3.4", "0.0.0.0", "255.255.255.255", "256.0.0.0", "01.2.3.4", "1.02.3.4", "1.2.3.00", "1.2.3.0", "1.2.3", "1.2.3.4.5",
        "1..3.4", ".1.2.3", "1.2.3.", "1.2.3.4 ", "", "1", "0x1.2.3.4", "1.2.3.-4", "10.0.0.1", "100.200.250.255", "1000.1.1.1",
    ]

    @Test(arguments: ipv6Texts)
    func ipv6_asInetPton(_ text: String) {
        #expect(ours(true, text) == pton(AF_INET6, text), "\(text)")
    }

    @Test(arguments: ipv4Texts)
    func ipv4_asInetPton(_ text: String) {
        #expect(ours(false, text) == pton(AF_INET, text), "\(text)")
    }

    /// Random strings over the characters addresses use, mostly near-valid ones.
    @Test func randomTexts_asInetPton() {
        var generator = SplitMix(seed: 7)
        let alphabet = Array("0123456789abcdefABCDEF:.:.::".utf8)
        var agreedValid = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                // Mutate a valid address's text.
                let base = Self.ipv6Texts[Int(generator.next() % UInt64(Self.ipv6Texts.count))]
                bytes = ascii(base)
                for _ in 0..<Int(generator.next() % 3) {
                    let character = alphabet[Int(generator.next() % UInt64(alphabet.count))]
                    if !bytes.isEmpty && generator.next() % 2 == 0 {
                        bytes[Int(generator.next() % UInt64(bytes.count))] = character
                    } else {
                        bytes.insert(character, at: Int(generator.next() % UInt64(bytes.count + 1)))
                    }
                }
            } else {
                bytes = (0..<Int(generator.next() % 46)).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            let expected6 = pton(AF_INET6, text)
            if ours(true, text) != expected6 {
                Issue.record("IPv6 '\(text)': ours \(String(describing: ours(true, text))), inet_pton \(String(describing: expected6))")
                return
            }
            if expected6 != nil { agreedValid += 1 }
            let expected4 = pton(AF_INET, text)
            if ours(false, text) != expected4 {
                Issue.record("IPv4 '\(text)': ours \(String(describing: ours(false, text))), inet_pton \(String(describing: expected4))")
                return
            }
        }
        #expect(agreedValid > 1000)  // the mutations keep enough valid addresses to mean something
    }

    /// The IPv6 writer gives inet_ntop's text, but for IPv4-compatible addresses (`::/96`
    /// with something in the last 32 bits but `::1`), which glibc writes `::1.2.3.4`.
    @Test func ipv6Writer_asInetNtop() {
        var generator = SplitMix(seed: 99)
        var compatible = 0
        for round in 0..<20_000 {
            var bytes = [UInt8](repeating: 0, count: 16)
            for group in 0..<8 where generator.next() % (round % 2 == 0 ? 2 : 4) == 0 {
                let value = generator.next()
                bytes[2 * group] = generator.next() % 3 == 0 ? 0 : UInt8(truncatingIfNeeded: value)
                bytes[2 * group + 1] = UInt8(truncatingIfNeeded: value >> 8)
            }
            if round % 50 == 0 { bytes[0..<10] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; bytes[10] = 0xff; bytes[11] = 0xff }  // mapped
            var text = [CChar](repeating: 0, count: 64)
            _ = bytes.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, socklen_t(text.count)) }
            let expected = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            var address = AddressBytes()
            for index in 0..<16 { address[index] = bytes[index] }
            var output = [UInt8](repeating: 0, count: 64)
            var span = output.mutableSpan
            var writer = TextWriter()
            writer.ipv6(address, &span)
            let written = String(decoding: output[0..<writer.at], as: UTF8.self)
            let isCompatible = bytes[0..<12].allSatisfy { $0 == 0 } && !(bytes[12] == 0 && bytes[13] == 0)
            if isCompatible {
                compatible += 1
                #expect(ours(true, written) == bytes, "\(written)")
            } else if written != expected {
                Issue.record("\(bytes): ours \(written), inet_ntop \(expected)")
                return
            }
        }
        #expect(compatible > 0)
    }

    @Test func addressBytes_matchRawSocketAddress() {
        let raw = address("2001:db8::1", 1)
        let bytes = AddressBytes(raw)
        #expect((0..<16).map { bytes[$0] } == addressBytes("2001:db8::1"))
        #expect(bytes.address(.ipv6, port: 1) == raw)
        let v4 = AddressBytes(address("1.2.3.4", 1))
        #expect((0..<4).map { v4[$0] } == [1, 2, 3, 4])
        #expect(AddressBytes.ipv6(address("1.2.3.4", 1)).address(.ipv6, port: 1) == address("::ffff:1.2.3.4", 1))
    }
}
