import Synchronization
import UVLoop

/// One upstream address in the pool, shared by every worker and the health checker: its
/// configuration, and its state and counts as atomics (any thread reads them; the workers and
/// the checker update them with read-modify-writes, once per connection or check, never per
/// message).
public final class UpstreamMember: Sendable {
    public let address: SocketAddress
    /// The `--upstream` entry it came from (`upstream.internal:7001`): a name stands for all of
    /// its addresses.
    public let entry: String
    public let weight: Int
    public let backup: Bool
    /// The PROXY protocol header its connections start with (its entry's, or the server's).
    public let proxyProtocol: ProxyProtocolSetting

    /// Connections to it now: connecting or open (all workers).
    let active = Atomic<Int>(0)
    /// Times the balancer picked it.
    let selected = Atomic<UInt64>(0)
    /// Up (1) or down (0); a member starts up.
    let up = Atomic<Bool>(true)
    /// Consecutive failures (failed connects and failed checks); `fall` of them mark it down.
    let failures = Atomic<Int>(0)
    /// Consecutive passed checks while down; `rise` of them bring it back.
    let passes = Atomic<Int>(0)
    /// When it was last marked down (ms on the monotonic clock), for the retry of a down member
    /// when active checks are off.
    let downSince = Atomic<UInt64>(0)
    /// Failed connects by reason.
    let connectRefused = Atomic<UInt64>(0)
    let connectTimedOut = Atomic<UInt64>(0)
    let connectOther = Atomic<UInt64>(0)
    /// Health checks by result.
    let checksPassed = Atomic<UInt64>(0)
    let checksFailed = Atomic<UInt64>(0)
    /// Times it went down and came back up.
    let wentDown = Atomic<UInt64>(0)
    let cameUp = Atomic<UInt64>(0)
    /// Connect times (successful connects): a histogram.
    let connectTimes = AtomicHistogram(bounds: UpstreamMember.connectTimeBounds)

    /// The connect-time histogram's upper bounds, in seconds.
    public static let connectTimeBounds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    init(address: SocketAddress, entry: String, weight: Int, backup: Bool, proxyProtocol: ProxyProtocolSetting = .off) {
        self.address = address
        self.entry = entry
        self.weight = weight
        self.backup = backup
        self.proxyProtocol = proxyProtocol
    }

    var isUp: Bool { up.load(ordering: .relaxed) }

    /// Its load as the balancer compares it: active connections per unit of weight, scaled to
    /// stay an integer (a member with weight 2 and 4 connections ties one with weight 1 and 2).
    var load: Int { active.load(ordering: .relaxed) * (UpstreamSpec.weightRange.upperBound / weight) }

    /// A snapshot for the statistics.
    var statistics: UpstreamStatistics {
        UpstreamStatistics(
            address: address.description, entry: entry, weight: weight, backup: backup, up: isUp,
            active: active.load(ordering: .relaxed), selected: selected.load(ordering: .relaxed),
            connectRefused: connectRefused.load(ordering: .relaxed), connectTimedOut: connectTimedOut.load(ordering: .relaxed),
            connectOther: connectOther.load(ordering: .relaxed), checksPassed: checksPassed.load(ordering: .relaxed),
            checksFailed: checksFailed.load(ordering: .relaxed), wentDown: wentDown.load(ordering: .relaxed),
            cameUp: cameUp.load(ordering: .relaxed), connectTimes: connectTimes.snapshot())
    }
}

/// Why a connect to an upstream failed.
public enum UpstreamFailure: String, Sendable, CaseIterable {
    case refused, timeout, other

    init(_ error: UVError) {
        switch error.code {
        case UVError.connectionRefused: self = .refused
        case UVError.timedOutCode: self = .timeout
        default: self = .other
        }
    }
}

/// One upstream's figures, as `/metrics` and `/stats` show them.
public struct UpstreamStatistics: Sendable, Hashable, Codable {
    public var address: String
    public var entry: String
    public var weight: Int
    public var backup: Bool
    public var up: Bool
    public var active: Int
    public var selected: UInt64
    public var connectRefused: UInt64
    public var connectTimedOut: UInt64
    public var connectOther: UInt64
    public var checksPassed: UInt64
    public var checksFailed: UInt64
    public var wentDown: UInt64
    public var cameUp: UInt64
    public var connectTimes: HistogramSnapshot
}

/// A histogram any thread adds to (one relaxed add per sample): counts per bucket, the total
/// count and the sum.
final class AtomicHistogram: Sendable {
    let bounds: [Double]
    private let counts: [Counter]
    private let sumNanoseconds = Atomic<UInt64>(0)

    private final class Counter: Sendable { let value = Atomic<UInt64>(0) }

    init(bounds: [Double]) {
        self.bounds = bounds
        counts = (0...bounds.count).map { _ in Counter() }  // the last: above every bound
    }

    func record(nanoseconds: UInt64) {
        let seconds = Double(nanoseconds) / 1e9
        let index = bounds.firstIndex { seconds <= $0 } ?? bounds.count
        counts[index].value.add(1, ordering: .relaxed)
        sumNanoseconds.add(nanoseconds, ordering: .relaxed)
    }

    func snapshot() -> HistogramSnapshot {
        HistogramSnapshot(bounds: bounds, counts: counts.map { $0.value.load(ordering: .relaxed) },
                          sumSeconds: Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)
    }
}

/// A histogram's figures: a count per bucket (not cumulative; the last is above every bound).
public struct HistogramSnapshot: Sendable, Hashable, Codable {
    public var bounds: [Double]
    public var counts: [UInt64]
    public var sumSeconds: Double
    public var total: UInt64 { counts.reduce(0, &+) }
}
