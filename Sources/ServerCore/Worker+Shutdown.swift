import Logging
import Synchronization
import UVLoop

/// Drain and stop: the worker enters the phase the server asked for (`ShutdownPhase`).
extension Worker {
    /// Woken: enter the phase the server asked for.
    func enterRequestedPhase() {
        switch shared.requestedPhase.load(ordering: .acquiring) {
        case .draining: beginDrain()
        case .stopping: stopNow()
        case .serving:
            if shared.acceptRequested.load(ordering: .acquiring) { startAccepting() }
        }
    }

    /// Listeners waiting for `Server.startAccepting()` start accepting; the result is reported.
    private func startAccepting() {
        var failures: [String] = []
        for listener in listeners {
            do {
                try listener.startAccepting()
            } catch {
                failures.append("\(error)")
                listener.close()
                listeners.removeAll { $0 === listener }
            }
        }
        report(accepting: failures.isEmpty ? nil : failures.joined(separator: "; "))
    }

    /// Tells `Server.startAccepting()` (once) whether this worker accepts.
    func report(accepting failure: String?) {
        acceptReport?.set(failure)
        acceptReport = nil
    }

    /// Stops accepting; every connection goes on, both ways, until it ends by itself; when the
    /// drain timeout passes, whatever is left is reset on both sides.
    private func beginDrain() {
        guard shutdownPhase == .serving else { return }
        report(accepting: "the server began to drain first")
        refreshSettings()  // a reload's drain timeout, even if no accept or sweep took it yet
        shutdownPhase = .draining
        closeListeners()
        closeHeaderReaders()
        if sessions.isEmpty {
            finish()
            return
        }
        for session in sessions { session.inDrain = true }
        logger.info("draining: \(sessions.count) connections may run for up to \(config.drainTimeout) s")
        do {
            let timer = try Timer(loop: loop)
            drainTimer = timer
            timer.start(after: config.drainTimeoutMilliseconds) { [unowned self] _ in self.cutRemaining() }
        } catch {
            // No timer, no deadline: cut now rather than let the drain run for ever.
            logger.error("drain: no timer (\(error)): resetting the connections now")
            cutRemaining()
        }
    }

    /// The drain deadline: reset everything still open (counted as cut).
    private func cutRemaining() {
        let open = sessions.count
        guard open > 0 else { return }
        logger.warning("drain timeout: resetting \(open) connections still open (both sides), after \(counters.drainCompleted.load(ordering: .relaxed)) ended by themselves")
        for session in sessions { session.perform(session.machine.cut()) }
    }

    private func stopNow() {
        report(accepting: "the server stopped first")
        shutdownPhase = .stopping
        closeListeners()
        closeHeaderReaders()
        if sessions.isEmpty {
            finish()
        } else {
            // A stop resets; sessions of a drain under way count as cut.
            for session in sessions { session.perform(session.inDrain ? session.machine.cut() : session.machine.stop()) }
        }
    }
}
