import Dispatch
import Foundation
import ServerCore
import Synchronization
import Testing
import Upgrade
import UVLoop

/// The binary upgrade (SIGUSR2), with real processes on 127.0.0.1: the running server starts the
/// binary at its own path, hands it the listening sockets, and drains once the new one is ready.
/// Under a churn of short connections and with long streams running, not one connection may be
/// refused or reset, the streams finish on the old processes, every old process exits 0, and a
/// new process that cannot start leaves the old one serving.
@Suite(.serialized) struct UpgradeTests {
    init() {
        // The old process is the new one's parent: once it exits, the new one is orphaned.
        // As their reaper, this test process can read every generation's exit status.
        becomeSubreaper()
    }

    @Test func threeUpgradesInARow_underChurn_nothingRefusedOrReset_streamsFinishOnTheOldProcesses() throws {
        let upstream = try startServer()
        defer { finish(upstream) }
        let first = try ServerProcess(["relay", "--upstream", "\(upstream.address)", "--listen", "127.0.0.1:0", "--stats", "127.0.0.1:0",
                                       "--workers", "2", "--drain-timeout", "120s"])
        let address = try first.waitUntilListening()
        let stats = try statsAddress(first)
        let baseline = try settledDescriptors(pid: first.pid, stats: stats)

        let churn = Churn(address: address, threads: 2)
        let churnStart = EventLoop.hrtime()
        // A stats connection kept open to the first process: its /readyz turns 503 at the hand-over.
        let probe = try TestSocket(connectingTo: stats)
        #expect(try readyz(probe) == 200)

        var generations: [pid_t] = [first.pid]
        defer { killLeftovers(generations.dropFirst()) }  // only if the test failed half-way
        var streams: [[LongStream]] = []
        for upgrade in 1...3 {
            // Long streams on the process that serves now; they must outlive its drain's start.
            streams.append(try (0..<2).map { try LongStream(address: address, seed: 100 * upgrade + $0) })
            try churn.waitForMore(churnStep)
            kill(generations.last!, SIGUSR2)
            let ready = first.read(timeout: 20) { _ in readyLines(first.errors).count == upgrade }
            #expect(ready, "upgrade \(upgrade) never became ready; stderr: \(first.errors)")
            guard ready else { break }
            generations.append(readyLines(first.errors)[upgrade - 1])
            if upgrade == 1 {
                #expect(try readyz(probe) == 503, "the old process's /readyz after the hand-over")
                let inherited = try get(stats, "/stats")
                #expect(inherited.body.contains("\"inherited\":true"), "the stats port moved to the new process: \(inherited.body)")
            }
            try churn.waitForMore(churnStep)
        }
        probe.close()
        try churn.waitForMore(churnStep)
        // Every old process is still draining: its streams go on.
        for pid in generations.dropLast() { #expect(kill(pid, 0) == 0, "PID \(pid) ended before its streams did") }
        for group in streams { for stream in group { try stream.waitForMore(8 * 4096) } }
        let (done, failures) = churn.stop()
        #expect(failures.isEmpty, "\(failures.count) churn connections failed: \(failures.prefix(10))")
        #expect(done >= 7 * churnStep, "churn exchanges: \(done)")
        let seconds = Double(EventLoop.hrtime() - churnStart) / 1e9
        print("upgrade churn: \(done) exchanges in \(String(format: "%.1f", seconds)) s (\(Int(Double(done) / seconds))/s), 3 upgrades, 0 failed")

        // The streams end; each old process then exits 0, having cut nothing.
        for (generation, group) in streams.enumerated() {
            for stream in group { #expect(stream.finish(), "generation \(generation)'s stream: \(stream.failure ?? "")") }
        }
        #expect(first.waitForExit(timeout: 30) == 0, "stderr: \(first.errors)")
        for pid in generations.dropFirst().dropLast() {
            #expect(waitForExit(pid, timeout: 30) == 0, "old process \(pid)")
        }
        first.read(timeout: 2) { $0.components(separatedBy: "stopped: ").count > 3 }
        let summaries = first.output.split(separator: "\n").filter { $0.hasPrefix("stopped: ") }
        #expect(summaries.count == 3, "\(first.output)")
        for summary in summaries { #expect(summary.contains(" 0 cut (reset)") && summary.contains("buffers in use 0"), "\(summary)") }

        // The newest process: the same descriptors as the first had (nothing inherited leaked),
        // and it ends as usual.
        let newest = generations.last!
        #expect(try settledDescriptors(pid: newest, stats: stats) == baseline)
        kill(newest, SIGTERM)
        #expect(waitForExit(newest, timeout: 30) == 0)
    }

    @Test func newProcessThatCannotStart_theOldOneKeepsServing() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let binary = directory + "/fastalloc-server"
        try install(ServerProcess.executable, at: binary)
        let config = directory + "/server.yaml"
        let good = "mode: echo\nlisten: 127.0.0.1:0\nstats: 127.0.0.1:0\nworkers: 2\n"
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        let old = try ServerProcess(["--config", config], executable: binary)
        let address = try old.waitUntilListening()
        let stats = try statsAddress(old)
        let churn = Churn(address: address, threads: 2)
        let taken = try TestListener()

        // A binary that exits at once; a config that does not validate; a stats port in use.
        let breakages: [(String, () throws -> Void, String)] = [
            ("a bad binary", { try self.installScript("#!/bin/sh\necho broken >&2\nexit 3\n", at: binary) }, "exited with status 3"),
            ("a bad config", {
                try self.install(ServerProcess.executable, at: binary)
                try "mode: echo\nlisten: 127.0.0.1:0\nworkers: lots\n".write(toFile: config, atomically: true, encoding: .utf8)
            }, "exited with status 64"),
            ("a port in use", {
                try "mode: echo\nlisten: 127.0.0.1:0\nstats: \(taken.address)\nworkers: 2\n".write(toFile: config, atomically: true, encoding: .utf8)
            }, "exited with status 1"),
        ]
        for (number, (what, breakIt, reason)) in breakages.enumerated() {
            try breakIt()
            try churn.waitForMore(200)
            kill(old.pid, SIGUSR2)
            let failed = old.read(timeout: 20) { _ in old.errors.components(separatedBy: "upgrade failed, this process keeps serving").count == number + 2 }
            #expect(failed, "\(what): no failure logged; stderr: \(old.errors)")
            let line = old.errors.split(separator: "\n").last { $0.contains("upgrade failed") } ?? ""
            #expect(line.contains(reason), "\(what): \(line)")
            try churn.waitForMore(200)  // still served
            let metrics = try get(stats, "/metrics").body
            #expect(metrics.contains("fastalloc_upgrades_total{result=\"failed\"} \(number + 1)"), "\(what)")
            #expect(metrics.contains("fastalloc_draining 0"), "\(what)")
        }
        defer { killLeftovers(readyLines(old.errors)) }
        // Mended, the upgrade goes through.
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        kill(old.pid, SIGUSR2)
        #expect(old.read(timeout: 20) { _ in readyLines(old.errors).count == 1 }, "stderr: \(old.errors)")
        try churn.waitForMore(200)
        let (done, failures) = churn.stop()
        #expect(failures.isEmpty, "\(failures.count) churn connections failed: \(failures.prefix(10))")
        #expect(done > 0)
        #expect(old.waitForExit(timeout: 30) == 0, "stderr: \(old.errors)")
        guard let successor = readyLines(old.errors).first else { return }
        kill(successor, SIGTERM)
        #expect(waitForExit(successor, timeout: 30) == 0)
    }

    @Test func newProcessThatHangs_isKilledAtTheTimeout_andAStopDuringAnUpgradeStopsItToo() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let binary = directory + "/fastalloc-server"
        try install(ServerProcess.executable, at: binary)
        let old = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--workers", "1", "--upgrade-timeout", "1s"],
                                    executable: binary)
        let address = try old.waitUntilListening()
        // A binary that never says it is ready (exec: the PID we kill is the sleeping process).
        try installScript("#!/bin/sh\nexec sleep 60\n", at: binary)
        kill(old.pid, SIGUSR2)
        #expect(old.read(timeout: 20) { _ in old.errors.contains("upgrade failed") }, "stderr: \(old.errors)")
        #expect(old.errors.contains("did not say it was ready within 1.0 s; killed it"), "stderr: \(old.errors)")
        #expect(try roundTrip(address, 1000), "the old process still serves")
        let hung = startedPIDs(old.errors)
        #expect(hung.count == 1 && hung.allSatisfy { kill($0, 0) != 0 }, "the hung process was killed and reaped: \(hung)")

        // An upgrade under way when the old process is told to stop: the new one is stopped too
        // (systemctl stop means the service stops), and the old one does not wait for it.
        kill(old.pid, SIGUSR2)
        #expect(old.read(timeout: 20) { _ in startedPIDs(old.errors).count == 2 }, "stderr: \(old.errors)")
        let started = EventLoop.hrtime()
        kill(old.pid, SIGTERM)
        #expect(old.waitForExit(timeout: 20) == 0, "stderr: \(old.errors)")
        #expect(EventLoop.hrtime() - started < 900_000_000, "the stop waited for the upgrade's timeout")
        #expect(old.errors.contains("upgrade: stopping the new process"), "stderr: \(old.errors)")
        let second = startedPIDs(old.errors).last ?? 0
        #expect(kill(second, 0) != 0, "PID \(second) still runs")
    }

    @Test func systemdNotify_readyAtStart_thenTheNewMainPID() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let notify = try NotifySocket(path: directory + "/notify")
        let old = try ServerProcess(["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--workers", "1"],
                                    environment: ["NOTIFY_SOCKET": notify.path])
        _ = try old.waitUntilListening()
        #expect(notify.receive()?.contains("READY=1") == true)
        kill(old.pid, SIGUSR2)
        #expect(old.read(timeout: 20) { _ in readyLines(old.errors).count == 1 }, "stderr: \(old.errors)")
        guard let successor = readyLines(old.errors).first else { return }
        defer { killLeftovers([successor]) }
        // Both processes name the new main PID (the old one before it drains, the new one with
        // READY=1), in either order: every datagram until READY=1 must name the new PID.
        var messages: [String] = []
        while messages.count < 3, let message = notify.receive() {
            messages.append(message)
            if message.contains("READY=1") { break }
        }
        let named = messages.flatMap { $0.split(separator: "\n").filter { $0.hasPrefix("MAINPID=") } }
        #expect(messages.last?.contains("READY=1") == true, "\(messages)")
        #expect(!named.isEmpty && named.allSatisfy { $0 == "MAINPID=\(successor)" }, "\(messages)")
        #expect(old.waitForExit(timeout: 30) == 0)
        kill(successor, SIGTERM)
        #expect(waitForExit(successor, timeout: 30) == 0)
    }

    @Test func anUpgradeApplies_whatAReloadRefuses_workersUpAndDown() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/server.yaml"
        func write(workers: Int) throws {
            try "mode: echo\nlisten: 127.0.0.1:0\nstats: 127.0.0.1:0\nworkers: \(workers)\nbuffer-size: \(workers * 8)KiB\n"
                .write(toFile: config, atomically: true, encoding: .utf8)
        }
        try write(workers: 2)
        let first = try ServerProcess(["--config", config])
        let address = try first.waitUntilListening()
        let stats = try statsAddress(first)
        defer { killLeftovers(readyLines(first.errors)) }
        let churn = Churn(address: address, threads: 2)
        // A reload refuses the change and names the upgrade.
        try write(workers: 1)
        kill(first.pid, SIGHUP)
        #expect(first.read(timeout: 10) { _ in first.errors.contains("--buffer-size, --workers cannot change while running") },
                "stderr: \(first.errors)")
        #expect(first.errors.contains("an upgrade (SIGUSR2) or a restart applies"), "stderr: \(first.errors)")
        // An upgrade applies it: 2 listening sockets into 1 worker, then 1 into 3 (two bound beside it).
        var serving = first.pid
        for (step, workers) in [1, 3].enumerated() {
            try write(workers: workers)
            try churn.waitForMore(churnStep / 2)
            kill(serving, SIGUSR2)
            #expect(first.read(timeout: 20) { _ in readyLines(first.errors).count == step + 1 }, "stderr: \(first.errors)")
            guard readyLines(first.errors).count == step + 1 else { break }
            serving = readyLines(first.errors)[step]
            let body = try get(stats, "/stats").body
            #expect(body.components(separatedBy: "\"worker\":").count - 1 == workers, "\(workers) workers: \(body.prefix(300))")
            #expect(body.contains("\"buffer_size_bytes\":\(workers * 8 * 1024)"), "\(body.prefix(300))")
            try churn.waitForMore(churnStep / 2)
        }
        let (done, failures) = churn.stop()
        #expect(failures.isEmpty, "\(failures.count) churn connections failed: \(failures.prefix(10))")
        #expect(done >= 2 * churnStep)
        #expect(first.waitForExit(timeout: 30) == 0)
        for pid in readyLines(first.errors) {
            if pid != serving { #expect(waitForExit(pid, timeout: 30) == 0) }
        }
        kill(serving, SIGTERM)
        #expect(waitForExit(serving, timeout: 30) == 0)
    }

    @Test func handOverVariable_roundTrips_andRejectsWhatItDidNotWrite() throws {
        let handOver = HandOver(listeners: [5, 6], stats: 7, ready: 8, from: 1234)
        #expect(handOver.encoded == "listen=5,6 stats=7 ready=8 from=1234")
        #expect(try HandOver.parse(handOver.encoded).get() == handOver)
        #expect(try HandOver.parse("listen=9 ready=10 from=2").get() == HandOver(listeners: [9], stats: nil, ready: 10, from: 2))
        for bad in ["", "listen=5 ready=8", "listen=1 ready=8 from=3", "listen=5,5 ready=8 from=3", "listen=5 ready=5 from=3",
                    "listen=5 ready=8 from=0", "listen=a ready=8 from=3", "listen=5 ready=8 from=3 extra=1", "listen"] {
            #expect(throws: HandOverError.self, "\(bad)") { try HandOver.parse(bad).get() }
        }
    }

    // MARK: Helpers

    private func install(_ source: String, at path: String) throws {
        // A copy beside, then a rename over: the running binary's file is never written (and a
        // running file cannot be: ETXTBSY), as a package manager replaces it.
        let temporary = path + ".new"
        try? FileManager.default.removeItem(atPath: temporary)
        try FileManager.default.copyItem(atPath: source, toPath: temporary)
        guard rename(temporary, path) == 0 else { throw SocketError.failed("rename", errno) }
    }

    private func installScript(_ text: String, at path: String) throws {
        let temporary = path + ".new"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        chmod(temporary, 0o755)
        guard rename(temporary, path) == 0 else { throw SocketError.failed("rename", errno) }
    }
}

/// The PIDs of the "upgrade: PID N is ready" lines, in order.
func readyLines(_ log: String) -> [pid_t] {
    log.split(separator: "\n").compactMap { line in
        guard let range = line.range(of: "upgrade: PID ") else { return nil }
        let rest = line[range.upperBound...]
        guard rest.contains(" is ready") else { return nil }
        return pid_t(rest.prefix { $0.isNumber })
    }
}

/// The PIDs of the "upgrade: started ... as PID N" lines, in order.
func startedPIDs(_ log: String) -> [pid_t] {
    log.split(separator: "\n").compactMap { line in
        guard line.contains("upgrade: started "), let range = line.range(of: " as PID ") else { return nil }
        return pid_t(line[range.upperBound...].prefix { $0.isNumber })
    }
}

/// The stats address from the "stats on http://HOST:PORT/" of the "listening on" line.
func statsAddress(_ process: ServerProcess) throws -> SocketAddress {
    guard let range = process.output.range(of: "stats on http://"),
          let end = process.output[range.upperBound...].firstIndex(of: "/") else {
        throw SocketError.failed("no stats address in: \(process.output)", 0)
    }
    return try SocketAddress(parsing: String(process.output[range.upperBound..<end]))
}

/// One GET /readyz on a kept-alive connection; its status.
func readyz(_ socket: TestSocket) throws -> Int {
    try socket.sendAll(Array("GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n".utf8))
    return try socket.readResponse().status
}

/// Waits (bounded) for `pid`'s exit; its status, or nil. The process must be a child of this
/// one, or an orphan this one reaps (`becomeSubreaper`).
func waitForExit(_ pid: pid_t, timeout: Double) -> Int32? {
    let deadline = EventLoop.hrtime() + UInt64(timeout * 1e9)
    while EventLoop.hrtime() < deadline {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f) }
        if result < 0 && errno != EINTR { return nil }  // not ours (yet): its parent is alive
        usleep(10_000)
    }
    return nil
}

/// Ends (SIGKILL) and reaps processes a failed test left running.
func killLeftovers<S: Sequence>(_ pids: S) where S.Element == pid_t {
    for pid in pids where kill(pid, 0) == 0 {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { continue }  // had ended
        kill(pid, SIGKILL)
        _ = waitForExit(pid, timeout: 5)
    }
}

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants become this process's children. (prctl
/// is variadic, which Swift does not import: looked up by name, called with its two integers.)
func becomeSubreaper() {
    typealias Prctl = @convention(c) (Int32, UInt) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "prctl") else { return }
    _ = unsafeBitCast(symbol, to: Prctl.self)(36 /* PR_SET_CHILD_SUBREAPER */, 1)
}

func temporaryDirectory() throws -> String {
    var template = Array("/tmp/fastalloc-upgrade-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw SocketError.failed("mkdtemp", errno) }
    return String(cString: made)
}

/// A process's descriptors once it is idle, by kind: listening sockets by port, connected
/// sockets, pipes, eventfds, epolls, files. Sockets of the stats port other than its listener
/// (our own /stats reads, closing) are left out.
func settledDescriptors(pid: pid_t, stats: SocketAddress) throws -> [String] {
    var last: [String] = []
    var connected = 0
    let settled = eventually(timeout: 10) {
        let body = (try? get(stats, "/stats").body) ?? ""
        guard body.contains("\"connections_active\":0") else { return false }
        (last, connected) = descriptorKinds(pid: pid, statsPort: stats.port)
        return connected == 0
    }
    #expect(settled, "not idle: connected sockets \(connected)")
    return last
}

func descriptorKinds(pid: pid_t, statsPort: Int) -> (kinds: [String], connected: Int) {
    var listening: [String: String] = [:]  // inode: port
    var statsSockets = Set<String>()
    for table in ["tcp", "tcp6"] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/net/\(table)", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { continue }
            let port = String(Int(fields[1].split(separator: ":").last ?? "", radix: 16) ?? -1)
            if fields[3] == "0A" { listening[String(fields[9])] = port }
            if port == String(statsPort) { statsSockets.insert(String(fields[9])) }
        }
    }
    let directory = "/proc/\(pid)/fd"
    var connected = 0
    let kinds = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap { entry -> String? in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(entry)") else { return nil }
        guard target.hasPrefix("socket:[") else { return target.hasPrefix("pipe:") ? "pipe" : target }
        let inode = String(target.dropFirst(8).dropLast())
        if let port = listening[inode] { return "listening:\(port)" }
        if statsSockets.contains(inode) { return nil }
        connected += 1
        return "connected"
    }
    return (kinds.sorted(), connected)
}

/// A Unix datagram socket standing in for systemd's notify socket.
final class NotifySocket {
    let path: String
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError.failed("socket", errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            for (index, byte) in path.utf8.enumerated() { bytes[index] = byte }
        }
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard status == 0 else { throw SocketError.failed("bind \(path)", errno) }
        var time = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The next datagram (waits up to 20 s), or nil.
    func receive() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer.prefix(count), as: UTF8.self) : nil
    }
}
