import PacketBuffers
import ServerCore
#if canImport(Glibc)
import Glibc
#endif

/// What the process itself looks like, read from /proc (the standard `process_*` metrics).
public struct ProcessFigures: Sendable, Hashable {
    public var residentMemoryBytes: Int
    public var cpuSeconds: Double
    public var openFileDescriptors: Int
    public var startTimeSeconds: Double

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
                figures.startTimeSeconds = bootTimeSeconds() + start / ticks
            }
        }
        if let directory = opendir("/proc/self/fd") {
            var count = 0
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { $0.first }
                if name != UInt8(ascii: ".") { count += 1 }
            }
            closedir(directory)
            figures.openFileDescriptors = max(0, count - 1)  // minus the descriptor of the listing
        }
        return figures
    }

    private static func bootTimeSeconds() -> Double {
        guard let stat = readFile("/proc/stat") else { return 0 }
        for line in stat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6)) ?? 0
        }
        return 0
    }

    static func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
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

/// Renders the server's figures as Prometheus text exposition (version 0.0.4) and as JSON.
/// Names are in base units; counters end in `_total`; every family has HELP and TYPE.
public enum MetricsRenderer {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func prometheus(_ stats: ServerStatistics, process: ProcessFigures) -> String {
        var out = ""
        out.reserveCapacity(8192)
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(String, String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, value) in samples {
                out += labels.isEmpty ? "\(name) \(value)\n" : "\(name){\(labels)} \(value)\n"
            }
        }
        let buffers = stats.buffers
        let overflow = buffers.overflow
        func pools<T>(_ local: (WorkerBufferStatistics) -> T, _ shared: T) -> [(String, String)] {
            buffers.workers.map { ("pool=\"local\",worker=\"\($0.worker)\"", "\(local($0))") } + [("pool=\"overflow\"", "\(shared)")]
        }
        family("fastalloc_buffer_size_bytes", "gauge", "Size of every packet buffer in bytes.", [("", "\(buffers.bufferSize)")])
        family("fastalloc_buffers_capacity", "gauge", "Packet buffers a pool holds.", pools({ $0.capacity }, overflow.capacity))
        family("fastalloc_buffers_max_capacity", "gauge", "Packet buffers a pool may grow to.",
               pools({ $0.capacity }, overflow.maxCapacity))
        family("fastalloc_buffers_in_use", "gauge", "Packet buffers taken and not yet returned.", pools({ $0.inUse }, overflow.inUse))
        family("fastalloc_buffers_high_water", "gauge", "Most packet buffers in use at once.", pools({ $0.highWater }, overflow.highWater))
        family("fastalloc_overflow_draws_total", "counter", "Buffers a worker drew from the shared overflow pool.",
               buffers.workers.map { ("worker=\"\($0.worker)\"", "\($0.overflowDraws)") })
        family("fastalloc_overflow_draw_failures_total", "counter", "Draws that found the overflow pool at its maximum.",
               buffers.workers.map { ("worker=\"\($0.worker)\"", "\($0.failedDraws)") })
        family("fastalloc_pool_growth_events_total", "counter", "Times a pool grew.", [("pool=\"overflow\"", "\(overflow.growthEvents)")])
        family("fastalloc_lock_acquisitions_total", "counter", "Times the lock was taken.", [("lock=\"overflow\"", "\(overflow.lock.acquisitions)")])
        family("fastalloc_lock_contended_total", "counter", "Acquisitions that found the lock busy and waited.",
               [("lock=\"overflow\"", "\(overflow.lock.contended)")])
        family("fastalloc_lock_wait_seconds_total", "counter", "Time spent waiting for the lock.",
               [("lock=\"overflow\"", seconds(overflow.lock.waitNanoseconds))])
        let workers = stats.workers
        family("fastalloc_backpressure_pauses_total", "counter", "Times a write queue passed the high watermark and its source stopped reading.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.backpressurePauses)") })
        family("fastalloc_buffer_waits_total", "counter", "Reads that found no buffer and waited for one.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.bufferWaits)") })
        family("fastalloc_connections_active", "gauge", "Client connections open now.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.connectionsActive)") })
        family("fastalloc_connections_accepted_total", "counter", "Client connections accepted.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.connectionsAccepted)") })
        family("fastalloc_connections_rejected_total", "counter", "Connections closed at once because of --max-connections.",
               [("", "\(stats.connectionsRejected)")])
        family("fastalloc_idle_timeouts_total", "counter", "Connections closed by the idle timeout.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.idleTimeouts)") })
        family("fastalloc_upstream_connect_failures_total", "counter", "Upstream connections refused or timed out.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.upstreamConnectFailures)") })
        family("fastalloc_upstream_resets_total", "counter", "Upstream connections that failed mid-stream.",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.upstreamResets)") })
        family("fastalloc_bytes_received_total", "counter", "Bytes read and forwarded (from clients and upstreams).",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.bytesReceived)") })
        family("fastalloc_bytes_sent_total", "counter", "Bytes written (to clients and upstreams).",
               workers.map { ("worker=\"\($0.worker)\"", "\($0.bytesSent)") })
        family("fastalloc_draining", "gauge", "1 while the server drains (after SIGTERM), else 0.", [("", stats.draining ? "1" : "0")])
        family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", [("", "\(process.residentMemoryBytes)")])
        family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", [("", "\(process.cpuSeconds)")])
        family("process_open_fds", "gauge", "Number of open file descriptors.", [("", "\(process.openFileDescriptors)")])
        family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
               [("", "\(process.startTimeSeconds)")])
        return out
    }

    static func seconds(_ nanoseconds: UInt64) -> String {
        "\(Double(nanoseconds) / 1e9)"
    }

    /// The same figures as one JSON document: per worker, totals, the overflow pool with its
    /// latest growth events, utilisation as a fraction.
    public static func json(_ stats: ServerStatistics, process: ProcessFigures, monotonicNowNanoseconds: UInt64) -> String {
        let buffers = stats.buffers
        let overflow = buffers.overflow
        func fraction(_ value: Double) -> String { value.isFinite ? "\(value)" : "0" }
        var workers: [String] = []
        for (index, worker) in stats.workers.enumerated() {
            let pool = index < buffers.workers.count ? buffers.workers[index] : nil
            workers.append("""
                {"worker":\(worker.worker),"connections_active":\(worker.connectionsActive),\
                "connections_accepted":\(worker.connectionsAccepted),"connections_closed":\(worker.connectionsClosed),\
                "bytes_received":\(worker.bytesReceived),"bytes_sent":\(worker.bytesSent),\
                "backpressure_pauses":\(worker.backpressurePauses),"buffer_waits":\(worker.bufferWaits),\
                "upstream_connect_failures":\(worker.upstreamConnectFailures),"upstream_resets":\(worker.upstreamResets),\
                "idle_timeouts":\(worker.idleTimeouts),\
                "buffers":{"capacity":\(pool?.capacity ?? 0),"in_use":\(pool?.inUse ?? 0),"high_water":\(pool?.highWater ?? 0),\
                "utilisation":\(fraction(pool?.utilisation ?? 0)),"overflow_draws":\(pool?.overflowDraws ?? 0),\
                "overflow_draw_failures":\(pool?.failedDraws ?? 0),"remote_returns":\(pool?.remoteReturns ?? 0)}}
                """)
        }
        let events = overflow.recentGrowthEvents.map { event in
            let age = Double(monotonicNowNanoseconds &- event.monotonicNanoseconds) / 1e9
            return """
                {"monotonic_seconds":\(Double(event.monotonicNanoseconds) / 1e9),"seconds_ago":\(age),\
                "capacity_before":\(event.capacityBefore),"capacity_after":\(event.capacityAfter)}
                """
        }
        return """
            {"draining":\(stats.draining),"monotonic_seconds":\(Double(monotonicNowNanoseconds) / 1e9),\
            "buffer_size_bytes":\(buffers.bufferSize),\
            "totals":{"connections_active":\(stats.connectionsActive),"connections_accepted":\(stats.connectionsAccepted),\
            "connections_rejected":\(stats.connectionsRejected),"bytes_received":\(stats.bytesReceived),\
            "bytes_sent":\(stats.bytesSent),"backpressure_pauses":\(stats.backpressurePauses),"buffer_waits":\(stats.bufferWaits),\
            "upstream_connect_failures":\(stats.upstreamConnectFailures),"upstream_resets":\(stats.upstreamResets),\
            "idle_timeouts":\(stats.idleTimeouts),"buffers_in_use":\(buffers.totalInUse)},\
            "workers":[\(workers.joined(separator: ","))],\
            "overflow":{"capacity":\(overflow.capacity),"max_capacity":\(overflow.maxCapacity),"in_use":\(overflow.inUse),\
            "high_water":\(overflow.highWater),"utilisation":\(fraction(overflow.utilisation)),"draws":\(overflow.draws),\
            "draw_failures":\(overflow.failedDraws),"growth_events":\(overflow.growthEvents),\
            "recent_growth_events":[\(events.joined(separator: ","))],\
            "lock":{"acquisitions":\(overflow.lock.acquisitions),"contended":\(overflow.lock.contended),\
            "wait_seconds":\(seconds(overflow.lock.waitNanoseconds))}},\
            "process":{"resident_memory_bytes":\(process.residentMemoryBytes),"cpu_seconds":\(process.cpuSeconds),\
            "open_fds":\(process.openFileDescriptors),"start_time_seconds":\(process.startTimeSeconds)}}
            """
    }
}
