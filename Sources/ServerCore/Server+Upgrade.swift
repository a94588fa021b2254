import Synchronization

/// The binary upgrade's counters (SIGUSR2; the hand-over itself is the `Upgrade` module's and the
/// binary's): shared by every thread.
final class UpgradeState: Sendable {
    /// Upgrades whose new process took the listening sockets (this process then drained).
    let handedOver = Atomic<UInt64>(0)
    /// Upgrades whose new process did not start (a bad binary, config or port): this process
    /// kept serving.
    let failures = Atomic<UInt64>(0)
    /// 1 when this process was started by an upgrade and took its listeners from the old one.
    let inherited = Atomic<Bool>(false)
}

/// The upgrade counters, for /metrics and /stats.
public struct UpgradeStatistics: Sendable, Hashable, Codable {
    public var handedOver: UInt64 = 0
    public var failures: UInt64 = 0
    /// This process took its listening sockets from the process it replaced.
    public var inherited = false
    public init() {}
}

extension Server {
    /// Counts an upgrade's outcome: the new process took over (true), or failed to start.
    public func countUpgrade(handedOver: Bool) {
        if handedOver {
            upgradeState.handedOver.add(1, ordering: .relaxed)
        } else {
            upgradeState.failures.add(1, ordering: .relaxed)
        }
    }

    /// Inherited listeners (`init(inherited:)`) start accepting, on every worker; until this
    /// call the kernel queues their connections. A process taking over calls it once everything
    /// else has started: then nothing it accepted is cut if a later step fails. Any thread.
    ///
    /// Returns once every worker has acted: the failures (a listener that could not listen, a
    /// worker stopped first), empty when every one accepts.
    public func startAccepting() -> [String] {
        shared.acceptRequested.store(true, ordering: .releasing)
        for worker in workers { worker.wake.send() }
        return workers.enumerated().compactMap { index, worker in worker.accepting.wait().map { "worker \(index): \($0)" } }
    }

    /// Records that this process took its listeners from the one it replaced.
    public func markInherited() {
        upgradeState.inherited.store(true, ordering: .relaxed)
    }

    var upgradeStatistics: UpgradeStatistics {
        var result = UpgradeStatistics()
        result.handedOver = upgradeState.handedOver.load(ordering: .relaxed)
        result.failures = upgradeState.failures.load(ordering: .relaxed)
        result.inherited = upgradeState.inherited.load(ordering: .relaxed)
        return result
    }
}
