import FastAlloc
import PacketBuffers
import ServerCore

/// One metric, declared once: its Prometheus family (name, type, help) and a closure that gives
/// its samples from the statistics, each with its labels and its place in the `/stats` document.
/// `MetricsRenderer` writes both renderings from the one table, `Metric.all`
/// (Metrics+Table.swift).
package struct Metric: Sendable {
    package enum Kind: String, Sendable {
        /// A histogram's samples are its `_bucket` (cumulative, `le` label, `+Inf` last), `_sum`
        /// and `_count` series (`MetricSample.suffix`).
        case counter, gauge, histogram
    }

    package let name: String
    package let kind: Kind
    package let help: String
    /// The samples at one moment. The closure builds them with `MetricInputs`' helpers, which
    /// fix the label conventions (`worker`, `pool`, `lock`) and the matching JSON places.
    package let samples: @Sendable (MetricInputs) -> [MetricSample]

    init(_ kind: Kind, _ name: String, _ help: String, samples: @escaping @Sendable (MetricInputs) -> [MetricSample]) {
        self.kind = kind
        self.name = name
        self.help = help
        self.samples = samples
    }
}

/// What the metrics are read from.
package struct MetricInputs: Sendable {
    package var stats: ServerStatistics
    package var process: ProcessFigures

    package init(stats: ServerStatistics, process: ProcessFigures) {
        self.stats = stats
        self.process = process
    }
}

/// A number as both renderings print it.
package enum MetricValue: Sendable, Hashable {
    case unsigned(UInt64)
    case signed(Int)
    case real(Double)
    /// 1 or 0 in Prometheus, `true` or `false` in JSON.
    case flag(Bool)

    var prometheus: String {
        switch self {
        case .unsigned(let value): return String(value)
        case .signed(let value): return String(value)
        case .real(let value):
            if value.isNaN { return "NaN" }
            if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
            return String(value)
        case .flag(let value): return value ? "1" : "0"
        }
    }

    /// JSON has no NaN or infinity: such a value is written as 0, so that readers always get a
    /// number (none of the figures here can be one; utilisation guards its division).
    var json: String {
        switch self {
        case .real(let value): return value.isFinite ? String(value) : "0"
        case .flag(let value): return value ? "true" : "false"
        default: return prometheus
        }
    }

    /// The sum of two values of one metric (for `totals`).
    static func + (lhs: MetricValue, rhs: MetricValue) -> MetricValue {
        switch (lhs, rhs) {
        case (.unsigned(let a), .unsigned(let b)): return .unsigned(a &+ b)
        case (.signed(let a), .signed(let b)): return .signed(a &+ b)
        default: return .real(lhs.double + rhs.double)
        }
    }

    var double: Double {
        switch self {
        case .unsigned(let value): return Double(value)
        case .signed(let value): return Double(value)
        case .real(let value): return value
        case .flag(let value): return value ? 1 : 0
        }
    }
}

/// The number types statistics are made of.
package protocol MetricNumber {
    var metricValue: MetricValue { get }
}

extension UInt64: MetricNumber { package var metricValue: MetricValue { .unsigned(self) } }
extension Int: MetricNumber { package var metricValue: MetricValue { .signed(self) } }
extension Double: MetricNumber { package var metricValue: MetricValue { .real(self) } }
extension Bool: MetricNumber { package var metricValue: MetricValue { .flag(self) } }

/// One sample: labels and value for Prometheus, and where the same value goes in `/stats`.
/// A histogram's figures take two shapes (cumulative buckets in Prometheus, bounds and counts
/// per bucket in JSON): its helper gives samples that are in one rendering only.
package struct MetricSample: Sendable {
    package var labels: [MetricLabel]
    package var value: MetricValue
    /// Where it goes in `/stats`; nil: not there (a histogram's cumulative buckets).
    package var place: JSONPlace?
    /// What follows the family's name in `/metrics`: "" for counters and gauges; `_bucket`,
    /// `_sum` or `_count` for a histogram; nil: not there (a histogram's bounds and per-bucket
    /// counts, JSON only).
    package var suffix: String? = ""
}

package struct MetricLabel: Sendable, Hashable {
    package var name: String
    package var value: String
}

/// Where a sample goes in the `/stats` document.
package enum JSONPlace: Sendable, Hashable {
    /// A path from the document's root, like `["overflow", "lock", "contended"]`.
    case root([String])
    /// A path inside `workers[]`'s entry for this worker number; when `totalled`, the sum over
    /// the workers also goes to the same path under `totals`.
    case worker(Int, [String], totalled: Bool)
    /// A path inside `upstreams[]`'s entry for the upstream at this index of
    /// `ServerStatistics.upstreams`; when `element`, the value is appended to the array at the
    /// path (a histogram's bounds and counts, in order).
    case upstream(Int, [String], element: Bool = false)
}

// MARK: The label conventions, one helper each

extension MetricInputs {
    /// One value for the whole server: no label.
    func server<N: MetricNumber>(_ path: String..., value: N) -> [MetricSample] {
        [MetricSample(labels: [], value: value.metricValue, place: .root(path))]
    }

    /// One value per worker, label `worker`; JSON `workers[].key`, summed in `totals.key`.
    func workers<N: MetricNumber>(_ key: String, _ value: (WorkerStatistics) -> N) -> [MetricSample] {
        stats.workers.map { worker in
            MetricSample(labels: [MetricLabel(name: "worker", value: String(worker.worker))], value: value(worker).metricValue,
                         place: .worker(worker.worker, [key], totalled: true))
        }
    }

    /// Several values per worker told apart by one more label (`reason`, `outcome`); JSON
    /// `workers[].key.{label value}`, summed in `totals.key.{label value}`.
    func workers(_ key: String, by label: String,
                 _ parts: KeyValuePairs<String, (WorkerStatistics) -> UInt64>) -> [MetricSample] {
        workers(key, by: label, parts.map { ($0.key, $0.value) })
    }

    /// The same, with the parts made by code (one per case of an enumeration, say).
    func workers(_ key: String, by label: String, _ parts: [(String, (WorkerStatistics) -> UInt64)]) -> [MetricSample] {
        stats.workers.flatMap { worker in
            parts.map { part, value in
                MetricSample(labels: [MetricLabel(name: "worker", value: String(worker.worker)), MetricLabel(name: label, value: part)],
                             value: .unsigned(value(worker)), place: .worker(worker.worker, [key, part], totalled: true))
            }
        }
    }

    /// A worker's figure kept by its local buffer pool, label `worker`; JSON `workers[].buffers.key`.
    func workerBuffers<N: MetricNumber>(_ key: String, _ value: (WorkerBufferStatistics) -> N) -> [MetricSample] {
        stats.buffers.workers.map { pool in
            MetricSample(labels: [MetricLabel(name: "worker", value: String(pool.worker))], value: value(pool).metricValue,
                         place: .worker(pool.worker, ["buffers", key], totalled: false))
        }
    }

    /// One value per local pool, labels `pool="local"` and `worker`; JSON `workers[].buffers.key`.
    func localPools<N: MetricNumber>(_ key: String, _ value: (WorkerBufferStatistics) -> N) -> [MetricSample] {
        stats.buffers.workers.map { pool in
            MetricSample(labels: [MetricLabel(name: "pool", value: "local"), MetricLabel(name: "worker", value: String(pool.worker))],
                         value: value(pool).metricValue, place: .worker(pool.worker, ["buffers", key], totalled: false))
        }
    }

    /// The shared overflow pool, label `pool="overflow"`; JSON `overflow.key`.
    func overflowPool<N: MetricNumber>(_ key: String, _ value: (OverflowBufferStatistics) -> N) -> [MetricSample] {
        [MetricSample(labels: [MetricLabel(name: "pool", value: "overflow")], value: value(stats.buffers.overflow).metricValue,
                      place: .root(["overflow", key]))]
    }

    /// The overflow pool's lock, label `lock="overflow"`; JSON `overflow.lock.key`.
    func overflowLock<N: MetricNumber>(_ key: String, _ value: (LockStatistics) -> N) -> [MetricSample] {
        [MetricSample(labels: [MetricLabel(name: "lock", value: "overflow")], value: value(stats.buffers.overflow.lock).metricValue,
                      place: .root(["overflow", "lock", key]))]
    }

    /// One value per upstream, label `upstream` (its address, `HOST:PORT` or `[IPv6]:PORT`), and
    /// `labelled`'s labels read from the upstream (an info-style gauge: what it is configured
    /// as); JSON `upstreams[].key` (where the address, entry and role are keys of their own: see
    /// `MetricsRenderer.json`).
    func upstreams<N: MetricNumber>(_ key: String, labelled labels: KeyValuePairs<String, (UpstreamStatistics) -> String> = [:],
                                    _ value: (UpstreamStatistics) -> N) -> [MetricSample] {
        stats.upstreams.enumerated().map { index, upstream in
            let more = labels.map { MetricLabel(name: $0.key, value: $0.value(upstream)) }
            return MetricSample(labels: [MetricLabel(name: "upstream", value: upstream.address)] + more,
                                value: value(upstream).metricValue, place: .upstream(index, [key]))
        }
    }

    /// Several values per upstream told apart by one more label (`reason`, `result`, `to`); JSON
    /// `upstreams[].key.{label value}`.
    func upstreams(_ key: String, by label: String,
                   _ parts: KeyValuePairs<String, (UpstreamStatistics) -> UInt64>) -> [MetricSample] {
        stats.upstreams.enumerated().flatMap { index, upstream in
            parts.map { part, value in
                MetricSample(labels: [MetricLabel(name: "upstream", value: upstream.address), MetricLabel(name: label, value: part)],
                             value: .unsigned(value(upstream)), place: .upstream(index, [key, part]))
            }
        }
    }

    /// A histogram per upstream, label `upstream`: in Prometheus `_bucket{le}` (cumulative, the
    /// last `le="+Inf"`), `_sum` and `_count`; JSON `upstreams[].key.{bounds, counts, sum, count}`
    /// with the count of each bucket alone (the last: above every bound).
    func upstreamHistograms(_ key: String, _ value: (UpstreamStatistics) -> HistogramSnapshot) -> [MetricSample] {
        stats.upstreams.enumerated().flatMap { index, upstream -> [MetricSample] in
            let histogram = value(upstream)
            let address = MetricLabel(name: "upstream", value: upstream.address)
            func json(_ path: String, _ value: MetricValue) -> MetricSample {
                MetricSample(labels: [], value: value, place: .upstream(index, [key, path], element: true), suffix: nil)
            }
            func bucket(_ le: String, _ cumulative: UInt64) -> MetricSample {
                MetricSample(labels: [address, MetricLabel(name: "le", value: le)], value: .unsigned(cumulative), place: nil,
                             suffix: "_bucket")
            }
            var samples = histogram.bounds.map { json("bounds", .real($0)) } + histogram.counts.map { json("counts", .unsigned($0)) }
            var cumulative: UInt64 = 0
            for (bucketIndex, bound) in histogram.bounds.enumerated() {
                cumulative &+= bucketIndex < histogram.counts.count ? histogram.counts[bucketIndex] : 0
                samples.append(bucket(MetricInputs.boundLabel(bound), cumulative))
            }
            samples.append(bucket("+Inf", histogram.total))
            samples.append(MetricSample(labels: [address], value: .real(histogram.sumSeconds), place: .upstream(index, [key, "sum"]),
                                        suffix: "_sum"))
            samples.append(MetricSample(labels: [address], value: .unsigned(histogram.total), place: .upstream(index, [key, "count"]),
                                        suffix: "_count"))
            return samples
        }
    }

    /// A bucket's `le` as Prometheus' own clients write it: `1` rather than `1.0`.
    static func boundLabel(_ bound: Double) -> String {
        if bound.isInfinite { return bound > 0 ? "+Inf" : "-Inf" }
        if bound == bound.rounded(), abs(bound) < 1e15 { return String(Int64(bound)) }
        return String(bound)
    }

    /// The process, no label; JSON `process.key`.
    func process<N: MetricNumber>(_ key: String, _ value: (ProcessFigures) -> N) -> [MetricSample] {
        [MetricSample(labels: [], value: value(process).metricValue, place: .root(["process", key]))]
    }
}
