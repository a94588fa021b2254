import FastAlloc
import PacketBuffers
import ServerCore

/// One metric, declared once: its Prometheus family (name, type, help) and a closure that gives
/// its samples from the statistics, each with its labels and its place in the `/stats` document.
/// `MetricsRenderer` writes both renderings from the one table, `Metric.all`
/// (Metrics+Table.swift).
package struct Metric: Sendable {
    package enum Kind: String, Sendable {
        case counter, gauge
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
package struct MetricSample: Sendable {
    package var labels: [MetricLabel]
    package var value: MetricValue
    package var place: JSONPlace
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

    /// The process, no label; JSON `process.key`.
    func process<N: MetricNumber>(_ key: String, _ value: (ProcessFigures) -> N) -> [MetricSample] {
        [MetricSample(labels: [], value: value(process).metricValue, place: .root(["process", key]))]
    }
}
