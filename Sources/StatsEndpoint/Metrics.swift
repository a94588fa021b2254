import PacketBuffers
import ServerCore

/// Renders the server's figures as Prometheus text exposition (version 0.0.4) and as the
/// `/stats` JSON document, both from one table of declarations (`Metric.all`, in
/// Metrics+Table.swift), so that the two cannot drift apart. Names are in base units; counters
/// end in `_total`; every family has HELP and TYPE.
public enum MetricsRenderer {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func prometheus(_ stats: ServerStatistics, process: ProcessFigures) -> String {
        let inputs = MetricInputs(stats: stats, process: process)
        var out = ""
        out.reserveCapacity(8192 + 4096 * stats.workers.count + 2048 * stats.upstreams.count)
        for metric in Metric.all {
            out += "# HELP \(metric.name) \(escapedHelp(metric.help))\n# TYPE \(metric.name) \(metric.kind.rawValue)\n"
            for sample in metric.samples(inputs) {
                guard let suffix = sample.suffix else { continue }  // JSON only
                out += metric.name + suffix
                if !sample.labels.isEmpty {
                    out += "{"
                    for (index, label) in sample.labels.enumerated() {
                        if index > 0 { out += "," }
                        out += label.name + "=\"" + escapedLabelValue(label.value) + "\""
                    }
                    out += "}"
                }
                out += " " + sample.value.prometheus + "\n"
            }
        }
        return out
    }

    /// The same figures as one JSON document: every metric's samples at their places (per
    /// worker, `totals` summed over the workers, per upstream, the overflow pool and its lock,
    /// the process),
    /// plus what is not a metric of its own: the server's monotonic clock (the dashboard's rates
    /// use it), utilisation as a fraction, the buffers in use in all pools, and the latest growth
    /// events of the overflow pool (time and capacities).
    public static func json(_ stats: ServerStatistics, process: ProcessFigures, monotonicNowNanoseconds: UInt64) -> String {
        let inputs = MetricInputs(stats: stats, process: process)
        var document = StatsDocument()
        // Each upstream's entry starts with what Prometheus has as labels: its address, the
        // --upstream entry it came from, and whether it is a backup.
        document.upstreams = stats.upstreams.map { upstream in
            JSONObject(["address": .text(upstream.address), "entry": .text(upstream.entry), "backup": .value(.flag(upstream.backup))])
        }
        for metric in Metric.all {
            for sample in metric.samples(inputs) { document.insert(sample) }
        }
        let buffers = stats.buffers
        let overflow = buffers.overflow
        document.root.set(["monotonic_seconds"], to: .value(.real(Double(monotonicNowNanoseconds) / 1e9)))
        document.root.set(["totals", "buffers_in_use"], to: .value(.signed(buffers.totalInUse)))
        for pool in buffers.workers {
            document.setInWorker(pool.worker, ["buffers", "utilisation"], to: .value(.real(pool.utilisation)))
        }
        document.root.set(["overflow", "utilisation"], to: .value(.real(overflow.utilisation)))
        let events = overflow.recentGrowthEvents.map { event in
            JSONNode.object(JSONObject([
                "monotonic_seconds": .value(.real(Double(event.monotonicNanoseconds) / 1e9)),
                "seconds_ago": .value(.real(Double(monotonicNowNanoseconds &- event.monotonicNanoseconds) / 1e9)),
                "capacity_before": .value(.signed(event.capacityBefore)),
                "capacity_after": .value(.signed(event.capacityAfter)),
            ]))
        }
        document.root.set(["overflow", "recent_growth_events"], to: .array(events))
        return document.text
    }

    /// HELP text escapes backslash and newline (exposition format 0.0.4).
    package static func escapedHelp(_ text: String) -> String {
        guard text.contains(where: { $0 == "\\" || $0 == "\n" }) else { return text }
        return text.replacingAll("\\", with: "\\\\").replacingAll("\n", with: "\\n")
    }

    /// Label values escape backslash, double quote and newline.
    package static func escapedLabelValue(_ text: String) -> String {
        guard text.contains(where: { $0 == "\\" || $0 == "\n" || $0 == "\"" }) else { return text }
        return text.replacingAll("\\", with: "\\\\").replacingAll("\"", with: "\\\"").replacingAll("\n", with: "\\n")
    }
}

extension String {
    /// Every `target` replaced (the standard library without Foundation has no such call).
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var out = ""
        for character in self {
            if character == target { out += replacement } else { out.append(character) }
        }
        return out
    }
}
