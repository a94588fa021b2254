import Foundation
import ProxyProtocol
import ServerCore
import Testing
import UVLoop

/// `--proxy-protocol-upstream` and an entry's `proxy-protocol=`: every upstream connection
/// starts with a header that names its own client, before any of the client's bytes; checks
/// send a LOCAL/UNKNOWN header.
@Suite struct ProxyProtocolUpstreamTests {
    /// Reads a PROXY header from `peer` a byte at a time (so nothing after it is consumed).
    func readHeader(from peer: TestSocket) throws -> ProxyHeader? {
        var bytes: [UInt8] = []
        while bytes.count < ProxyHeader.decisionBytes {
            bytes += try peer.receive(exactly: 1)
            switch ProxyHeader.parse(bytes) {
            case .needMore: continue
            case .header(let header):
                #expect(header.length == bytes.count, "a header without TLVs: exactly what was read")
                return header
            case .failure(let error):
                Issue.record("not a header: \(error) in \(bytes)")
                return nil
            }
        }
        return nil
    }

    func expectProxied(_ header: ProxyHeader?, version: ProxyProtocolVersion, client: TestSocket, server: Server,
                       sourceLocation: SourceLocation = #_sourceLocation) {
        let expected = ProxyHeader.Command.proxy(source: RawSocketAddress(client.localAddress),
                                                 destination: RawSocketAddress(server.address))
        #expect(header?.version == version, sourceLocation: sourceLocation)
        #expect(header?.command == expected, "client \(client.localAddress), server \(server.address)", sourceLocation: sourceLocation)
    }

    @Test(arguments: [ProxyProtocolSetting.v1, .v2])
    func everyConnection_startsWithItsOwnClientsHeader_thenTheBytes(_ setting: ProxyProtocolSetting) throws {
        let upstream = try TestListener(backlog: 64)
        let server = try startServer(.relay, upstream: upstream.address) { $0.proxyProtocolUpstream = setting }
        let version: ProxyProtocolVersion = setting == .v1 ? .v1 : .v2
        // 40 clients open at once (both workers), each sending before its upstream is accepted:
        // each upstream connection must name its own client, and its bytes must follow the header.
        let clients = try (0..<40).map { _ in try TestSocket(connectingTo: server.address) }
        for (index, client) in clients.enumerated() { try client.sendAll(Array("client \(index);".utf8)) }
        var seen = Set<Int>()
        for _ in clients.indices {
            let peer = try upstream.accept()
            let header = try readHeader(from: peer)
            guard case .proxy(let source, _) = header?.command,
                  let index = clients.firstIndex(where: { RawSocketAddress($0.localAddress) == source }) else {
                Issue.record("no client for \(String(describing: header))")
                continue
            }
            #expect(seen.insert(index).inserted, "two headers name client \(index)")
            expectProxied(header, version: version, client: clients[index], server: server)
            let message = Array("client \(index);".utf8)
            #expect(try peer.receive(exactly: message.count) == message, "the client's bytes follow the header")
            try peer.sendAll(Array("ok \(index)".utf8))
            #expect(try clients[index].receive(exactly: "ok \(index)".utf8.count) == Array("ok \(index)".utf8),
                    "nothing of the header reaches the client")
            peer.close()
        }
        #expect(seen.count == clients.count)
        for client in clients { client.close() }
        let final = finish(server)
        #expect(final.proxyHeadersSent == UInt64(clients.count))
        #expect(final.bytesReceived == final.bytesSent, "header bytes are not counted as relayed bytes")
    }

    @Test func anEntrysOwnSetting_winsOverTheServers() throws {
        let v1Upstream = try TestListener()
        let offUpstream = try TestListener()
        let server = try startServer(.relay) { config in
            config.upstreams = [try UpstreamSpec(parsing: "\(v1Upstream.address) proxy-protocol=v1")]
            config.proxyProtocolUpstream = .v2
            config.balance = .roundrobin
        }
        let client = try TestSocket(connectingTo: server.address)
        let peer = try v1Upstream.accept()
        expectProxied(try readHeader(from: peer), version: .v1, client: client, server: server)
        client.close()
        peer.close()
        finish(server)

        // proxy-protocol=off on the entry: no header though the server says v2.
        let plain = try startServer(.relay) { config in
            config.upstreams = [try UpstreamSpec(parsing: "\(offUpstream.address) proxy-protocol=off")]
            config.proxyProtocolUpstream = .v2
        }
        let second = try TestSocket(connectingTo: plain.address)
        try second.sendAll(Array("GET".utf8))
        let raw = try offUpstream.accept()
        #expect(try raw.receive(exactly: 3) == Array("GET".utf8))
        second.close()
        raw.close()
        #expect(finish(plain).proxyHeadersSent == 0)
    }

    @Test(arguments: [ProxyProtocolSetting.v1, .v2])
    func healthChecks_sendALocalHeader(_ setting: ProxyProtocolSetting) throws {
        let upstream = try TestListener()
        let server = try startServer(.relay, upstream: upstream.address) { config in
            config.proxyProtocolUpstream = setting
            config.healthCheck = .tcp
            config.healthCheckInterval = 0.05
        }
        for _ in 0..<3 {  // a few checks in a row, each its own connection
            let probe = try upstream.accept()
            let header = try readHeader(from: probe)
            #expect(header?.command == .local)
            #expect(header?.version == (setting == .v1 ? .v1 : .v2))
            #expect(try probe.receiveUntilEOF().isEmpty, "a check sends the header and closes")
            probe.close()
        }
        finish(server)
    }

    @Test func configuration_rejectsABadSetting_andRendersAGoodOne() throws {
        #expect(throws: (any Error).self) { try UpstreamSpec(parsing: "127.0.0.1:7001 proxy-protocol=v3") }
        let spec = try UpstreamSpec(parsing: "127.0.0.1:7001 weight=2 proxy-protocol=v1")
        #expect(spec.proxyProtocol == .v1 && spec.weight == 2)
        #expect(spec.description == "127.0.0.1:7001 weight=2 proxy-protocol=v1")
        #expect(try UpstreamSpec(parsing: spec.description) == spec)
    }
}
