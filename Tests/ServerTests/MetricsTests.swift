import FastAlloc
import Foundation
import PacketBuffers
import ServerCore
import StatsEndpoint
import Testing
import UVLoop

/// The two renderings of the statistics (/metrics and /stats) from the one table of metrics:
/// every field of the statistics appears in both under its name, the Prometheus text is well
/// formed, totals are the sums over workers, and the JSON keys readers use are still there.
/// No sockets except one short-lived server whose final snapshot gives a ServerStatistics value
/// (the statistics types have no public initialiser; their fields are public vars).
///
/// This file: the fixtures and every field in both renderings (by reflection, against
/// MetricsFieldExpectations.swift); `+Prometheus` the text format; `+JSON` the document.
@Suite struct MetricsTests {
    // MARK: Fixtures

    /// A snapshot with a different value in every field (worker numbers aside, which are labels),
    /// 2 workers, 2 upstreams (IPv4 and IPv6), 2 recent growth events, draining; and process
    /// figures likewise. Flags and strings (an upstream's up, backup, address, entry) differ
    /// between the two upstreams; the histograms' bounds are the server's own (they are `le` labels).
    static func distinctFigures() throws -> (ServerStatistics, ProcessFigures) {
        // A relay (2 workers) whose upstreams are never connected: its final snapshot lists them.
        var stats = finish(try startServer(.relay) { config in
            config.upstreams = [UpstreamSpec(SocketAddress(host: "127.0.0.1", port: 7001)),
                                UpstreamSpec(SocketAddress(host: "::1", port: 7002), weight: 3, backup: true)]
        })
        var counter: UInt64 = 1000
        func n() -> UInt64 { counter += 1; return counter }
        func i() -> Int { Int(n()) }
        #expect(stats.workers.count == 2 && stats.buffers.workers.count == 2)
        for index in stats.workers.indices {
            stats.workers[index].worker = index
            stats.workers[index].connectionsActive = i()
            stats.workers[index].connectionsAccepted = n()
            stats.workers[index].connectionsClosed = n()
            stats.workers[index].bytesReceived = n()
            stats.workers[index].bytesSent = n()
            stats.workers[index].backpressurePauses = n()
            stats.workers[index].bufferWaits = n()
            stats.workers[index].upstreamConnectFailures = n()
            stats.workers[index].upstreamUnavailable = n()
            stats.workers[index].upstreamResets = n()
            stats.workers[index].clientResets = n()
            stats.workers[index].idleTimeouts = n()
            stats.workers[index].acceptErrors.processFileLimit = n()
            stats.workers[index].acceptErrors.systemFileLimit = n()
            stats.workers[index].acceptErrors.memory = n()
            stats.workers[index].acceptErrors.other = n()
            stats.workers[index].writeTimeouts = n()
            stats.workers[index].lingerTimeouts = n()
            stats.workers[index].stalledEvictions = n()
            stats.workers[index].drainCompleted = n()
            stats.workers[index].drainCut = n()
            stats.workers[index].accessLogDropped = n()
            stats.workers[index].clientLimitRejections = n()
            stats.workers[index].clientLimitTableFull = n()
            stats.workers[index].proxyHeadersSent = n()
            stats.workers[index].proxyHeadersReceived = n()
            for reason in ProxyProtocolFailure.allCases { stats.workers[index].proxyProtocolErrors[reason] = n() }
        }
        stats.connectionsRejected = n()
        stats.upstreamResolveFailures = n()
        stats.reloads.reloads = n()
        stats.reloads.failures = n()
        stats.reloads.generation = n()
        stats.reloads.loadedAt = Double(n()) + 0.5
        stats.upgrades.handedOver = n()
        stats.upgrades.failures = n()
        stats.upgrades.inherited = true
        #expect(stats.upstreams.map(\.address) == ["127.0.0.1:7001", "[::1]:7002"])
        for index in stats.upstreams.indices {
            // A name's entry for the first (a name stands for its addresses); the second's is its address.
            if index == 0 { stats.upstreams[index].entry = "upstream.internal:7001" }
            stats.upstreams[index].weight = i()
            stats.upstreams[index].up = index == 0
            stats.upstreams[index].active = i()
            stats.upstreams[index].selected = n()
            stats.upstreams[index].connectRefused = n()
            stats.upstreams[index].connectTimedOut = n()
            stats.upstreams[index].connectOther = n()
            stats.upstreams[index].checksPassed = n()
            stats.upstreams[index].checksFailed = n()
            stats.upstreams[index].wentDown = n()
            stats.upstreams[index].cameUp = n()
            #expect(stats.upstreams[index].connectTimes.counts.count == stats.upstreams[index].connectTimes.bounds.count + 1)
            stats.upstreams[index].connectTimes.counts = stats.upstreams[index].connectTimes.counts.map { _ in n() }
            stats.upstreams[index].connectTimes.sumSeconds = index == 0 ? 0.375 : 0.625  // exact in binary
        }
        stats.shutdownPhase = .draining
        stats.buffers.bufferSize = i()
        for index in stats.buffers.workers.indices {
            stats.buffers.workers[index].worker = index
            stats.buffers.workers[index].capacity = i()
            stats.buffers.workers[index].inUse = i()
            stats.buffers.workers[index].highWater = i()
            stats.buffers.workers[index].takes = n()
            stats.buffers.workers[index].overflowDraws = n()
            stats.buffers.workers[index].failedDraws = n()
            stats.buffers.workers[index].remoteReturns = n()
            stats.buffers.workers[index].pendingReturns = i()
        }
        stats.buffers.overflow.capacity = i()
        stats.buffers.overflow.maxCapacity = i()
        stats.buffers.overflow.inUse = i()
        stats.buffers.overflow.highWater = i()
        stats.buffers.overflow.draws = n()
        stats.buffers.overflow.failedDraws = n()
        stats.buffers.overflow.growthEvents = i()
        // Seconds that are exact in binary, so that the rendered seconds compare exactly.
        stats.buffers.overflow.recentGrowthEvents = [
            GrowthEvent(monotonicNanoseconds: 7_500_000_000, capacityBefore: i(), capacityAfter: i()),
            GrowthEvent(monotonicNanoseconds: 8_250_000_000, capacityBefore: i(), capacityAfter: i()),
        ]
        stats.buffers.overflow.lock = LockStatistics(acquisitions: n(), contended: n(), waitNanoseconds: 1_250_000_000)
        let process = ProcessFigures(residentMemoryBytes: i(), cpuSeconds: 12.5, openFileDescriptors: i(),
                                     startTimeSeconds: 1_700_000_000.5)
        return (stats, process)
    }

    static let now: UInt64 = 10_000_000_000

    // MARK: Every field, both renderings

    @Test func everyStatisticsField_appearsUnderItsName_inPrometheusAndJSON() throws {
        let (stats, process) = try Self.distinctFigures()
        let text = MetricsRenderer.prometheus(stats, process: process)
        let samples = try PrometheusSample.parse(text)
        let json = try jsonObject(MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now))
        let leaves = StatisticsLeaf.walk(stats) + StatisticsLeaf.walk(process)
        #expect(leaves.count > 60, "the walk found \(leaves.count) fields")
        #expect(leaves.contains { $0.path == "upstreams[1].connectTimes.counts[15]" }, "the walk did not reach the upstreams' histograms")

        // Distinct values, so that a value found under a name can only have come from its field.
        // Labels aside: worker numbers, flags, strings, and a histogram's bounds (`le`).
        var seen: [Double: String] = [:]
        for leaf in leaves where leaf.field != "worker" && leaf.field != "shutdownPhase" && !leaf.flag && leaf.text == nil
            && !(leaf.owner == "HistogramSnapshot" && leaf.field == "bounds") {
            if let other = seen[leaf.value] {
                Issue.record("\(leaf.path) and \(other) both hold \(leaf.value): give the new field its own value in distinctFigures()")
            }
            seen[leaf.value] = leaf.path
        }

        var familiesMatched: Set<String> = []
        for leaf in leaves {
            guard let expected = FieldExpectation.of(leaf, upstreams: stats.upstreams) else {
                Issue.record("\(leaf.path) (\(leaf.owner).\(leaf.field)) has no metric: declare one in Metrics+Table.swift and name it in FieldExpectation")
                continue
            }
            for series in expected.prometheus {
                let matching = samples.filter { $0.name == series.name && $0.labels == series.labels }
                #expect(matching.count == 1, "\(leaf.path): \(matching.count) samples \(series.name)\(series.labels)")
                if let sample = matching.first {
                    if !expected.isLabel {
                        #expect(sample.value == expected.prometheusValue ?? expected.rendered(leaf.value),
                                "\(leaf.path): \(series.name)\(series.labels) = \(sample.value)")
                    }
                    familiesMatched.insert(series.name)
                }
            }
            for path in expected.json {
                let found = lookup(json, path)
                if let text = leaf.text {
                    #expect(found as? String == text, "\(leaf.path): /stats \(path) = \(String(describing: found))")
                } else {
                    #expect((found as? NSNumber)?.doubleValue == expected.rendered(leaf.value),
                            "\(leaf.path): /stats \(path) = \(String(describing: found))")
                }
            }
        }
        // And the other way round: no family that no field feeds.
        let families = Set(samples.map(\.name))
        #expect(families.subtracting(familiesMatched).isEmpty, "families no field accounts for: \(families.subtracting(familiesMatched))")
    }

    @Test func newFailureCounters_areRenderedPerWorker_withTheirLabels() throws {
        // The counters of issue 14 item 7, named as operators and the alerts in deploy/ use them.
        let (stats, process) = try Self.distinctFigures()
        let samples = try PrometheusSample.parse(MetricsRenderer.prometheus(stats, process: process))
        func value(_ name: String, _ labels: [String: String]) -> Double? {
            samples.first { $0.name == name && $0.labels == labels }?.value
        }
        let worker = stats.workers[1]
        #expect(value("fastalloc_client_resets_total", ["worker": "1"]) == Double(worker.clientResets))
        #expect(value("fastalloc_connections_closed_total", ["worker": "1"]) == Double(worker.connectionsClosed))
        #expect(value("fastalloc_write_timeouts_total", ["worker": "1"]) == Double(worker.writeTimeouts))
        #expect(value("fastalloc_linger_timeouts_total", ["worker": "1"]) == Double(worker.lingerTimeouts))
        #expect(value("fastalloc_stalled_evictions_total", ["worker": "1"]) == Double(worker.stalledEvictions))
        #expect(value("fastalloc_drain_connections_total", ["worker": "1", "outcome": "completed"]) == Double(worker.drainCompleted))
        #expect(value("fastalloc_drain_connections_total", ["worker": "1", "outcome": "cut"]) == Double(worker.drainCut))
        for (reason, count) in [("process_file_limit", worker.acceptErrors.processFileLimit),
                                ("system_file_limit", worker.acceptErrors.systemFileLimit),
                                ("memory", worker.acceptErrors.memory), ("other", worker.acceptErrors.other)] {
            #expect(value("fastalloc_accept_errors_total", ["worker": "1", "reason": reason]) == Double(count), "\(reason)")
        }
    }

    @Test func upstreamFamilies_areRenderedPerAddress_withTheirLabels() throws {
        // Issue 16's families, named as deploy/ (alerts, Grafana) and scripts/check-metrics.sh use them.
        let (stats, process) = try Self.distinctFigures()
        let samples = try PrometheusSample.parse(MetricsRenderer.prometheus(stats, process: process))
        func value(_ name: String, _ labels: [String: String]) -> Double? {
            let matching = samples.filter { $0.name == name && $0.labels == labels }
            #expect(matching.count <= 1, "\(name)\(labels) twice")
            return matching.first?.value
        }
        let v6 = ["upstream": "[::1]:7002"]
        let upstream = stats.upstreams[1]
        #expect(value("fastalloc_upstream_up", ["upstream": "127.0.0.1:7001"]) == 1)
        #expect(value("fastalloc_upstream_up", v6) == 0)
        #expect(value("fastalloc_upstream_weight", ["upstream": "127.0.0.1:7001", "entry": "upstream.internal:7001", "backup": "false"])
                == Double(stats.upstreams[0].weight))
        #expect(value("fastalloc_upstream_weight", ["upstream": "[::1]:7002", "entry": "[::1]:7002", "backup": "true"]) == Double(upstream.weight))
        #expect(value("fastalloc_upstream_connections_active", v6) == Double(upstream.active))
        #expect(value("fastalloc_upstream_selected_total", v6) == Double(upstream.selected))
        for (reason, count) in [("refused", upstream.connectRefused), ("timeout", upstream.connectTimedOut), ("other", upstream.connectOther)] {
            #expect(value("fastalloc_upstream_member_connect_failures_total", ["upstream": "[::1]:7002", "reason": reason]) == Double(count))
        }
        #expect(value("fastalloc_upstream_health_checks_total", ["upstream": "[::1]:7002", "result": "failed"]) == Double(upstream.checksFailed))
        #expect(value("fastalloc_upstream_state_changes_total", ["upstream": "[::1]:7002", "to": "down"]) == Double(upstream.wentDown))
        #expect(value("fastalloc_upstream_unavailable_total", ["worker": "1"]) == Double(stats.workers[1].upstreamUnavailable))
        // The older per-worker family keeps its labels and meaning.
        #expect(value("fastalloc_upstream_connect_failures_total", ["worker": "1"]) == Double(stats.workers[1].upstreamConnectFailures))
        #expect(samples.filter { $0.name == "fastalloc_upstream_connect_failures_total" }.allSatisfy { $0.labels.keys.sorted() == ["worker"] })

        // The histogram: cumulative buckets in the server's bounds, +Inf last and equal to _count.
        let buckets = samples.filter { $0.name == "fastalloc_upstream_connect_seconds_bucket" && $0.labels["upstream"] == "[::1]:7002" }
        #expect(buckets.map { $0.labels["le"] ?? "-" } == UpstreamMember.connectTimeBounds.map(FieldExpectation.le) + ["+Inf"])
        #expect(buckets.map(\.value) == upstream.connectTimes.counts.indices.map { Double(upstream.connectTimes.counts[...$0].reduce(0, +)) })
        #expect(buckets.map { $0.labels["le"] ?? "-" }.prefix(4) == ["0.0001", "0.00025", "0.0005", "0.001"])
        #expect(value("fastalloc_upstream_connect_seconds_count", v6) == Double(upstream.connectTimes.total))
        #expect(value("fastalloc_upstream_connect_seconds_sum", v6) == 0.625)
    }

    @Test func echoMode_hasNoUpstreamSeries_butDeclaresTheFamilies() throws {
        // The families are declared (HELP, TYPE) in echo mode too, where scrapers and
        // deploy/tests/check-deploy.py read the list of names; their series appear with upstreams.
        var (stats, process) = try Self.distinctFigures()
        stats.upstreams = []
        let text = MetricsRenderer.prometheus(stats, process: process)
        #expect(!text.contains("{upstream="), "an upstream series without upstreams")
        for family in ["fastalloc_upstream_up", "fastalloc_upstream_connections_active", "fastalloc_upstream_selected_total",
                       "fastalloc_upstream_member_connect_failures_total", "fastalloc_upstream_health_checks_total",
                       "fastalloc_upstream_state_changes_total", "fastalloc_upstream_weight"] {
            #expect(text.contains("\n# TYPE \(family) "), "\(family)")
        }
        #expect(text.contains("\n# TYPE fastalloc_upstream_connect_seconds histogram\n"))
        let json = MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now)
        #expect(json.contains(#""upstreams":[],"#), "\(json.prefix(300))")
    }

    @Test func shutdownPhase_isRenderedAsDraining_inBothLaterPhases() throws {
        // As /readyz's 503: fastalloc_draining and "draining" say "not serving" (drain() or stop()).
        var (stats, process) = try Self.distinctFigures()
        for (phase, draining) in [(ShutdownPhase.serving, false), (.draining, true), (.stopping, true)] {
            stats.shutdownPhase = phase
            let samples = try PrometheusSample.parse(MetricsRenderer.prometheus(stats, process: process))
            #expect(samples.filter { $0.name == "fastalloc_draining" }.map(\.value) == [draining ? 1 : 0], "\(phase)")
            let text = MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now)
            #expect(text.hasPrefix(#"{"draining":\#(draining),"#), "\(phase): \(text.prefix(40))")
        }
    }

    // MARK: Helpers

    func jsonObject(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text.prefix(200))")
    }

    func lookup(_ json: Any, _ path: [JSONKey]) -> Any? {
        var node: Any? = json
        for key in path {
            switch key {
            case .key(let name): node = (node as? [String: Any])?[name]
            case .index(let index): node = (node as? [Any]).flatMap { index < $0.count ? $0[index] : nil }
            }
        }
        return node
    }
}
