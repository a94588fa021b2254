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

    // MARK: The Prometheus text

    @Test func prometheusText_isWellFormed_oneFamilyPerMetric() throws {
        let (stats, process) = try Self.distinctFigures()
        let text = MetricsRenderer.prometheus(stats, process: process)
        #expect(text.hasSuffix("\n"))
        var families: [String] = []
        var types: [String: String] = [:]
        var series: Set<String> = []
        var current: String?
        let name = #/[a-zA-Z_:][a-zA-Z0-9_:]*/#
        let sampleLine = #/([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-z_]+="[^"\\\n]*"(,[a-z_]+="[^"\\\n]*")*\})? (\S+)/#
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            if line.hasPrefix("# HELP ") {
                let parts = line.dropFirst(7).split(separator: " ", maxSplits: 1)
                #expect(parts.count == 2 && !parts[1].isEmpty, "HELP without text: \(line)")
                let family = String(parts[0])
                #expect(family.wholeMatch(of: name) != nil, "bad name \(family)")
                #expect(!families.contains(family), "\(family) declared twice")
                families.append(family)
                current = family
            } else if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                #expect(parts.count == 2 && String(parts[0]) == current, "TYPE not right after its HELP: \(line)")
                types[String(parts[0])] = parts.count == 2 ? String(parts[1]) : nil
            } else {
                let match = try #require(line.wholeMatch(of: sampleLine), "not a sample line: \(line)")
                #expect(String(match.1) == current, "\(match.1) outside its family \(current ?? "-")")
                #expect(Double(match.4) != nil, "not a number: \(line)")
                #expect(series.insert(String(line.split(separator: " ")[0])).inserted, "the same series twice: \(line)")
            }
        }
        #expect(families == Metric.all.map(\.name), "the text's families are the table's, in its order")
        for family in families {
            let type = try #require(types[family])
            #expect(type == "counter" || type == "gauge", "\(family): \(type)")
            #expect(family.hasSuffix("_total") == (type == "counter"), "\(family) is a \(type): counters and only counters end in _total")
            #expect(family.hasPrefix("fastalloc_") || family.hasPrefix("process_"), "\(family)")
        }
    }

    @Test func prometheusText_keepsEveryFamilyItHad() throws {
        // Dashboards, alerts (deploy/) and scripts query these: a name may not change.
        let (stats, process) = try Self.distinctFigures()
        let text = MetricsRenderer.prometheus(stats, process: process)
        let before: [(String, String)] = [
            ("fastalloc_buffer_size_bytes", "gauge"), ("fastalloc_buffers_capacity", "gauge"),
            ("fastalloc_buffers_max_capacity", "gauge"), ("fastalloc_buffers_in_use", "gauge"),
            ("fastalloc_buffers_high_water", "gauge"), ("fastalloc_overflow_draws_total", "counter"),
            ("fastalloc_overflow_draw_failures_total", "counter"), ("fastalloc_pool_growth_events_total", "counter"),
            ("fastalloc_lock_acquisitions_total", "counter"), ("fastalloc_lock_contended_total", "counter"),
            ("fastalloc_lock_wait_seconds_total", "counter"), ("fastalloc_backpressure_pauses_total", "counter"),
            ("fastalloc_buffer_waits_total", "counter"), ("fastalloc_connections_active", "gauge"),
            ("fastalloc_connections_accepted_total", "counter"), ("fastalloc_connections_rejected_total", "counter"),
            ("fastalloc_idle_timeouts_total", "counter"), ("fastalloc_upstream_connect_failures_total", "counter"),
            ("fastalloc_upstream_resets_total", "counter"), ("fastalloc_bytes_received_total", "counter"),
            ("fastalloc_bytes_sent_total", "counter"), ("fastalloc_draining", "gauge"),
            ("process_resident_memory_bytes", "gauge"), ("process_cpu_seconds_total", "counter"),
            ("process_open_fds", "gauge"), ("process_start_time_seconds", "gauge"),
        ]
        for (family, type) in before {
            #expect(text.contains("\n# TYPE \(family) \(type)\n") || text.hasPrefix("# HELP \(family) "), "\(family) \(type)")
        }
    }

    @Test func labelValuesAndHelp_areEscaped() {
        #expect(MetricsRenderer.escapedLabelValue(#"a"b\c"# + "\nd") == #"a\"b\\c\nd"#)
        #expect(MetricsRenderer.escapedHelp(#"a\b"# + "\nc") == #"a\\b\nc"#)
        #expect(MetricsRenderer.escapedLabelValue("process_file_limit") == "process_file_limit")
    }

    // MARK: The JSON document

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
            """.split(whereSeparator: \.isWhitespace).map(String.init)
        for key in added { #expect(keys.contains(key) as Bool, "\(key) is missing") }
        // Types: a boolean, arrays, objects, and numbers everywhere else.
        let text = MetricsRenderer.json(stats, process: process, monotonicNowNanoseconds: Self.now)
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

/// One number inside the statistics, found by reflection (so that a field added later is found too).
struct StatisticsLeaf {
    var path: String
    /// The type that declares the field, and the field.
    var owner: String
    var field: String
    var value: Double
    /// The index in `workers` (server or buffer pools) it sits under, and in `recentGrowthEvents`.
    var worker: Int?
    var event: Int?

    static func walk(_ value: Any, owner: String = "", field: String = "", path: String = "",
                     worker: Int? = nil, event: Int? = nil) -> [StatisticsLeaf] {
        func leaf(_ number: Double) -> [StatisticsLeaf] {
            [StatisticsLeaf(path: path, owner: owner, field: field, value: number, worker: worker, event: event)]
        }
        switch value {
        case let number as UInt64: return leaf(Double(number))
        case let number as Int: return leaf(Double(number))
        case let number as Double: return leaf(number)
        case let flag as Bool: return leaf(flag ? 1 : 0)
        case let phase as ShutdownPhase: return leaf(Double(phase.rawValue))
        default: break
        }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .collection:
            return mirror.children.enumerated().flatMap { index, child in
                walk(child.value, owner: owner, field: field, path: "\(path)[\(index)]",
                     worker: field == "workers" ? index : worker, event: field == "recentGrowthEvents" ? index : event)
            }
        case .struct:
            let type = String(describing: Swift.type(of: value))
            return mirror.children.flatMap { child in
                let label = child.label ?? "?"
                return walk(child.value, owner: type, field: label, path: path.isEmpty ? label : "\(path).\(label)",
                            worker: worker, event: event)
            }
        default:
            Issue.record("\(path): a field of type \(Swift.type(of: value)) that MetricsTests cannot read: teach StatisticsLeaf.walk")
            return []
        }
    }
}

enum JSONKey: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, CustomStringConvertible {
    case key(String)
    case index(Int)
    init(stringLiteral value: String) { self = .key(value) }
    init(integerLiteral value: Int) { self = .index(value) }
    var description: String {
        switch self {
        case .key(let name): return name
        case .index(let index): return "[\(index)]"
        }
    }
}

/// Where one field of the statistics must appear: Prometheus series (name and exact labels) and
/// JSON paths, with what the field is divided by in the rendering (nanoseconds to seconds), or
/// whether it is rendered as a flag (1 for any value but 0).
/// This is the test's own statement of the names, written apart from Metrics+Table.swift.
struct FieldExpectation {
    var prometheus: [(name: String, labels: [String: String])]
    var json: [[JSONKey]]
    var divisor: Double = 1
    var flag = false

    /// The value the renderings must show for a field holding `value`.
    func rendered(_ value: Double) -> Double { flag ? (value != 0 ? 1 : 0) : value / divisor }

    static func of(_ leaf: StatisticsLeaf) -> FieldExpectation? {
        let w = leaf.worker ?? -1
        let worker = ["worker": String(w)]
        func perWorker(_ name: String, _ key: String) -> FieldExpectation {
            FieldExpectation(prometheus: [(name, worker)], json: [["workers", .index(w), .key(key)]])
        }
        func local(_ name: String, _ key: String) -> FieldExpectation {
            FieldExpectation(prometheus: [(name, ["pool": "local", "worker": String(w)])], json: [["workers", .index(w), "buffers", .key(key)]])
        }
        func overflow(_ name: String, _ key: String) -> FieldExpectation {
            FieldExpectation(prometheus: [(name, ["pool": "overflow"])], json: [["overflow", .key(key)]])
        }
        switch (leaf.owner, leaf.field) {
        case ("ServerStatistics", "connectionsRejected"):
            return FieldExpectation(prometheus: [("fastalloc_connections_rejected_total", [:])], json: [["totals", "connections_rejected"]])
        // The phase (serving 0, draining 1, stopping 2) is rendered as a flag: draining or stopping.
        case ("ServerStatistics", "shutdownPhase"):
            return FieldExpectation(prometheus: [("fastalloc_draining", [:])], json: [["draining"]], flag: true)

        // The worker number is a label: its value is checked through every other field's labels.
        case ("WorkerStatistics", "worker"), ("WorkerBufferStatistics", "worker"):
            return FieldExpectation(prometheus: [], json: [["workers", .index(w), "worker"]])
        case ("WorkerStatistics", "connectionsActive"): return perWorker("fastalloc_connections_active", "connections_active")
        case ("WorkerStatistics", "connectionsAccepted"): return perWorker("fastalloc_connections_accepted_total", "connections_accepted")
        case ("WorkerStatistics", "connectionsClosed"): return perWorker("fastalloc_connections_closed_total", "connections_closed")
        case ("WorkerStatistics", "bytesReceived"): return perWorker("fastalloc_bytes_received_total", "bytes_received")
        case ("WorkerStatistics", "bytesSent"): return perWorker("fastalloc_bytes_sent_total", "bytes_sent")
        case ("WorkerStatistics", "backpressurePauses"): return perWorker("fastalloc_backpressure_pauses_total", "backpressure_pauses")
        case ("WorkerStatistics", "bufferWaits"): return perWorker("fastalloc_buffer_waits_total", "buffer_waits")
        case ("WorkerStatistics", "upstreamConnectFailures"):
            return perWorker("fastalloc_upstream_connect_failures_total", "upstream_connect_failures")
        case ("WorkerStatistics", "upstreamResets"): return perWorker("fastalloc_upstream_resets_total", "upstream_resets")
        case ("WorkerStatistics", "clientResets"): return perWorker("fastalloc_client_resets_total", "client_resets")
        case ("WorkerStatistics", "idleTimeouts"): return perWorker("fastalloc_idle_timeouts_total", "idle_timeouts")
        case ("WorkerStatistics", "writeTimeouts"): return perWorker("fastalloc_write_timeouts_total", "write_timeouts")
        case ("WorkerStatistics", "lingerTimeouts"): return perWorker("fastalloc_linger_timeouts_total", "linger_timeouts")
        case ("WorkerStatistics", "stalledEvictions"): return perWorker("fastalloc_stalled_evictions_total", "stalled_evictions")
        case ("WorkerStatistics", "drainCompleted"), ("WorkerStatistics", "drainCut"):
            let outcome = leaf.field == "drainCut" ? "cut" : "completed"
            return FieldExpectation(prometheus: [("fastalloc_drain_connections_total", worker.merging(["outcome": outcome]) { $1 })],
                                    json: [["workers", .index(w), "drain_connections", .key(outcome)]])
        case ("AcceptErrorStatistics", let field):
            let reasons = ["processFileLimit": "process_file_limit", "systemFileLimit": "system_file_limit",
                           "memory": "memory", "other": "other"]
            guard let reason = reasons[field] else { return nil }
            return FieldExpectation(prometheus: [("fastalloc_accept_errors_total", worker.merging(["reason": reason]) { $1 })],
                                    json: [["workers", .index(w), "accept_errors", .key(reason)]])

        case ("PacketBufferStatistics", "bufferSize"):
            return FieldExpectation(prometheus: [("fastalloc_buffer_size_bytes", [:])], json: [["buffer_size_bytes"]])
        case ("WorkerBufferStatistics", "capacity"):  // a local pool's maximum is its capacity
            var both = local("fastalloc_buffers_capacity", "capacity")
            both.prometheus.append(("fastalloc_buffers_max_capacity", ["pool": "local", "worker": String(w)]))
            both.json.append(["workers", .index(w), "buffers", "max_capacity"])
            return both
        case ("WorkerBufferStatistics", "inUse"): return local("fastalloc_buffers_in_use", "in_use")
        case ("WorkerBufferStatistics", "highWater"): return local("fastalloc_buffers_high_water", "high_water")
        case ("WorkerBufferStatistics", "takes"): return local("fastalloc_buffers_taken_total", "taken")
        case ("WorkerBufferStatistics", "remoteReturns"): return local("fastalloc_buffers_remote_returns_total", "remote_returns")
        case ("WorkerBufferStatistics", "pendingReturns"): return local("fastalloc_buffers_pending_returns", "pending_returns")
        case ("WorkerBufferStatistics", "overflowDraws"):
            return FieldExpectation(prometheus: [("fastalloc_overflow_draws_total", worker)],
                                    json: [["workers", .index(w), "buffers", "overflow_draws"]])
        case ("WorkerBufferStatistics", "failedDraws"):
            return FieldExpectation(prometheus: [("fastalloc_overflow_draw_failures_total", worker)],
                                    json: [["workers", .index(w), "buffers", "overflow_draw_failures"]])
        case ("OverflowBufferStatistics", "capacity"): return overflow("fastalloc_buffers_capacity", "capacity")
        case ("OverflowBufferStatistics", "maxCapacity"): return overflow("fastalloc_buffers_max_capacity", "max_capacity")
        case ("OverflowBufferStatistics", "inUse"): return overflow("fastalloc_buffers_in_use", "in_use")
        case ("OverflowBufferStatistics", "highWater"): return overflow("fastalloc_buffers_high_water", "high_water")
        case ("OverflowBufferStatistics", "draws"): return overflow("fastalloc_buffers_taken_total", "draws")
        case ("OverflowBufferStatistics", "failedDraws"): return overflow("fastalloc_buffers_take_failures_total", "draw_failures")
        case ("OverflowBufferStatistics", "growthEvents"): return overflow("fastalloc_pool_growth_events_total", "growth_events")
        // A list of events is not a metric (its count is fastalloc_pool_growth_events_total): JSON only.
        case ("GrowthEvent", let field):
            let keys = ["monotonicNanoseconds": "monotonic_seconds", "capacityBefore": "capacity_before", "capacityAfter": "capacity_after"]
            guard let key = keys[field], let event = leaf.event else { return nil }
            return FieldExpectation(prometheus: [], json: [["overflow", "recent_growth_events", .index(event), .key(key)]],
                                    divisor: field == "monotonicNanoseconds" ? 1e9 : 1)
        case ("LockStatistics", let field):
            let names = ["acquisitions": ("fastalloc_lock_acquisitions_total", "acquisitions"),
                         "contended": ("fastalloc_lock_contended_total", "contended"),
                         "waitNanoseconds": ("fastalloc_lock_wait_seconds_total", "wait_seconds")]
            guard let (name, key) = names[field] else { return nil }
            return FieldExpectation(prometheus: [(name, ["lock": "overflow"])], json: [["overflow", "lock", .key(key)]],
                                    divisor: field == "waitNanoseconds" ? 1e9 : 1)

        case ("ProcessFigures", let field):
            let names = ["residentMemoryBytes": ("process_resident_memory_bytes", "resident_memory_bytes"),
                         "cpuSeconds": ("process_cpu_seconds_total", "cpu_seconds"),
                         "openFileDescriptors": ("process_open_fds", "open_fds"),
                         "startTimeSeconds": ("process_start_time_seconds", "start_time_seconds")]
            guard let (name, key) = names[field] else { return nil }
            return FieldExpectation(prometheus: [(name, [:])], json: [["process", .key(key)]])
        default:
            return nil
        }
    }
}

/// One sample line of the text exposition.
struct PrometheusSample {
    var name: String
    var labels: [String: String]
    var value: Double

    struct BadLine: Error, CustomStringConvertible {
        var line: String
        var description: String { "not a sample line: \(line)" }
    }

    static func parse(_ text: String) throws -> [PrometheusSample] {
        try text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { line in
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                throw BadLine(line: String(line))
            }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else {
                return PrometheusSample(name: String(series), labels: [:], value: value)
            }
            var labels: [String: String] = [:]
            for pair in series[series.index(after: brace)...].dropLast().split(separator: ",") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, parts[1].hasPrefix("\""), parts[1].hasSuffix("\"") else { throw BadLine(line: String(line)) }
                labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
            }
            return PrometheusSample(name: String(series[..<brace]), labels: labels, value: value)
        }
    }
}
