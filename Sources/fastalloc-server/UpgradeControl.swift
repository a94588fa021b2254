import Logging
import ServerCore
import StatsEndpoint
import Threads
import Upgrade
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The binary upgrade, old side (SIGUSR2), on the control loop: start the binary at our path with
/// our arguments and the listening sockets; while it starts, we go on accepting on them too;
/// once it says it is ready, we stop accepting (closing only our copies: the sockets stay open in
/// the new process), hand over the stats port, and drain as on SIGTERM. If it fails, we keep
/// serving, and log and count why. One upgrade at a time; a draining process hands over nothing.
final class UpgradeControl {
    private let server: Server
    private let stats: StatsEndpoint?
    private let executable: String?
    private let environment: [String: String]
    private let logger: Logger
    private var wake: AsyncWake?
    /// The upgrade under way: the new process, the thread waiting for its "ready", and where
    /// that thread leaves the outcome (set before it wakes the loop).
    private var pending: (successor: Successor, waiter: ThreadHandle, outcome: OneShot<Successor.Outcome>)?
    /// The new process has the sockets: this one drains.
    private(set) var handedOver = false

    init(loop: EventLoop, server: Server, stats: StatsEndpoint?, executable: String?, environment: [String: String], logger: Logger) {
        self.server = server
        self.stats = stats
        self.executable = executable
        self.environment = environment.filter { $0.key != HandOver.variable }
        self.logger = logger
        wake = try? AsyncWake(loop: loop) { [unowned self] _ in self.finish() }
    }

    /// SIGUSR2.
    func begin(draining: Bool) {
        if handedOver || draining {
            logger.warning("SIGUSR2: this process is draining\(handedOver ? " (it has handed over)" : ""); send SIGUSR2 to the process that serves")
            return
        }
        if let pending {
            logger.warning("SIGUSR2: an upgrade is under way (PID \(pending.successor.pid)); this one is ignored")
            return
        }
        guard let executable, let wake else {
            fail("this process's binary path (/proc/self/exe) or its wake-up handle is unavailable")
            return
        }
        let listeners = server.listenerDescriptors
        let result = Successor.start(executable: executable, arguments: CommandLine.arguments, environment: environment,
                                     listeners: listeners, stats: stats?.descriptor)
        switch result {
        case .failure(let error):
            fail("\(error)")
        case .success(let successor):
            let statsText = stats?.descriptor != nil ? " and the stats socket" : ""
            logger.notice("upgrade: started \(executable) as PID \(successor.pid) with \(listeners.count) listening sockets\(statsText); serving until it is ready")
            let outcome = OneShot<Successor.Outcome>()
            let timeout = server.currentConfig.upgradeTimeout  // --upgrade-timeout, as reloaded
            let waiter = ThreadHandle.start {
                outcome.set(successor.waitUntilReady(timeout: timeout))
                wake.send()
            }
            pending = (successor, waiter, outcome)
        }
    }

    /// The waiting thread has the outcome (on the loop).
    private func finish() {
        guard let (successor, waiter, outcome) = pending else { return }
        waiter.join()
        let result = outcome.wait()
        pending = nil
        switch result {
        case .ready:
            handedOver = true
            server.countUpgrade(handedOver: true)
            // systemd follows the new process from now on. Said by this process too (the main
            // one until now), before it drains: one with nothing to drain may exit at once, and
            // systemd must not take that for the service's end.
            SystemdNotify.send("MAINPID=\(successor.pid)", environment: environment)
            server.drain()  // first: /readyz says 503 from here on
            stats?.closeListener()
            logger.notice("upgrade: PID \(successor.pid) is ready; this process stops accepting and drains (up to \(server.currentConfig.drainTimeout) s)")
        case .failed(let reason):
            fail(reason)
        }
    }

    private func fail(_ reason: String) {
        server.countUpgrade(handedOver: false)
        logger.error("upgrade failed, this process keeps serving: \(reason)")
    }

    /// This process starts to drain (SIGTERM, SIGINT) while an upgrade is under way: the new
    /// process is asked to stop too (it accepts nothing before it is ready; if it just became
    /// ready, it drains what it took). A stop means the service stops, not that it moves.
    func cancel() {
        guard let (successor, _, _) = pending else { return }
        logger.notice("upgrade: stopping the new process, PID \(successor.pid), as this one stops")
        successor.cancel()
    }

    /// At exit (on the loop): an upgrade still under way is cancelled, and its waiting thread
    /// joined (it returns when the new process has exited or at its timeout).
    func close() {
        cancel()
        if let (_, waiter, _) = pending { waiter.join() }
        pending = nil
        wake?.close()
        wake = nil
    }
}

/// What the new process took from the hand-over: the listening sockets on its addresses.
struct AdoptedSockets {
    let handOver: HandOver
    let listeners: [Int32]
    let stats: Int32?
}

extension FastAllocServer {
    /// Started by an upgrade (`FASTALLOC_UPGRADE_HANDOVER`): checks each inherited descriptor and
    /// keeps the listening sockets on this configuration's addresses. One on another address
    /// (the new configuration changed --listen or --stats) is closed here; the old process's
    /// copy closes when it drains. A hand-over that cannot be read ends the process (status 1):
    /// the old one keeps serving.
    static func adoptHandOver(config: ServerConfig, environment: [String: String], logger: Logger) -> AdoptedSockets? {
        guard let inherited = HandOver.inherited(environment: environment) else { return nil }
        let handOver: HandOver
        switch inherited {
        case .success(let value): handOver = value
        case .failure(let error): fail("\(HandOver.variable): \(error)")
        }
        func keep(_ descriptor: Int32, for wanted: SocketAddress, _ what: String) -> Bool {
            switch InheritedSocket.inspect(descriptor) {
            case .listening(let bound) where wanted.isServed(by: bound):
                return true
            case .listening(let bound):
                logger.warning("upgrade: the inherited \(what) socket is on \(bound), the configuration says \(wanted): listening on \(wanted) instead; \(bound) closes when PID \(handOver.from) starts to drain (connections queued on it then are reset, as in a restart)")
            case .unusable(let why):
                logger.warning("upgrade: inherited \(what) socket unusable (\(why)); listening on \(wanted) instead")
            }
            Glibc.close(descriptor)
            return false
        }
        let listeners = handOver.listeners.filter { keep($0, for: config.listen, "listening") }
        var stats: Int32?
        if let descriptor = handOver.stats {
            if let wanted = config.stats {
                stats = keep(descriptor, for: wanted, "stats") ? descriptor : nil
            } else {
                Glibc.close(descriptor)
            }
        }
        return AdoptedSockets(handOver: handOver, listeners: listeners, stats: stats)
    }
}
