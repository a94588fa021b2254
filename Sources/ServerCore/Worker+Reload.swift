import UVLoop

/// Reload, the worker's part: at each accept it compares the generation of its settings with
/// the one published (one relaxed load); when a reload published new ones, it takes them. From
/// then on new connections get the new configuration; sessions keep what they started with.
extension Worker {
    @inline(__always)
    func refreshSettings() {
        if shared.settingsGeneration.load(ordering: .relaxed) != settings.generation { takeSettings() }
    }

    /// Takes the settings in effect (a lock, once per reload). The sweep's period follows the
    /// shortest timeout now configured (a session that keeps a shorter one from before may then
    /// time out up to a second late, never early).
    func takeSettings() {
        let next = shared.currentSettings
        guard next.generation != settings.generation else { return }
        let period = config.sweepIntervalMilliseconds
        settings = next
        config = next.config
        timeouts = SessionTimeouts(config)
        let newPeriod = config.sweepIntervalMilliseconds
        guard newPeriod != period, let sweepTimer else { return }
        if let newPeriod {
            sweepTimer.start(after: newPeriod, repeat: newPeriod) { [unowned self] in self.sweep() }
        } else {
            sweepTimer.stop()
        }
    }
}
