import Synchronization

/// What the workers apply to each new connection: the configuration in effect and the shared
/// objects a reload may bring (the access log, the per-client table), as one immutable snapshot.
///
/// A reload (SIGHUP, `Server.reload`) publishes a new snapshot (`ServerShared.publish`). A
/// worker compares its snapshot's generation with `ServerShared.settingsGeneration` at each
/// accept (one relaxed load, no lock) and takes the new one, under the mutex, only when it
/// differs: the data path reads its own copy, never a lock. A session keeps what it needs of
/// the snapshot it started with (its timeouts, its balancing method, its connect retries, its
/// per-client count, whether it is logged), so a reload never changes an established
/// connection.
final class ServerSettings: Sendable {
    /// 1 at start; one more for each reload that changed something.
    let generation: UInt64
    let config: ServerConfig
    /// The access log: nil until it is first on (at start or by a reload); then the same object
    /// until the server ends, whose target a reload switches (off included).
    let accessLog: AccessLog?
    /// The per-client table: nil until a limit is first set (at start or by a reload); then
    /// kept (sessions counted in it release into it, whatever the limit is now).
    let clientLimits: ClientLimits?

    init(generation: UInt64, config: ServerConfig, accessLog: AccessLog?, clientLimits: ClientLimits?) {
        self.generation = generation
        self.config = config
        self.accessLog = accessLog
        self.clientLimits = clientLimits
    }

    /// New connections get an access log line (their address and accept time are read).
    var logsConnections: Bool { accessLog != nil && config.accessLog != .off }

    /// New connections are counted against `--max-connections-per-client` (the table exists).
    var limitsClients: Bool { clientLimits != nil && config.maxConnectionsPerClient > 0 }
}
