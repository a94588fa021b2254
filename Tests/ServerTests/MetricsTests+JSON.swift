import Foundation
import StatsEndpoint
import Testing

/// The JSON document (/stats): totals, the keys its readers use, empty pools.
extension MetricsTests {
    @Test func jsonTotals_areTheSumsOverWorkers() throws {
        let (stats, process) = try Self.distinctFigures()
        let json = try jsonObject(MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now))
        let workers = try #require(json["workers"] as? [[String: Any]])
        let totals = try #require(json["totals"] as? [String: Any])
        #expect(workers.map { ($0["worker"] as? NSNumber)?.intValue } == [0, 1])
        var checked = 0
        for (key, value) in workers[0] where key != "worker" && key != "buffers" {
            if value is NSNumber {
                let sum = workers.reduce(0.0) { $0 + (($1[key] as? NSNumber)?.doubleValue ?? .nan) }
                #expect((totals[key] as? NSNumber)?.doubleValue == sum, "totals.\(key)")
                checked += 1
            } else if let parts = value as? [String: Any] {
                for part in parts.keys {
                    let sum = workers.reduce(0.0) { $0 + ((($1[key] as? [String: Any])?[part] as? NSNumber)?.doubleValue ?? .nan) }
                    #expect(((totals[key] as? [String: Any])?[part] as? NSNumber)?.doubleValue == sum, "totals.\(key).\(part)")
                    checked += 1
                }
            } else {
                Issue.record("workers[].\(key) is neither a number nor an object of numbers")
            }
        }
        #expect(checked >= 19)
        #expect((totals["buffers_in_use"] as? NSNumber)?.intValue == stats.buffers.totalInUse)
        #expect((totals["connections_rejected"] as? NSNumber)?.uint64Value == stats.connectionsRejected)
        #expect((totals["accept_errors"] as? [String: Any])?.count == 4)
        #expect((totals["drain_connections"] as? [String: Any])?.keys.sorted() == ["completed", "cut"])
    }

    @Test func jsonDocument_keepsEveryKeyItsReadersUse() throws {
        // The document's keys before the metric table (the dashboard, scripts/check-dashboard.sh,
        // scripts/soak.py, FaultTests and operators read them): each is still there, with its type.
        let (stats, process) = try Self.distinctFigures()
        let json = try jsonObject(MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now))
        let keys = keyPaths(json)
        let before = """
            draining monotonic_seconds buffer_size_bytes totals workers overflow process
            totals.connections_active totals.connections_accepted totals.connections_rejected totals.bytes_received
            totals.bytes_sent totals.backpressure_pauses totals.buffer_waits totals.upstream_connect_failures
            totals.upstream_resets totals.idle_timeouts totals.buffers_in_use
            workers[].worker workers[].connections_active workers[].connections_accepted workers[].connections_closed
            workers[].bytes_received workers[].bytes_sent workers[].backpressure_pauses workers[].buffer_waits
            workers[].upstream_connect_failures workers[].upstream_resets workers[].idle_timeouts workers[].buffers
            workers[].buffers.capacity workers[].buffers.in_use workers[].buffers.high_water workers[].buffers.utilisation
            workers[].buffers.overflow_draws workers[].buffers.overflow_draw_failures workers[].buffers.remote_returns
            overflow.capacity overflow.max_capacity overflow.in_use overflow.high_water overflow.utilisation
            overflow.draws overflow.draw_failures overflow.growth_events overflow.recent_growth_events
            overflow.recent_growth_events[].monotonic_seconds overflow.recent_growth_events[].seconds_ago
            overflow.recent_growth_events[].capacity_before overflow.recent_growth_events[].capacity_after
            overflow.lock overflow.lock.acquisitions overflow.lock.contended overflow.lock.wait_seconds
            process.resident_memory_bytes process.cpu_seconds process.open_fds process.start_time_seconds
            """.split(whereSeparator: \.isWhitespace).map(String.init)
        for key in before { #expect(keys.contains(key) as Bool, "\(key) is missing") }
        // The new ones, as the dashboard reads them.
        let added = """
            totals.connections_closed totals.client_resets totals.write_timeouts totals.linger_timeouts totals.stalled_evictions
            totals.accept_errors.process_file_limit totals.accept_errors.system_file_limit totals.accept_errors.memory
            totals.accept_errors.other totals.drain_connections.completed totals.drain_connections.cut
            workers[].client_resets workers[].write_timeouts workers[].linger_timeouts workers[].accept_errors.memory
            workers[].drain_connections.cut workers[].buffers.max_capacity workers[].buffers.taken
            workers[].buffers.pending_returns
            totals.upstream_unavailable workers[].upstream_unavailable upstreams
            upstreams[].address upstreams[].entry upstreams[].backup upstreams[].weight upstreams[].up
            upstreams[].connections_active upstreams[].selected upstreams[].connect_failures.refused
            upstreams[].connect_failures.timeout upstreams[].connect_failures.other upstreams[].health_checks.passed
            upstreams[].health_checks.failed upstreams[].state_changes.down upstreams[].state_changes.up
            upstreams[].connect_seconds.bounds upstreams[].connect_seconds.counts upstreams[].connect_seconds.sum
            upstreams[].connect_seconds.count
            """.split(whereSeparator: \.isWhitespace).map(String.init)
        for key in added { #expect(keys.contains(key) as Bool, "\(key) is missing") }
        // An upstream's entry: strings, a boolean, and the histogram as arrays.
        let text = MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now)
        let upstreams = try #require(json["upstreams"] as? [[String: Any]])
        #expect(upstreams.map { $0["address"] as? String } == ["127.0.0.1:7001", "[::1]:7002"])
        #expect(text.contains(#""upstreams":[{"address":"127.0.0.1:7001","entry":"upstream.internal:7001","backup":false,"#),
                "\(text)")
        let histogram = try #require(upstreams[1]["connect_seconds"] as? [String: Any])
        #expect((histogram["bounds"] as? [NSNumber])?.count == 15)
        #expect((histogram["counts"] as? [NSNumber])?.count == 16)
        #expect((histogram["count"] as? NSNumber)?.uint64Value == stats.upstreams[1].connectTimes.total)
        // Types: a boolean, arrays, objects, and numbers everywhere else.
        #expect(text.hasPrefix(#"{"draining":true,"#), "draining is a JSON boolean, first: \(text.prefix(40))")
        #expect((json["workers"] as? [Any])?.count == 2)
        let events = try #require((json["overflow"] as? [String: Any])?["recent_growth_events"] as? [[String: Any]])
        #expect(events.count == 2)
        #expect((events.first?["seconds_ago"] as? NSNumber)?.doubleValue == 2.5)
        #expect((events.last?["seconds_ago"] as? NSNumber)?.doubleValue == 1.75)
        #expect((json["monotonic_seconds"] as? NSNumber)?.doubleValue == 10)
    }

    @Test func jsonDocument_emptyPools_haveUtilisationZero_andStillParse() throws {
        var (stats, process) = try Self.distinctFigures()
        stats.buffers.overflow.capacity = 0
        stats.buffers.workers[0].capacity = 0
        stats.buffers.overflow.recentGrowthEvents = []
        let json = try jsonObject(MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now))
        let overflow = try #require(json["overflow"] as? [String: Any])
        #expect((overflow["utilisation"] as? NSNumber)?.doubleValue == 0)
        #expect((overflow["recent_growth_events"] as? [Any])?.isEmpty == true)
        let worker = try #require((json["workers"] as? [[String: Any]])?.first?["buffers"] as? [String: Any])
        #expect((worker["utilisation"] as? NSNumber)?.doubleValue == 0)
    }

    // MARK: Helpers

    /// Every key path in a document, arrays written `[]`: "workers[].buffers.in_use".
    func keyPaths(_ node: Any, prefix: String = "") -> Set<String> {
        var out: Set<String> = []
        if let object = node as? [String: Any] {
            for (key, value) in object {
                let path = prefix.isEmpty ? key : prefix + "." + key
                out.insert(path)
                out.formUnion(keyPaths(value, prefix: path))
            }
        } else if let array = node as? [Any] {
            for item in array { out.formUnion(keyPaths(item, prefix: prefix + "[]")) }
        }
        return out
    }
}
