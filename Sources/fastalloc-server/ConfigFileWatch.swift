import Logging
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// --watch-config: the config file's directory is watched; when its content has changed (read
/// 100 ms after the last event about it, so that a file written in pieces is read whole, and at
/// most a second after the first), this process sends itself SIGHUP, which reloads it exactly as
/// an operator's signal does. The directory named at start is watched: if it (or a symlinked
/// parent) is itself replaced, later changes are not seen; send SIGHUP then.
///
/// A Kubernetes ConfigMap volume holds `server.yaml -> ..data/server.yaml` and `..data ->
/// ..2026_12_02_...`; an update writes a new timestamped directory and renames a new `..data`
/// over the old one: one event in the watched directory, and a file whose content differs.
final class ConfigFileWatch {
    private let path: String
    private let logger: Logger
    private var watcher: DirectoryWatcher?
    private var settle: Timer?
    /// The content last seen (at start, or at the last change).
    private var content: [UInt8]?
    /// The file's name in the directory: events about other entries (a log, an editor's swap
    /// file) are not about it, except a ConfigMap's `..data` symlink.
    private let name: String
    /// When the first event of the burst being settled came (nanoseconds, monotonic).
    private var burstStart: UInt64?

    init(loop: EventLoop, path: String, logger: Logger) throws {
        self.path = path
        self.logger = logger
        content = ConfigFileWatch.read(path)
        let directory = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        name = path.split(separator: "/").last.map(String.init) ?? path
        settle = try Timer(loop: loop)
        watcher = try DirectoryWatcher(loop: loop, directory: directory.isEmpty ? "/" : directory) { [unowned self] _, entry in
            self.changed(entry)
        }
        logger.info("watching \(path) (its directory \(directory.isEmpty ? "/" : directory)) for changes")
    }

    /// An event in the directory: the check runs 100 ms after the last event about the file, and
    /// at most a second after the first of a burst (a file rewritten without pause is still read).
    private func changed(_ entry: String?) {
        if let entry, entry != name, !entry.hasPrefix("..data") { return }
        let now = EventLoop.hrtime()
        if burstStart == nil { burstStart = now }
        guard let start = burstStart, now - start < 1_000_000_000 else { return }  // the check is due anyway
        settle?.start(after: 100) { [unowned self] _ in self.check() }
    }

    private func check() {
        burstStart = nil
        let now = ConfigFileWatch.read(path)
        guard now != content else {
            logger.info("\(path): its directory changed, its content did not: no reload")
            return
        }
        content = now
        logger.notice("\(path) changed: reloading, as on SIGHUP")
        kill(getpid(), SIGHUP)
    }

    /// The file's bytes (following symlinks), or nil when it cannot be read (a reload then says why).
    static func read(_ path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { Glibc.close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while bytes.count < 16 << 20 {  // a config file is small; this bounds a mistake
            let count = Glibc.read(descriptor, &chunk, chunk.count)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return count == 0 ? bytes : nil }
            bytes += chunk.prefix(count)
        }
        return bytes
    }

    func close() {
        watcher?.close()
        settle?.close()
        watcher = nil
        settle = nil
    }
}
