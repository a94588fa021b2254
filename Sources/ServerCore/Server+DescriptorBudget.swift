import FastAlloc
import Logging
#if canImport(Glibc)
import Glibc
#endif
import UVLoop

/// The file descriptor budget: how many connections the descriptor limit leaves room for. The
/// server raises its soft limit to the hard one and refuses connections beyond what fits, so
/// that accept never runs out of descriptors.
extension Server {
    /// The connections the file descriptor limit leaves room for (at least 1; the caller takes
    /// the smaller of this and `config.maxConnections`). Throws `ConfigError` when there is
    /// room for none; warns when there is room for fewer than `config.maxConnections`.
    static func descriptorBudget(config: ServerConfig, reserved: Int, logger: Logger) throws(ConfigError) -> Int {
        let fileLimit = Server.raiseFileLimit(logger: logger)
        let budget = Server.connectionBudget(config: config, fileLimit: fileLimit, openNow: Server.openDescriptors(),
                                             reserved: reserved)
        if budget < 1 {
            throw ConfigError(field: "file descriptor limit (ulimit -n)", value: "\(fileLimit)",
                              expected: "room for at least one connection beside the server's own descriptors; raise it (ulimit -n, LimitNOFILE=)")
        }
        if budget < config.maxConnections {
            // Refusing at our own limit is clean (closed at once, counted, logged); running out of
            // descriptors inside accept is not: libuv then closes the extra connections silently.
            logger.warning("""
                file descriptor limit \(fileLimit) leaves room for \(budget) connections \
                (\(config.mode == .relay ? "2 descriptors each in relay mode" : "1 descriptor each")), fewer than \
                --max-connections \(config.maxConnections): connections beyond \(budget) will be refused. \
                Raise the limit (ulimit -n, LimitNOFILE=) or lower --max-connections.
                """)
        }
        return budget
    }

    /// Many connections need many descriptors: raise the soft limit to the hard one. Returns
    /// the soft limit in force afterwards.
    private static func raiseFileLimit(logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return Int.max }
        if limit.rlim_cur < limit.rlim_max {
            let old = limit.rlim_cur
            limit.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                logger.debug("file descriptor limit raised from \(old) to \(limit.rlim_max)")
            } else {
                limit.rlim_cur = old
            }
        }
        return limit.rlim_cur >= rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
    }

    /// Descriptors each worker opens for itself (epoll, its wake-up eventfd, the listener,
    /// libuv's spare descriptor for EMFILE, signal and timer plumbing), with room to spare.
    static let descriptorsPerWorker = 8
    /// Descriptors the relay's upstream monitor takes: its loop (epoll, eventfd, timers) and
    /// one check connection per upstream address at most.
    static func monitorDescriptors(_ config: ServerConfig) -> Int {
        config.mode == .relay ? descriptorsPerWorker + config.upstreams.reduce(0) { $0 + $1.resolved.count } : 0
    }
    /// Kept free beyond everything counted: logging, /proc reads, a core dump's pipe.
    static let spareDescriptors = 16

    /// How many connections fit in the file descriptor limit: what is left after the
    /// descriptors open now, the workers' own, the caller's reservation and a margin, divided by
    /// the descriptors a connection takes (2 in relay mode: client and upstream).
    package static func connectionBudget(config: ServerConfig, fileLimit: Int, openNow: Int, reserved: Int) -> Int {
        guard fileLimit != Int.max else { return Int.max }
        let free = fileLimit - openNow - config.workers * descriptorsPerWorker - reserved - spareDescriptors
        return max(0, free / (config.mode == .relay ? 2 : 1))
    }

    /// Descriptors this process has open now (Linux: /proc/self/fd; elsewhere a guess).
    static func openDescriptors() -> Int {
        guard let count = countDirectoryEntries("/proc/self/fd") else { return 16 }
        return max(count - 1, 0)  // the directory's own descriptor is listed too
    }
}
