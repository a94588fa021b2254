import Foundation
import FastAlloc
import Options
import ProxyProtocol
import ServerCore
import Testing
import UVLoop

/// `--accept-proxy`: a client connection's PROXY header, read before anything is forwarded, and
/// its address used everywhere after (here: in the v2 header the relay sends its upstream).
@Suite struct AcceptProxyTests {
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    static func raw(_ host: String, _ port: Int) -> RawSocketAddress { RawSocketAddress(SocketAddress(host: host, port: port)) }

    static func encoded(_ version: ProxyProtocolVersion, _ source: RawSocketAddress, _ destination: RawSocketAddress) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: ProxyHeader.maximumEncodedLength)
        let count = bytes.withUnsafeMutableBytes { ProxyHeader.encode(version, source: source, destination: destination, into: $0) }
        return Array(bytes[0..<count])
    }

    /// A v2 PROXY TCP6 header with `tlvBytes` bytes of TLVs (one type-0xE0 TLV per 1,000 bytes at most).
    static func v2WithTLVs(source: RawSocketAddress, destination: RawSocketAddress, tlvBytes: Int) -> [UInt8] {
        var tlvs: [UInt8] = []
        while tlvs.count < tlvBytes {
            let length = min(1000, tlvBytes - tlvs.count - 3)
            tlvs += [0xE0, UInt8(length >> 8), UInt8(length & 0xFF)] + [UInt8](repeating: 0x5A, count: length)
        }
        func bytes(_ address: RawSocketAddress) -> [UInt8] {
            withUnsafeBytes(of: address.high) { Array($0) } + withUnsafeBytes(of: address.low) { Array($0) }
        }
        let body = bytes(source) + bytes(destination) + [UInt8(source.port >> 8), UInt8(source.port & 0xFF),
                                                        UInt8(destination.port >> 8), UInt8(destination.port & 0xFF)] + tlvs
        return v2Signature + [0x21, 0x21, UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    /// A relay accepting PROXY headers from 127.0.0.1, sending v2 headers to its upstream.
    func relay(to upstream: TestListener, _ configure: (inout ServerConfig) throws -> Void = { _ in }) throws -> Server {
        try startServer(.relay, upstream: upstream.address) { config in
            config.acceptProxy = true
            config.trustedProxies = [try AddressRange(parsing: "127.0.0.0/8")]
            config.proxyProtocolUpstream = .v2
            try configure(&config)
        }
    }

    /// The upstream side of one connection: its header's source, then `count` bytes.
    func upstreamSees(_ upstream: TestListener, bytes count: Int) throws -> (source: RawSocketAddress?, data: [UInt8], peer: TestSocket) {
        let peer = try upstream.accept()
        var header: [UInt8] = []
        while true {
            header += try peer.receive(exactly: 1)
            switch ProxyHeader.parse(header) {
            case .needMore: continue
            case .header(let parsed):
                guard case .proxy(let source, _) = parsed.command else { return (nil, try peer.receive(exactly: count), peer) }
                return (source, try peer.receive(exactly: count), peer)
            case .failure(let error):
                Issue.record("the relay sent a bad header: \(error)")
                return (nil, [], peer)
            }
        }
    }

    struct Delivery: CustomTestStringConvertible, Sendable {
        let name: String
        let header: [UInt8]
        /// The address the upstream must see (nil: the client's real one).
        let expected: RawSocketAddress?
        /// Send the header one byte per send() (TCP_NODELAY): as many pieces as the kernel keeps apart.
        var bytewise = false
        var testDescription: String { name }
    }

    static let client = raw("203.0.113.7", 4242)
    static let frontend = raw("198.51.100.1", 443)
    static let client6 = raw("2001:db8::7", 5353)
    static let frontend6 = raw("2001:db8::1", 443)

    static let deliveries: [Delivery] = [
        Delivery(name: "v1 TCP4 with data in the same write", header: encoded(.v1, client, frontend), expected: client),
        Delivery(name: "v1 split into single bytes", header: encoded(.v1, client, frontend), expected: client, bytewise: true),
        Delivery(name: "v2 TCP4", header: encoded(.v2, client, frontend), expected: client),
        Delivery(name: "v2 split into single bytes", header: encoded(.v2, client, frontend), expected: client, bytewise: true),
        Delivery(name: "v2 TCP6 with 40 KB of TLVs", header: v2WithTLVs(source: client6, destination: frontend6, tlvBytes: 40_000),
                 expected: client6),
        Delivery(name: "v2 TCP4 as IPv4-mapped TCP6", header: encoded(.v2, raw("::ffff:203.0.113.7", 4242), frontend6), expected: client),
        Delivery(name: "v2 LOCAL: the real address", header: v2Signature + [0x20, 0x00, 0x00, 0x00], expected: nil),
        Delivery(name: "v1 UNKNOWN: the real address", header: Array("PROXY UNKNOWN\r\n".utf8), expected: nil),
    ]

    @Test(arguments: deliveries)
    func header_isTaken_andItsAddressForwarded_thenEveryByteAfterIt(_ delivery: Delivery) throws {
        let upstream = try TestListener()
        let server = try relay(to: upstream)
        let client = try TestSocket(connectingTo: server.address)
        var noDelay: Int32 = 1
        setsockopt(client.fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        let data = Array("after the header: \(delivery.name)".utf8)
        if delivery.bytewise {
            for byte in delivery.header { try client.sendAll([byte]) }
            try client.sendAll(data)
        } else {
            try client.sendAll(delivery.header + data)
        }
        let seen = try upstreamSees(upstream, bytes: data.count)
        // (A mixed pair goes upstream as TCP6, the IPv4 client mapped: compared unmapped.)
        #expect(seen.source?.unmapped == (delivery.expected ?? RawSocketAddress(client.localAddress)))
        #expect(seen.data == data, "every byte after the header, none of it")
        try seen.peer.sendAll(Array("answer".utf8))
        #expect(try client.receive(exactly: 6) == Array("answer".utf8))
        client.close()
        seen.peer.close()
        let final = finish(server)
        #expect(final.proxyHeadersReceived == 1 && final.proxyProtocolErrors == 0)
    }

    struct Refusal: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: [UInt8]
        let reason: ProxyProtocolFailure
        var testDescription: String { name }
    }

    static let refusals: [Refusal] = [
        Refusal(name: "not a header", bytes: Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), reason: .notAHeader),
        Refusal(name: "a wrong v2 signature", bytes: Array(v2Signature.prefix(6)) + [0xFF] + Array(v2Signature.dropFirst(7)) + [0x21, 0x11, 0, 12],
                reason: .signature),
        Refusal(name: "PROXZ", bytes: Array("PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n".utf8), reason: .signature),
        Refusal(name: "v1 over 107 bytes", bytes: Array(("PROXY TCP6 " + String(repeating: "1", count: 120) + "\r\n").utf8), reason: .length),
        Refusal(name: "a bad v1 address", bytes: Array("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n".utf8), reason: .text),
        Refusal(name: "v2 version 3", bytes: v2Signature + [0x31, 0x11, 0, 12] + [UInt8](repeating: 1, count: 12), reason: .version),
        Refusal(name: "v2 command 2", bytes: v2Signature + [0x22, 0x11, 0, 12] + [UInt8](repeating: 1, count: 12), reason: .command),
        Refusal(name: "v2 over UDP", bytes: v2Signature + [0x21, 0x12, 0, 12] + [UInt8](repeating: 1, count: 12), reason: .family),
        Refusal(name: "v2 TCP4 with length 0", bytes: v2Signature + [0x21, 0x11, 0, 0], reason: .length),
        Refusal(name: "a truncated v2, then the client closes", bytes: Array(v2Signature.prefix(9)), reason: .closed),
    ]

    @Test(arguments: refusals)
    func badHeader_closesTheConnection_countsWhy_forwardsNothing(_ refusal: Refusal) throws {
        let upstream = try TestListener()
        let server = try relay(to: upstream)
        let client = try TestSocket(connectingTo: server.address)
        if refusal.reason == .closed {
            try client.sendAll(refusal.bytes)
            client.shutdownWrite()
        } else {
            try client.sendAll(refusal.bytes + Array("data".utf8))
        }
        // The relay closes it: an end of stream or a reset, never an answer.
        let answer = try? client.receiveUntilEOF()
        #expect(answer == nil || answer == [], "nothing comes back")
        #expect(eventually(timeout: 10) { server.statistics().proxyProtocolErrors == 1 })
        let final = finish(server)
        #expect(final.workers.reduce(0) { $0 + $1.proxyProtocolErrors[refusal.reason] } == 1, "counted as \(refusal.reason)")
        #expect(final.proxyHeadersReceived == 0)
        #expect(final.upstreams.first?.selected == 0, "no upstream was even picked")
        #expect(throws: (any Error).self, "the upstream got no connection") { _ = try upstream.accept(timeout: 0.2) }
    }

    @Test func noHeaderInTime_isClosed_andCountedAsATimeout() throws {
        let upstream = try TestListener()
        let server = try relay(to: upstream) { $0.proxyProtocolTimeout = 0.2 }
        let clients = try (0..<20).map { _ in try TestSocket(connectingTo: server.address) }
        for client in clients { try client.sendAll(Array("PROXY TCP4".utf8)) }  // a start, then nothing
        for client in clients { #expect((try? client.receiveUntilEOF()) ?? [] == [], "closed without an answer") }
        let final = finish(server)
        #expect(final.workers.reduce(0) { $0 + $1.proxyProtocolErrors.timeout } == 20)
        #expect(final.upstreams.first?.selected == 0)
    }

    @Test func untrustedAddress_isClosedAtOnce_andCounted() throws {
        let upstream = try TestListener()
        let server = try relay(to: upstream) { $0.trustedProxies = [try AddressRange(parsing: "10.0.0.0/8")] }
        let client = try TestSocket(connectingTo: server.address)
        try client.sendAll(Self.encoded(.v1, Self.client, Self.frontend) + Array("data".utf8))
        #expect((try? client.receiveUntilEOF()) ?? [] == [])
        let final = finish(server)
        #expect(final.workers.reduce(0) { $0 + $1.proxyProtocolErrors.untrusted } == 1)
        #expect(final.proxyHeadersReceived == 0)
    }

    /// 200 connections at once, each from a load balancer "for" a client of its own: each
    /// upstream connection names its own client, and the per-client limit counts the header's
    /// addresses (all 200 share the real address 127.0.0.1, and a limit of 1 admits them all).
    @Test func twoHundredClients_eachKeepsItsOwnAddress_andLimitsCountIt() throws {
        let upstream = try TestListener(backlog: 256)
        let server = try relay(to: upstream) { config in
            config.maxConnectionsPerClient = 1
            config.balance = .hash
        }
        let count = 200
        let sources = (0..<count).map { Self.raw("198.18.\($0 / 250).\($0 % 250 + 1)", 10_000 + $0) }
        let clients = try sources.enumerated().map { index, source -> TestSocket in
            let client = try TestSocket(connectingTo: server.address)
            try client.sendAll(Self.encoded(index % 2 == 0 ? .v1 : .v2, source, Self.frontend) + Array("hi".utf8))
            return client
        }
        var seen: [RawSocketAddress] = []
        var peers: [TestSocket] = []
        for index in 0..<count {
            let side: (source: RawSocketAddress?, data: [UInt8], peer: TestSocket)
            do {
                side = try upstreamSees(upstream, bytes: 2)
            } catch {
                Issue.record("upstream connection \(index): \(error); the server: \(server.statistics().summary)")
                break
            }
            if let source = side.source { seen.append(source) }
            #expect(side.data == Array("hi".utf8))
            peers.append(side.peer)
        }
        #expect(Set(seen) == Set(sources), "every client's own address, once")
        let stats = server.statistics()
        #expect(stats.workers.reduce(0) { $0 + $1.clientLimitRejections } == 0)
        for client in clients { client.close() }
        for peer in peers { peer.close() }
        let final = finish(server)
        #expect(final.proxyHeadersReceived == UInt64(count))
    }

    /// The per-client limit counts the header's address: a second connection "for" the same
    /// client is refused after its header, the first goes on; then readers and streams are
    /// reused for 50 more rounds (a refused connection gives its reader back exactly once).
    @Test func perClientLimit_refusesBytheHeadersAddress_andReadersAreReused() throws {
        let upstream = try TestListener(backlog: 64)
        let server = try relay(to: upstream) { config in
            config.maxConnectionsPerClient = 1
            config.workers = 1
        }
        for round in 0..<50 {
            let source = Self.raw("198.18.0.\(round % 200 + 1)", 4000 + round)
            let first = try TestSocket(connectingTo: server.address)
            try first.sendAll(Self.encoded(.v2, source, Self.frontend) + Array("one".utf8))
            let seen = try upstreamSees(upstream, bytes: 3)
            #expect(seen.source == source && seen.data == Array("one".utf8))
            let second = try TestSocket(connectingTo: server.address)
            try second.sendAll(Self.encoded(.v1, source, Self.frontend) + Array("two".utf8))
            #expect((try? second.receiveUntilEOF()) ?? [] == [], "round \(round): refused, nothing forwarded")
            try seen.peer.sendAll(Array("ok".utf8))
            #expect(try first.receive(exactly: 2) == Array("ok".utf8), "round \(round): the first goes on")
            first.close()
            seen.peer.close()
            #expect(eventually(timeout: 10) { server.statistics().connectionsActive == 0 })
        }
        let final = finish(server)
        #expect(final.workers.reduce(0) { $0 + $1.clientLimitRejections } == 50)
        #expect(final.proxyHeadersReceived == 100 && final.proxyProtocolErrors == 0)
    }

    @Test func acceptProxy_withoutTrustedProxies_isAConfigurationError() throws {
        var config = ServerConfig(mode: .echo)
        config.acceptProxy = true
        #expect(throws: ConfigError.self) { try config.validate() }
        do {
            try config.validate()
        } catch {
            #expect("\(error)".hasPrefix("--trusted-proxies: (none) (expected: the load balancers' addresses"))
        }
        config.trustedProxies = [try AddressRange(parsing: "10.0.0.0/8")]
        try config.validate()
    }

    @Test func addressRanges_parseAndMatch() throws {
        let ten = try AddressRange(parsing: "10.1.2.3/8")
        #expect(ten.description == "10.0.0.0/8")
        #expect(ten.contains(Self.raw("10.255.0.1", 1)) && !ten.contains(Self.raw("11.0.0.1", 1)))
        #expect(ten.contains(Self.raw("::ffff:10.9.9.9", 1)), "an IPv4-mapped address is its IPv4 address")
        let one = try AddressRange(parsing: "192.168.1.10")
        #expect(one.prefixLength == 32 && one.contains(Self.raw("192.168.1.10", 9)) && !one.contains(Self.raw("192.168.1.11", 9)))
        let v6 = try AddressRange(parsing: "2001:db8::/32")
        #expect(v6.contains(Self.raw("2001:db8:ffff::1", 1)) && !v6.contains(Self.raw("2001:db9::1", 1)))
        #expect(!v6.contains(Self.raw("10.0.0.1", 1)))
        #expect(try AddressRange(parsing: "::1").contains(Self.raw("::1", 1)))
        #expect(try AddressRange(parsing: "0.0.0.0/0").contains(Self.raw("8.8.8.8", 53)))
        #expect(try AddressRange(parsing: "::/0").contains(Self.raw("2001:db8::1", 53)))
        let mapped = try AddressRange(parsing: "::ffff:10.0.0.0/104")
        #expect(mapped.description == "10.0.0.0/8" && mapped.contains(Self.raw("10.1.2.3", 1)) && mapped.contains(Self.raw("::ffff:10.1.2.3", 1)))
        #expect(throws: OptionRuleError.self) { try AddressRange(parsing: "::ffff:10.0.0.0/80") }
        for bad in ["10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/x", "example.com", "", "10.0.0.0/8/8", "[::1]"] {
            #expect(throws: OptionRuleError.self, "\(bad)") { try AddressRange(parsing: bad) }
        }
    }
}
