import Options
import UVLoop

/// A range of IP addresses in CIDR notation, `10.0.0.0/8` or `2001:db8::/32`, or one address
/// (`127.0.0.1` is `/32`, `::1` is `/128`): `--trusted-proxies`. Host bits below the prefix
/// are ignored (`10.1.2.3/8` is `10.0.0.0/8`), as haproxy and nginx take them.
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    public let kind: RawSocketAddress.Kind
    /// The prefix, as numbers (the address's first and last 8 bytes, big-endian), host bits cleared.
    private let high: UInt64
    private let low: UInt64
    public let prefixLength: Int

    public init(parsing text: String) throws(OptionRuleError) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let host = parts[0]
        var raw = host.isEmpty || host.contains("[") ? RawSocketAddress() : RawSocketAddress(SocketAddress(host: host, port: 0))
        guard raw.kind != .none else { throw OptionRuleError(AddressRange.rule) }
        let bits = raw.kind == .ipv4 ? 32 : 128
        var length = bits
        if parts.count == 2 {
            guard let number = Int(parts[1]), (0...bits).contains(number), parts[1].allSatisfy(\.isASCII) else {
                throw OptionRuleError("\(AddressRange.rule) (the prefix length of an \(raw.kind == .ipv4 ? "IPv4" : "IPv6") "
                                      + "range is 0 to \(bits))")
            }
            length = number
        }
        if raw.kind == .ipv6, raw.unmapped.kind == .ipv4 {
            // An IPv4-mapped range (::ffff:10.0.0.0/104) is the IPv4 range it maps, since
            // addresses are compared unmapped.
            guard length >= 96 else {
                throw OptionRuleError("\(AddressRange.rule) (an IPv4-mapped range needs a prefix length of 96 or more)")
            }
            raw = raw.unmapped
            length -= 96
        }
        kind = raw.kind
        prefixLength = length
        let (highMask, lowMask) = AddressRange.masks(length)
        high = UInt64(bigEndian: raw.high) & highMask
        low = UInt64(bigEndian: raw.low) & lowMask
    }

    static let rule = "an IPv4 or IPv6 address or CIDR range, like 10.0.0.0/8, 192.168.1.10, 2001:db8::/32 or ::1"

    /// The masks of the first `length` bits of 128 (an IPv4 address is the first 32).
    private static func masks(_ length: Int) -> (UInt64, UInt64) {
        let high: UInt64 = length >= 64 ? .max : length == 0 ? 0 : .max << UInt64(64 - length)
        let low: UInt64 = length <= 64 ? 0 : length == 128 ? .max : .max << UInt64(128 - length)
        return (high, low)
    }

    /// Whether `address` (an IPv4-mapped IPv6 address as its IPv4 address) is in the range.
    public func contains(_ address: RawSocketAddress) -> Bool {
        let address = address.unmapped
        guard address.kind == kind else { return false }
        let (highMask, lowMask) = AddressRange.masks(prefixLength)
        return UInt64(bigEndian: address.high) & highMask == high && UInt64(bigEndian: address.low) & lowMask == low
    }

    /// `ADDRESS/LENGTH`, the prefix's address with its host bits cleared.
    public var description: String {
        let address = RawSocketAddress(kind: kind, port: 0, high: UInt64(bigEndian: high), low: UInt64(bigEndian: low))
        return "\(SocketAddress(address)?.host ?? "?")/\(prefixLength)"
    }
}
