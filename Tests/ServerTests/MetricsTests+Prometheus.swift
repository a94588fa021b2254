import StatsEndpoint
import Testing

/// The Prometheus text (/metrics): well formed, every family it ever had, escaping.
extension MetricsTests {
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
                // A histogram's series are its name with _bucket, _sum or _count.
                let suffixes = current.flatMap { types[$0] } == "histogram" ? ["_bucket", "_sum", "_count"] : [""]
                #expect(suffixes.contains { String(match.1) == (current ?? "-") + $0 }, "\(match.1) outside its family \(current ?? "-")")
                #expect(Double(match.4) != nil, "not a number: \(line)")
                #expect(series.insert(String(line.split(separator: " ")[0])).inserted, "the same series twice: \(line)")
            }
        }
        #expect(families == Metric.all.map(\.name), "the text's families are the table's, in its order")
        // Histograms: per series, buckets cumulative in increasing `le`, `+Inf` last and equal to _count.
        let samples = try PrometheusSample.parse(text)
        var histograms = 0
        for family in families where types[family] == "histogram" {
            let counts = samples.filter { $0.name == family + "_count" }
            for count in counts {
                histograms += 1
                let buckets = samples.filter { $0.name == family + "_bucket" && $0.labels.filter { $0.key != "le" } == count.labels }
                let bounds = buckets.compactMap { Double($0.labels["le"] ?? "x") }
                let what = "\(family)\(count.labels)"
                #expect(bounds.count == buckets.count && bounds == bounds.sorted() && Set(bounds).count == bounds.count, "\(what): le \(bounds)")
                #expect(buckets.last?.labels["le"] == "+Inf", "\(what): no +Inf bucket")
                #expect(buckets.map(\.value) == buckets.map(\.value).sorted(), "\(what): buckets not cumulative")
                #expect(buckets.last?.value == count.value, "\(what): +Inf bucket \(buckets.last?.value ?? -1), _count \(count.value)")
                #expect(samples.contains { $0.name == family + "_sum" && $0.labels == count.labels }, "\(what): no _sum")
            }
        }
        #expect(histograms == 2, "the fixture's two upstreams each have a connect-time histogram")
        for family in families {
            let type = try #require(types[family])
            #expect(type == "counter" || type == "gauge" || type == "histogram", "\(family): \(type)")
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
            // Issue 16 (the relay's upstream pool).
            ("fastalloc_upstream_unavailable_total", "counter"), ("fastalloc_upstream_up", "gauge"),
            ("fastalloc_upstream_weight", "gauge"), ("fastalloc_upstream_connections_active", "gauge"),
            ("fastalloc_upstream_selected_total", "counter"), ("fastalloc_upstream_member_connect_failures_total", "counter"),
            ("fastalloc_upstream_health_checks_total", "counter"), ("fastalloc_upstream_state_changes_total", "counter"),
            ("fastalloc_upstream_connect_seconds", "histogram"),
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
