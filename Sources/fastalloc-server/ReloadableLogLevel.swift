import Logging
import Synchronization

/// The process's log level, which a reload (SIGHUP) may change: every handler the logging
/// system makes reads it here (one relaxed load per log call), so a change reaches every
/// `Logger` already made (the workers' copies included) at once.
final class LogLevelSwitch: Sendable {
    private let index: Atomic<Int>

    init(_ level: Logger.Level) {
        index = Atomic(LogLevelSwitch.index(of: level))
    }

    var level: Logger.Level {
        get { Logger.Level.allCases[index.load(ordering: .relaxed)] }
    }

    func set(_ level: Logger.Level) {
        index.store(LogLevelSwitch.index(of: level), ordering: .relaxed)
    }

    private static func index(of level: Logger.Level) -> Int {
        Logger.Level.allCases.firstIndex(of: level)!  // every level is one of allCases
    }
}

/// A `StreamLogHandler` whose level is the process's `LogLevelSwitch`, not its own: setting
/// `logLevel` on a logger changes the switch (there is one level for the process, as before,
/// when every handler was made with the configured level).
struct SwitchedLogHandler: LogHandler {
    var base: StreamLogHandler
    let levels: LogLevelSwitch

    var logLevel: Logger.Level {
        get { levels.level }
        set { levels.set(newValue) }
    }

    var metadata: Logger.Metadata {
        get { base.metadata }
        set { base.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { base.metadataProvider }
        set { base.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { base[metadataKey: key] }
        set { base[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        base.log(event: event)
    }
}
