import FastAlloc
import Foundation
import PacketBuffers
import ServerCore
import StatsEndpoint
import Testing

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
    /// 2 workers, 2 recent growth events, draining; and process figures likewise.
    static func distinctFigures() throws -> (ServerStatistics, ProcessFigures) {
        var stats = finish(try startServer(.echo))  // 2 workers
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
        }
        stats.connectionsRejected = n()
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

        // Distinct values, so that a value found under a name can only have come from its field.
        var seen: [Double: String] = [:]
        for leaf in leaves where leaf.field != "worker" && leaf.field != "shutdownPhase" {
            if let other = seen[leaf.value] {
                Issue.record("\(leaf.path) and \(other) both hold \(leaf.value): give the new field its own value in distinctFigures()")
            }
            seen[leaf.value] = leaf.path
        }

        var familiesMatched: Set<String> = []
        for leaf in leaves {
            guard let expected = FieldExpectation.of(leaf) else {
                Issue.record("\(leaf.path) (\(leaf.owner).\(leaf.field)) has no metric: declare one in Metrics+Table.swift and name it in FieldExpectation")
                continue
            }
            for series in expected.prometheus {
                let matching = samples.filter { $0.name == series.name && $0.labels == series.labels }
                #expect(matching.count == 1, "\(leaf.path): \(matching.count) samples \(series.name)\(series.labels)")
                if let sample = matching.first {
                    #expect(sample.value == expected.rendered(leaf.value), "\(leaf.path): \(series.name)\(series.labels) = \(sample.value)")
                    familiesMatched.insert(series.name)
                }
            }
            for path in expected.json {
                let found = lookup(json, path)
                #expect((found as? NSNumber)?.doubleValue == expected.rendered(leaf.value),
                        "\(leaf.path): /stats \(path) = \(String(describing: found))")
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
