import ServerCore
import Testing

/// One number (or string) inside the statistics, found by reflection (so that a field added
/// later is found too).
struct StatisticsLeaf {
    var path: String
    /// The type that declares the field, and the field.
    var owner: String
    var field: String
    var value: Double
    /// The string a `String` field holds (an upstream's address or entry); `value` is then 0.
    var text: String?
    /// A `Bool` field (`value` 1 or 0).
    var flag = false
    /// The index in `workers` (server or buffer pools) it sits under, in `recentGrowthEvents`,
    /// in `upstreams`, and in the array that holds it directly (a histogram's bounds and counts).
    var worker: Int?
    var event: Int?
    var upstream: Int?
    var index: Int?

    static func walk(_ value: Any, owner: String = "", field: String = "", path: String = "",
                     worker: Int? = nil, event: Int? = nil, upstream: Int? = nil, index: Int? = nil) -> [StatisticsLeaf] {
        func leaf(_ number: Double, text: String? = nil, flag: Bool = false) -> [StatisticsLeaf] {
            [StatisticsLeaf(path: path, owner: owner, field: field, value: number, text: text, flag: flag, worker: worker, event: event,
                            upstream: upstream, index: index)]
        }
        switch value {
        case let number as UInt64: return leaf(Double(number))
        case let number as Int: return leaf(Double(number))
        case let number as Double: return leaf(number)
        case let flag as Bool: return leaf(flag ? 1 : 0, flag: true)
        case let text as String: return leaf(0, text: text)
        case let phase as ShutdownPhase: return leaf(Double(phase.rawValue))
        default: break
        }
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .collection:
            return mirror.children.enumerated().flatMap { position, child in
                walk(child.value, owner: owner, field: field, path: "\(path)[\(position)]",
                     worker: field == "workers" ? position : worker, event: field == "recentGrowthEvents" ? position : event,
                     upstream: field == "upstreams" ? position : upstream, index: position)
            }
        case .struct:
            let type = String(describing: Swift.type(of: value))
            return mirror.children.flatMap { child in
                let label = child.label ?? "?"
                return walk(child.value, owner: type, field: label, path: path.isEmpty ? label : "\(path).\(label)",
                            worker: worker, event: event, upstream: upstream)
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
    /// The field is a label of the Prometheus series (which must exist), not their value: an
    /// upstream's address, entry and role, a histogram's bounds (`le`).
    var isLabel = false
    /// The Prometheus value when it is not the field's own: a histogram bucket's cumulative count.
    var prometheusValue: Double?

    /// The value the renderings must show for a field holding `value`.
    func rendered(_ value: Double) -> Double { flag ? (value != 0 ? 1 : 0) : value / divisor }

    /// A bucket's `le` label for `bound`, as Prometheus' own clients write it (`1`, `0.25`).
    static func le(_ bound: Double) -> String { bound == bound.rounded() ? String(Int(bound)) : String(bound) }

    /// `upstreams`: the statistics' list, for the labels (an upstream's address) and a
    /// histogram's cumulative buckets.
    static func of(_ leaf: StatisticsLeaf, upstreams: [UpstreamStatistics]) -> FieldExpectation? {
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
        case ("ServerStatistics", "upstreamResolveFailures"):
            return FieldExpectation(prometheus: [("fastalloc_upstream_resolve_failures_total", [:])], json: [["totals", "upstream_resolve_failures"]])
        case ("ReloadStatistics", let field):
            let names = ["reloads": ("fastalloc_config_reloads_total", "reloads"),
                         "failures": ("fastalloc_config_reload_failures_total", "reload_failures"),
                         "generation": ("fastalloc_config_generation", "generation"),
                         "loadedAt": ("fastalloc_config_last_reload_timestamp_seconds", "last_reload_timestamp_seconds")]
            guard let (name, key) = names[field] else { return nil }
            return FieldExpectation(prometheus: [(name, [:])], json: [["config", .key(key)]])
        case ("UpgradeStatistics", "handedOver"):
            return FieldExpectation(prometheus: [("fastalloc_upgrades_total", ["result": "handed_over"])], json: [["upgrades", "handed_over"]])
        case ("UpgradeStatistics", "failures"):
            return FieldExpectation(prometheus: [("fastalloc_upgrades_total", ["result": "failed"])], json: [["upgrades", "failed"]])
        case ("UpgradeStatistics", "inherited"):
            return FieldExpectation(prometheus: [("fastalloc_upgrade_inherited", [:])], json: [["upgrades", "inherited"]], flag: true)
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
        case ("WorkerStatistics", "upstreamUnavailable"): return perWorker("fastalloc_upstream_unavailable_total", "upstream_unavailable")
        case ("WorkerStatistics", "upstreamResets"): return perWorker("fastalloc_upstream_resets_total", "upstream_resets")
        case ("WorkerStatistics", "clientResets"): return perWorker("fastalloc_client_resets_total", "client_resets")
        case ("WorkerStatistics", "idleTimeouts"): return perWorker("fastalloc_idle_timeouts_total", "idle_timeouts")
        case ("WorkerStatistics", "writeTimeouts"): return perWorker("fastalloc_write_timeouts_total", "write_timeouts")
        case ("WorkerStatistics", "lingerTimeouts"): return perWorker("fastalloc_linger_timeouts_total", "linger_timeouts")
        case ("WorkerStatistics", "stalledEvictions"): return perWorker("fastalloc_stalled_evictions_total", "stalled_evictions")
        case ("WorkerStatistics", "accessLogDropped"): return perWorker("fastalloc_access_log_dropped_total", "access_log_dropped")
        case ("WorkerStatistics", "clientLimitRejections"):
            return perWorker("fastalloc_client_limit_rejections_total", "client_limit_rejections")
        case ("WorkerStatistics", "clientLimitTableFull"):
            return perWorker("fastalloc_client_limit_table_full_total", "client_limit_table_full")
        case ("WorkerStatistics", "proxyHeadersSent"), ("WorkerStatistics", "proxyHeadersReceived"):
            let direction = leaf.field == "proxyHeadersSent" ? "sent" : "received"
            return FieldExpectation(prometheus: [("fastalloc_proxy_protocol_headers_total", worker.merging(["direction": direction]) { $1 })],
                                    json: [["workers", .index(w), "proxy_protocol_headers", .key(direction)]])
        case ("ProxyProtocolErrorStatistics", let field):
            guard let reason = ProxyProtocolFailure.allCases.first(where: { "\($0)" == field }) else { return nil }
            return FieldExpectation(prometheus: [("fastalloc_proxy_protocol_errors_total", worker.merging(["reason": reason.rawValue]) { $1 })],
                                    json: [["workers", .index(w), "proxy_protocol_errors", .key(reason.rawValue)]])
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

        // The relay's upstreams: label `upstream` (the address), JSON `upstreams[u]`.
        case ("UpstreamStatistics", let field):
            guard let u = leaf.upstream, u < upstreams.count else { return nil }
            let upstream = upstreams[u]
            let address = ["upstream": upstream.address]
            let weightSeries = ("fastalloc_upstream_weight",
                                address.merging(["entry": upstream.entry, "backup": upstream.backup ? "true" : "false"]) { $1 })
            let here: [JSONKey] = ["upstreams", .index(u)]
            switch field {
            case "address":
                return FieldExpectation(prometheus: [("fastalloc_upstream_up", address)], json: [here + ["address"]], isLabel: true)
            case "entry": return FieldExpectation(prometheus: [weightSeries], json: [here + ["entry"]], isLabel: true)
            case "backup": return FieldExpectation(prometheus: [weightSeries], json: [here + ["backup"]], flag: true, isLabel: true)
            case "weight": return FieldExpectation(prometheus: [weightSeries], json: [here + ["weight"]])
            case "up": return FieldExpectation(prometheus: [("fastalloc_upstream_up", address)], json: [here + ["up"]], flag: true)
            default: break
            }
            let plain = ["active": ("fastalloc_upstream_connections_active", "connections_active"),
                         "selected": ("fastalloc_upstream_selected_total", "selected")]
            if let (name, key) = plain[field] {
                return FieldExpectation(prometheus: [(name, address)], json: [here + [.key(key)]])
            }
            let parts = ["connectRefused": ("fastalloc_upstream_member_connect_failures_total", "connect_failures", "reason", "refused"),
                         "connectTimedOut": ("fastalloc_upstream_member_connect_failures_total", "connect_failures", "reason", "timeout"),
                         "connectOther": ("fastalloc_upstream_member_connect_failures_total", "connect_failures", "reason", "other"),
                         "checksPassed": ("fastalloc_upstream_health_checks_total", "health_checks", "result", "passed"),
                         "checksFailed": ("fastalloc_upstream_health_checks_total", "health_checks", "result", "failed"),
                         "wentDown": ("fastalloc_upstream_state_changes_total", "state_changes", "to", "down"),
                         "cameUp": ("fastalloc_upstream_state_changes_total", "state_changes", "to", "up")]
            guard let (name, key, label, part) = parts[field] else { return nil }
            return FieldExpectation(prometheus: [(name, address.merging([label: part]) { $1 })], json: [here + [.key(key), .key(part)]])
        // An upstream's connect times: a Prometheus histogram (buckets cumulative, the last
        // le="+Inf", which _count repeats) and in JSON the bounds and each bucket's own count.
        case ("HistogramSnapshot", let field):
            guard let u = leaf.upstream, u < upstreams.count, leaf.path.hasPrefix("upstreams[\(u)].connectTimes.") else { return nil }
            let histogram = upstreams[u].connectTimes
            let address = ["upstream": upstreams[u].address]
            let name = "fastalloc_upstream_connect_seconds"
            let here: [JSONKey] = ["upstreams", .index(u), "connect_seconds"]
            switch field {
            case "bounds":
                guard let j = leaf.index else { return nil }
                return FieldExpectation(prometheus: [(name + "_bucket", address.merging(["le": le(histogram.bounds[j])]) { $1 })],
                                        json: [here + ["bounds", .index(j)]], isLabel: true)
            case "counts":
                guard let j = leaf.index else { return nil }
                let cumulative = Double(histogram.counts[...j].reduce(0, +))
                let last = j == histogram.counts.count - 1
                var series = [(name + "_bucket", address.merging(["le": last ? "+Inf" : le(histogram.bounds[j])]) { $1 })]
                if last { series.append((name + "_count", address)) }
                return FieldExpectation(prometheus: series, json: [here + ["counts", .index(j)]], prometheusValue: cumulative)
            case "sumSeconds":
                return FieldExpectation(prometheus: [(name + "_sum", address)], json: [here + ["sum"]])
            default:
                return nil
            }

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
