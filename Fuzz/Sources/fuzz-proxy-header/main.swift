// Fuzzes the PROXY protocol header parser: the input is a connection's first bytes, given to
// ProxyHeader.parse whole and by every prefix up to decisionBytes.
//
// Properties: parse is deterministic; never needMore with decisionBytes or more bytes; a
// header's length covers what it needed (v1: its line, at most 107 bytes, ending in CRLF, all
// received; v2: 16 bytes and its addresses, at most 16 + 65535); every prefix gives needMore or
// the whole input's result, and the shortest decided prefix is exactly what the header needed;
// a proxied header re-encoded in its version parses back to the same addresses, byte for byte
// the input when the input is canonical (v1 TCP4 always is; v2 without TLVs); and a v1 TCP4 or
// TCP6 line whose bytes are all address characters is accepted exactly when glibc's inet_pton
// takes both addresses and both ports are canonical decimals up to 65535, with inet_pton's bytes.
import FuzzSupport
import ProxyProtocol
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

@inline(__always)
func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) {
    if !condition { check(false, message(), line: line) }
}

/// encode's output, reused (inputs run one at a time, on libFuzzer's thread).
nonisolated(unsafe) var encodeBuffer = [UInt8](repeating: 0, count: ProxyHeader.maximumEncodedLength)

func describe(_ result: ProxyHeaderParse) -> String {
    switch result {
    case .needMore: "needMore"
    case .failure(let error): "failure(\(error.rawValue))"
    case .header(let header): "header(\(header.version), \(header.command), length \(header.length))"
    }
}

/// The bytes a header needed to be decided: v1 its line, v2 its fixed part and addresses.
func needed(_ header: ProxyHeader) -> Int {
    switch (header.version, header.command) {
    case (.v1, _): header.length
    case (.v2, .local): 16
    case (.v2, .proxy(let source, _)): source.kind == .ipv4 ? 28 : 52
    }
}

/// The 16 address bytes of a RawSocketAddress in network order.
func bytes(_ address: RawSocketAddress) -> [UInt8] {
    withUnsafeBytes(of: address.high) { Array($0) } + withUnsafeBytes(of: address.low) { Array($0) }
}

// MARK: The v1 reference: splitting by hand, inet_pton for the addresses

let addressCharacters = Set("0123456789abcdefABCDEF:. ".utf8)

/// A canonical decimal port: 1 to 5 digits, no leading zero but "0", at most 65535.
func referencePort(_ text: ArraySlice<UInt8>) -> UInt16? {
    guard (1...5).contains(text.count), text.allSatisfy({ (48...57).contains($0) }), text.first != 48 || text.count == 1 else { return nil }
    let value = text.reduce(0) { $0 * 10 + Int($1 - 48) }
    return value <= 65535 ? UInt16(value) : nil
}

func referenceAddress(_ text: ArraySlice<UInt8>, version6: Bool) -> [UInt8]? {
    var result = [UInt8](repeating: 0, count: 16)
    let string = String(decoding: text, as: UTF8.self)
    let status = result.withUnsafeMutableBytes { inet_pton(version6 ? AF_INET6 : AF_INET, string, $0.baseAddress) }
    return status == 1 ? result : nil
}

/// For a "PROXY TCP4 " or "PROXY TCP6 " input whose line (CRLF within 107 bytes) holds address
/// characters only: the reference's addresses and ports, or nil for a malformed line. Not
/// applicable (returns .notApplicable) otherwise.
enum Reference { case notApplicable, malformed, proxy([UInt8], UInt16, [UInt8], UInt16) }

func reference(_ input: [UInt8]) -> Reference {
    guard input.count >= 13, input[0..<10].elementsEqual("PROXY TCP4".utf8) || input[0..<10].elementsEqual("PROXY TCP6".utf8),
          input[10] == 32 else { return .notApplicable }
    let version6 = input[9] == 54
    guard let cr = input[0..<min(input.count, 107)].firstIndex(of: 13), cr <= 105, cr + 1 < input.count, input[cr + 1] == 10,
          input[11..<cr].allSatisfy({ addressCharacters.contains($0) }) else { return .notApplicable }
    if !version6 && input[11..<cr].contains(where: { !(48...57).contains($0) && $0 != 46 && $0 != 32 }) { return .notApplicable }
    let fields = input[11..<cr].split(separator: 32, omittingEmptySubsequences: false)
    guard fields.count == 4, let source = referenceAddress(fields[0], version6: version6),
          let destination = referenceAddress(fields[1], version6: version6),
          let sourcePort = referencePort(fields[2]), let destinationPort = referencePort(fields[3]) else { return .malformed }
    return .proxy(source, sourcePort, destination, destinationPort)
}

// MARK: The properties

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let input = start.map { Array(UnsafeBufferPointer(start: $0, count: count)) } ?? []
    let result = ProxyHeader.parse(input)
    require(ProxyHeader.parse(input) == result, "parse is not deterministic")
    // The RawSpan entry point, on libFuzzer's own buffer.
    if let start {
        require(ProxyHeader.parse(RawSpan(_unsafeStart: UnsafeRawPointer(start), byteCount: count)) == result, "RawSpan and [UInt8] differ")
    }
    switch result {
    case .needMore:
        require(count < ProxyHeader.decisionBytes, "needMore with \(count) bytes")
    case .failure:
        break
    case .header(let header):
        let need = needed(header)
        require(need <= count, "a header from \(count) bytes that needs \(need)")
        require(header.length >= need, "length \(header.length) < \(need) needed")
        switch header.version {
        case .v1:
            require(header.length <= ProxyHeader.maximumV1Length, "a v1 header of \(header.length) bytes")
            require(input[header.length - 2] == 13 && input[header.length - 1] == 10, "a v1 header not ending in CRLF")
            require(input[0..<6].elementsEqual("PROXY ".utf8), "a v1 header not starting PROXY")
        case .v2:
            require(header.length <= ProxyHeader.maximumV2Length, "a v2 header of \(header.length) bytes")
        }
    }

    // Every prefix: needMore, then the whole input's result from the first decided prefix on.
    var decidedAt: Int? = nil
    for prefix in 0...min(count, ProxyHeader.decisionBytes) {
        let partial = ProxyHeader.parse(input.span.extracting(0..<prefix))
        if partial == .needMore {
            require(decidedAt == nil, "needMore with \(prefix) bytes after a decision with \(decidedAt ?? -1)")
        } else {
            require(partial == result, "\(prefix) bytes give \(describe(partial)), all \(count) give \(describe(result))")
            if decidedAt == nil { decidedAt = prefix }
        }
    }
    if case .header(let header) = result {
        require(decidedAt == needed(header), "decided with \(decidedAt ?? -1) bytes, needed \(needed(header))")
    }

    // Re-encoded, the same addresses; the same bytes for a canonical input.
    if case .header(let header) = result, case .proxy(let source, let destination) = header.command {
        let length = encodeBuffer.withUnsafeMutableBytes { ProxyHeader.encode(header.version, source: source, destination: destination, into: $0) }
        let encoded = Array(encodeBuffer[0..<length])
        let again = ProxyHeader.parse(encoded)
        require(again == .header(ProxyHeader(version: header.version, command: header.command, length: length)),
                "re-encoded as \(encoded), parsed as \(describe(again))")
        let canonical = header.version == .v1 ? source.kind == .ipv4 : header.length == needed(header)
        if canonical { require(encoded[...] == input[0..<header.length], "re-encoded as \(encoded), not as the input") }
    }

    // v1 TCP lines against the reference.
    switch reference(input) {
    case .notApplicable:
        break
    case .malformed:
        require(result == .failure(.text), "a line inet_pton or the port rule refuses gives \(describe(result))")
    case .proxy(let source, let sourcePort, let destination, let destinationPort):
        guard case .header(let header) = result, case .proxy(let parsedSource, let parsedDestination) = header.command else {
            require(false, "a line inet_pton takes gives \(describe(result))")
            return 0
        }
        let size = parsedSource.kind == .ipv4 ? 4 : 16
        require(bytes(parsedSource)[0..<size] == source[0..<size] && bytes(parsedDestination)[0..<size] == destination[0..<size],
                "addresses differ from inet_pton's")
        require(parsedSource.port == sourcePort && parsedDestination.port == destinationPort, "ports differ")
    }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

runFuzzer(LLVMFuzzerTestOneInput)
