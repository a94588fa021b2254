import Foundation
import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `--max-connections-per-client` end to end, across two workers (the count is shared).
@Suite struct ClientLimitServerTests {
    /// Whether the server closed `socket` at once: EOF or a reset, within the socket's timeout.
    static func closedByServer(_ socket: TestSocket) -> Bool {
        var byte: UInt8 = 0
        return recv(socket.fd, &byte, 1, 0) <= 0
    }

    @Test func fourthConnectionFromOneAddress_isClosedAtOnce_andCounted_aCloseFreesASlot() throws {
        let directory = AccessLogTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/access.log"
        let server = try startServer(.echo) {
            $0.workers = 2
            $0.maxConnectionsPerClient = 3
            $0.accessLog = .file(path)
            $0.accessLogFormat = .json
        }
        var open: [TestSocket] = []
        for index in 0..<3 {
            let client = try TestSocket(connectingTo: server.address)
            try client.sendAll(pattern(100, seed: index))
            #expect(try client.receive(exactly: 100) == pattern(100, seed: index), "connection \(index + 1) is served")
            open.append(client)
        }
        let fourth = try TestSocket(connectingTo: server.address, timeout: 5)
        let refusedPort = AccessLogTests.localPort(fourth)
        #expect(ClientLimitServerTests.closedByServer(fourth), "the 4th is closed at once")
        #expect(AccessLogTests.eventually { server.statistics().clientLimitRejections == 1 })
        // The first three still work.
        for (index, client) in open.enumerated() {
            try client.sendAll(pattern(50, seed: index))
            #expect(try client.receive(exactly: 50) == pattern(50, seed: index))
        }
        // Closing one frees a slot (once the server has seen the close).
        open[0].shutdownWrite()
        #expect(try open[0].receiveUntilEOF() == [])
        open[0].close()
        #expect(AccessLogTests.eventually { server.statistics().connectionsActive == 2 })
        let again = try TestSocket(connectingTo: server.address)
        try again.sendAll(pattern(10))
        #expect(try again.receive(exactly: 10) == pattern(10), "a slot came free")
        // And the limit holds again: 3 open.
        let fifth = try TestSocket(connectingTo: server.address, timeout: 5)
        #expect(ClientLimitServerTests.closedByServer(fifth))
        #expect(AccessLogTests.eventually { server.statistics().clientLimitRejections == 2 })
        for client in open.dropFirst() + [again] {
            client.shutdownWrite()
            _ = try? client.receiveUntilEOF()
            client.close()
        }
        fifth.close()
        fourth.close()
        let final = finish(server)
        #expect(final.clientLimitRejections == 2 && final.clientLimitTableFull == 0)
        #expect(final.connectionsAccepted == 4, "the refused ones are not accepted connections")
        let lines = AccessLogTests.lines(path)
        #expect(lines.count == 6, "a line per connection, the refused ones too: \(lines)")
        let refused = try lines.map { try AccessLogTests.fields($0, .json) }.filter { $0["reason"] == "client_limit" }
        #expect(refused.count == 2)
        #expect(refused.contains { $0["client_port"] == String(refusedPort) && $0["bytes_received"] == "0" && $0["duration_ms"] == "0" })
    }

    @Test func noLimit_byDefault() throws {
        let server = try startServer(.echo) { $0.workers = 1 }
        let clients = try (0..<8).map { _ in try TestSocket(connectingTo: server.address) }
        for client in clients {
            try client.sendAll([1])
            #expect(try client.receive(exactly: 1) == [1])
        }
        for client in clients { client.close() }
        #expect(finish(server).clientLimitRejections == 0)
    }
}
