@testable import ServerCore
import Testing
import TestSupport
import Threads
import UVLoop

/// The access log's pieces without a server: the line formats, the timestamps, the ring.
@Suite struct AccessLogUnitTests {
    static func line(_ record: AccessLogRecord, _ format: AccessLogFormat) -> String {
        var output = ByteOutput(capacity: 4096)
        defer { output.deallocate() }
        AccessLogFormatter.write(record, as: format, into: &output)
        #expect(output.count <= AccessLogFormatter.maxLine)
        return String(decoding: UnsafeBufferPointer(start: output.base, count: output.count), as: UTF8.self)
    }

    static func raw(_ text: String) -> RawSocketAddress {
        RawSocketAddress(try! SocketAddress(parsing: text))
    }

    var relayRecord: AccessLogRecord {
        var record = AccessLogRecord()
        record.startMilliseconds = 1_764_672_641_123
        record.durationMilliseconds = 1502
        record.connectMilliseconds = 3
        record.bytesReceived = 100
        record.bytesSent = 200
        record.upstreamBytesSent = 100
        record.upstreamBytesReceived = 200
        record.client = AccessLogUnitTests.raw("127.0.0.1:51234")
        record.upstream = AccessLogUnitTests.raw("[2001:db8::1]:7001")
        record.worker = 1
        record.tries = 2
        record.relay = true
        record.reason = .clientFIN
        record.causes = [SessionEndReasons(.clientFIN), SessionEndReasons(.upstreamFIN)]
        return record
    }

    @Test func text_relay() {
        #expect(AccessLogUnitTests.line(relayRecord, .text) == "start_time=2025-12-02T10:50:41.123Z client=127.0.0.1:51234 worker=1 mode=relay "
            + "upstream=[2001:db8::1]:7001 tries=2 connect_ms=3 duration_ms=1502 bytes_received=100 bytes_sent=200 "
            + "upstream_bytes_sent=100 upstream_bytes_received=200 reason=client_fin causes=client_fin,upstream_fin\n")
    }

    @Test func json_relay() {
        #expect(AccessLogUnitTests.line(relayRecord, .json) == "{\"start_time\":\"2025-12-02T10:50:41.123Z\",\"client_ip\":\"127.0.0.1\","
            + "\"client_port\":51234,\"worker\":1,\"mode\":\"relay\",\"upstream_ip\":\"2001:db8::1\",\"upstream_port\":7001,\"tries\":2,"
            + "\"connect_ms\":3,\"duration_ms\":1502,\"bytes_received\":100,\"bytes_sent\":200,\"upstream_bytes_sent\":100,"
            + "\"upstream_bytes_received\":200,\"reason\":\"client_fin\",\"causes\":[\"client_fin\",\"upstream_fin\"]}\n")
    }

    @Test func echo_ipv6Client_noUpstreamFields() {
        var record = AccessLogRecord()
        record.client = AccessLogUnitTests.raw("[::1]:40000")
        record.bytesReceived = UInt64.max
        record.reason = .idleTimeout
        record.causes = SessionEndReasons(.idleTimeout)
        #expect(AccessLogUnitTests.line(record, .text) == "start_time=1970-01-01T00:00:00.000Z client=[::1]:40000 worker=0 mode=echo "
            + "duration_ms=0 bytes_received=18446744073709551615 bytes_sent=0 reason=idle_timeout causes=idle_timeout\n")
        #expect(AccessLogUnitTests.line(record, .json) == "{\"start_time\":\"1970-01-01T00:00:00.000Z\",\"client_ip\":\"::1\",\"client_port\":40000,"
            + "\"worker\":0,\"mode\":\"echo\",\"duration_ms\":0,\"bytes_received\":18446744073709551615,\"bytes_sent\":0,"
            + "\"reason\":\"idle_timeout\",\"causes\":[\"idle_timeout\"]}\n")
    }

    @Test func relay_withNoUpstream_andNoCauses() {
        var record = AccessLogRecord()
        record.relay = true
        #expect(AccessLogUnitTests.line(record, .text).contains(" client=- worker=0 mode=relay upstream=- tries=0 connect_ms=-1 "))
        #expect(AccessLogUnitTests.line(record, .text).hasSuffix(" reason=unknown causes=-\n"))
        let json = AccessLogUnitTests.line(record, .json)
        #expect(json.contains("\"client_ip\":null,\"client_port\":0,") && json.contains("\"upstream_ip\":null,\"upstream_port\":null,"))
        #expect(json.hasSuffix("\"reason\":\"unknown\",\"causes\":[]}\n"))
    }

    @Test(arguments: [
        (Int64(0), "1970-01-01T00:00:00.000Z"), (-1, "1969-12-31T23:59:59.999Z"), (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (4_102_444_799_999, "2099-12-31T23:59:59.999Z"), (1_764_672_641_123, "2025-12-02T10:50:41.123Z"),
    ])
    func timestamps_areRFC3339_UTC_withMilliseconds(milliseconds: Int64, text: String) {
        var output = ByteOutput(capacity: 64)
        defer { output.deallocate() }
        output.appendTimestamp(millisecondsSinceEpoch: milliseconds)
        #expect(String(decoding: UnsafeBufferPointer(start: output.base, count: output.count), as: UTF8.self) == text)
    }

    @Test func rawAddress_roundTrips() {
        for text in ["127.0.0.1:1", "10.1.2.3:65535", "[::1]:7000", "[2001:db8::42]:443", "[::ffff:1.2.3.4]:9"] {
            let address = try! SocketAddress(parsing: text)
            #expect(SocketAddress(RawSocketAddress(address)) == address, "\(text)")
        }
        #expect(RawSocketAddress().kind == .none && SocketAddress(RawSocketAddress()) == nil)
    }

    @Test func record_isFixedSize() {
        // The ring holds records at their stride: 112 bytes (108 of fields since the addresses
        // were packed to 19 bytes each).
        #expect(MemoryLayout<AccessLogRecord>.stride == 112, "docs/OPERATIONS.md quotes the copy per connection")
        #expect(MemoryLayout<AccessLogRecord>.size <= 112)
        #expect(_isPOD(AccessLogRecord.self), "no reference, no String: a plain copy into the ring")
    }

    @Test func ring_refusesWhenFull_andKeepsOrderAcrossTheWrap() {
        let ring = AccessLogRing(capacity: 3)
        #expect(ring.capacity == 4)
        var record = AccessLogRecord()
        for round in 0..<3 {
            for index in 0..<4 {
                record.worker = UInt16(round * 10 + index)
                #expect(ring.push(record) == index + 1)
            }
            #expect(ring.push(record) == nil, "full: refused, never overwritten")
            var seen: [UInt16] = []
            #expect(ring.drain { seen.append($0.worker) } == 4)
            #expect(seen == (0..<4).map { UInt16(round * 10 + $0) })
            #expect(ring.count == 0)
        }
    }

    /// One producer thread, one consumer thread: every record arrives once, in order (under
    /// TSan, the ring's acquire/release pairs are what orders the slots).
    @Test func ring_oneProducerOneConsumer_losesNothingThatFit() {
        let ring = AccessLogRing(capacity: 64)
        let total = 200_000
        let accepted = Latch<Int>()
        let producer = ThreadHandle.start {
            var record = AccessLogRecord()
            var pushed = 0
            for index in 0..<total {
                record.bytesReceived = UInt64(index)
                while ring.push(record) == nil {}  // full: spin until the consumer frees a slot
                pushed += 1
            }
            accepted.set(pushed)
        }
        var expected: UInt64 = 0
        var ordered = true
        while expected < UInt64(total) {
            ring.drain { record in
                if record.bytesReceived != expected { ordered = false }
                expected += 1
            }
        }
        producer.join()
        #expect(accepted.wait() == total)
        #expect(ordered)
        #expect(expected == UInt64(total))
    }
}

/// `--max-connections-per-client`'s table, without sockets.
@Suite struct ClientLimitsTests {
    static func v4(_ last: UInt64, port: UInt16 = 1) -> RawSocketAddress {
        RawSocketAddress(kind: .ipv4, port: port, high: 0x00_00_00_0a | (last << 24), low: 0)
    }

    @Test func limit_countsByAddress_notPort_andFreesAtZero() {
        let limits = ClientLimits(limit: 3, connections: 100, seed: 1)
        let client = ClientLimitsTests.v4(1)
        for port in 1...3 { #expect(limits.acquire(ClientLimitsTests.v4(1, port: UInt16(port))) == .admitted) }
        #expect(limits.acquire(ClientLimitsTests.v4(1, port: 9)) == .refused, "the 4th, from another port of the same address")
        #expect(limits.count(client) == 3, "a refusal counts nothing")
        #expect(limits.acquire(ClientLimitsTests.v4(2)) == .admitted, "another address has its own count")
        limits.release(client)
        #expect(limits.acquire(client) == .admitted, "a close frees a slot")
        for _ in 0..<3 { limits.release(client) }
        limits.release(ClientLimitsTests.v4(2))
        #expect(limits.count(client) == 0 && limits.entryCount == 0, "entries go when their count is back to 0")
    }

    @Test func ipv4_andIPv6_neverShareAnEntry() {
        let limits = ClientLimits(limit: 1, connections: 100, seed: 2)
        let v4 = ClientLimitsTests.v4(7)
        let v6 = RawSocketAddress(kind: .ipv6, port: 1, high: v4.high, low: 0)
        #expect(limits.acquire(v4) == .admitted)
        #expect(limits.acquire(v6) == .admitted)
        #expect(limits.acquire(v4) == .refused)
        #expect(limits.acquire(RawSocketAddress()) == .untracked, "no address: nothing to count by")
    }

    /// The table's size is fixed: addresses beyond what a shard holds are admitted untracked
    /// (and counted by the worker as table full); nothing is lost when they go.
    @Test func fullTable_admitsUntracked_andStaysConsistent() {
        let limits = ClientLimits(limit: 2, connections: 1, seed: 3)
        #expect(limits.slotsPerShard == 8)
        var admitted: [RawSocketAddress] = []
        var untracked = 0
        for index in 0..<2000 {
            let address = ClientLimitsTests.v4(UInt64(index & 0xff), port: 1)
            let distinct = RawSocketAddress(kind: .ipv4, port: 1, high: address.high | (UInt64(index >> 8) << 16), low: 0)
            switch limits.acquire(distinct) {
            case .admitted: admitted.append(distinct)
            case .untracked: untracked += 1
            case .refused: Issue.record("a first connection refused")
            }
        }
        #expect(untracked > 0)
        #expect(limits.entryCount == admitted.count)
        #expect(admitted.count <= ClientLimits.shardCount * (limits.slotsPerShard - 1))
        for address in admitted { limits.release(address) }
        #expect(limits.entryCount == 0)
    }

    /// Random acquires and releases against a dictionary: the counts always agree (deletion by
    /// backward shift keeps every entry reachable).
    @Test func randomTraffic_matchesAModel() {
        let limits = ClientLimits(limit: 4, connections: 256, seed: 4)
        var model: [UInt64: Int] = [:]
        var random = SplitMix64(seed: 42)
        for _ in 0..<50_000 {
            let key = random.next() % 300
            let address = RawSocketAddress(kind: .ipv6, port: 0, high: key &* 0x9e37_79b9, low: key)
            if random.next() % 2 == 0 {
                let result = limits.acquire(address)
                if result == .admitted { model[key, default: 0] += 1 }
                #expect(result != .refused || model[key] == 4)
            } else if let count = model[key], count > 0 {
                limits.release(address)
                model[key] = count == 1 ? nil : count - 1
            }
        }
        for (key, count) in model {
            #expect(limits.count(RawSocketAddress(kind: .ipv6, port: 0, high: key &* 0x9e37_79b9, low: key)) == count)
        }
        #expect(limits.entryCount == model.count)
    }
}
