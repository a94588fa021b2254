import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What the process itself looks like, read from /proc (the standard `process_*` metrics).
public struct ProcessFigures: Sendable, Hashable {
    public var residentMemoryBytes: Int
    public var cpuSeconds: Double
    public var openFileDescriptors: Int
    public var startTimeSeconds: Double

    public init(residentMemoryBytes: Int, cpuSeconds: Double, openFileDescriptors: Int, startTimeSeconds: Double) {
        self.residentMemoryBytes = residentMemoryBytes
        self.cpuSeconds = cpuSeconds
        self.openFileDescriptors = openFileDescriptors
        self.startTimeSeconds = startTimeSeconds
    }

    /// Reads /proc/self; figures that cannot be read are 0.
    public static func current() -> ProcessFigures {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var figures = ProcessFigures(residentMemoryBytes: 0, cpuSeconds: 0, openFileDescriptors: 0, startTimeSeconds: 0)
        if let statm = readFile("/proc/self/statm") {
            let fields = statm.split(separator: " ")
            if fields.count > 1, let pages = Int(fields[1]) { figures.residentMemoryBytes = pages * pageSize }
        }
        if let stat = readFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            // Fields after "(comm)": state is field 3; utime 14, stime 15, starttime 22.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 19, let user = Double(fields[11]), let system = Double(fields[12]), let start = Double(fields[19]) {
                figures.cpuSeconds = (user + system) / ticks
                figures.startTimeSeconds = bootTime + start / ticks
            }
        }
        if let count = countDirectoryEntries("/proc/self/fd") {
            figures.openFileDescriptors = max(0, count - 1)  // minus the descriptor of the listing
        }
        return figures
    }

    /// The boot time does not change: read once (parsing /proc/stat was a fifth of a scrape's CPU).
    private static let bootTime = bootTimeSeconds()

    private static func bootTimeSeconds() -> Double {
        guard let stat = readFile("/proc/stat") else { return 0 }
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6)) ?? 0
        }
        return 0
    }

    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)  // never inherited by an upgrade's new process
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if count <= 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
