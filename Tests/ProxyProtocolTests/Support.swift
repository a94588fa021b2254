import ProxyProtocol
import UVLoop

/// An address from text: `address("2001:db8::1", 443)`.
func address(_ host: String, _ port: Int) -> RawSocketAddress {
    let raw = RawSocketAddress(SocketAddress(host: host, port: port))
    precondition(raw.kind != .none, "not an address: \(host)")
    return raw
}

/// The bytes of ASCII text.
func ascii(_ text: String) -> [UInt8] { Array(text.utf8) }

let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

/// A v2 header: signature, version and command, family, a length (the body's unless given),
/// the body (addresses, TLVs).
func v2(_ versionCommand: UInt8, _ family: UInt8, length: Int? = nil, _ body: [UInt8] = []) -> [UInt8] {
    let length = length ?? body.count
    return v2Signature + [versionCommand, family, UInt8(length >> 8), UInt8(length & 0xff)] + body
}

/// The 16 bytes of an IPv6 address, or the 4 of an IPv4 one, in network order.
func addressBytes(_ host: String) -> [UInt8] {
    let raw = address(host, 0)
    let all = withUnsafeBytes(of: raw.high) { Array($0) } + withUnsafeBytes(of: raw.low) { Array($0) }
    return raw.kind == .ipv4 ? Array(all[0..<4]) : all
}

func bigEndian(_ port: UInt16) -> [UInt8] { [UInt8(port >> 8), UInt8(port & 0xff)] }

/// A v2 PROXY header for TCP over IPv4 or IPv6 (by the hosts' text), with `tlvs` after the addresses.
func v2Proxy(_ source: String, _ sourcePort: UInt16, _ destination: String, _ destinationPort: UInt16, tlvs: [UInt8] = []) -> [UInt8] {
    let family: UInt8 = source.contains(":") ? 0x21 : 0x11
    return v2(0x21, family, addressBytes(source) + addressBytes(destination) + bigEndian(sourcePort) + bigEndian(destinationPort) + tlvs)
}

/// The header `parse` should find.
func proxy(_ version: ProxyProtocolVersion, _ source: String, _ sourcePort: Int, _ destination: String, _ destinationPort: Int,
           length: Int) -> ProxyHeaderParse {
    .header(ProxyHeader(version: version, command: .proxy(source: address(source, sourcePort), destination: address(destination, destinationPort)),
                        length: length))
}

func local(_ version: ProxyProtocolVersion, length: Int) -> ProxyHeaderParse {
    .header(ProxyHeader(version: version, command: .local, length: length))
}

/// `encode` into a fresh buffer, as bytes.
func encoded(_ version: ProxyProtocolVersion, _ source: RawSocketAddress, _ destination: RawSocketAddress) -> [UInt8] {
    var buffer = [UInt8](repeating: 0xAA, count: ProxyHeader.maximumEncodedLength)
    let count = buffer.withUnsafeMutableBytes { ProxyHeader.encode(version, source: source, destination: destination, into: $0) }
    return Array(buffer[0..<count])
}

func encodedLocal(_ version: ProxyProtocolVersion) -> [UInt8] {
    var buffer = [UInt8](repeating: 0xAA, count: ProxyHeader.maximumEncodedLength)
    let count = buffer.withUnsafeMutableBytes { ProxyHeader.encodeLocal(version, into: $0) }
    return Array(buffer[0..<count])
}

extension ProxyHeaderParse: CustomStringConvertible {
    public var description: String {
        switch self {
        case .needMore: "needMore"
        case .failure(let error): "failure(\(error.rawValue))"
        case .header(let header):
            switch header.command {
            case .local: "header(\(header.version) local, length \(header.length))"
            case .proxy(let source, let destination):
                "header(\(header.version) \(SocketAddress(source).map(\.description) ?? "?") -> "
                    + "\(SocketAddress(destination).map(\.description) ?? "?"), length \(header.length))"
            }
        }
    }
}
