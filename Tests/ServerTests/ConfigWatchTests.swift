import Foundation
import ServerCore
import Testing
import UVLoop

/// --watch-config with the layout of a Kubernetes ConfigMap volume: `server.yaml ->
/// ..data/server.yaml`, `..data -> ..<timestamp>`; an update writes a new timestamped directory
/// and renames a new `..data` symlink over the old one (what the kubelet's AtomicWriter does).
@Suite(.serialized) struct ConfigWatchTests {
    @Test func configMapSwap_reloads_aBadOneIsRefused_anUnchangedOneIsNothing() throws {
        let a = try startServer()
        let b = try startServer()
        defer { finish(a); finish(b) }
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func publish(_ text: String, version: Int) throws {
            let data = "..2026_12_02_00_00_0\(version)"
            try FileManager.default.createDirectory(atPath: "\(directory)/\(data)", withIntermediateDirectories: false)
            try text.write(toFile: "\(directory)/\(data)/server.yaml", atomically: false, encoding: .utf8)
            try FileManager.default.createSymbolicLink(atPath: "\(directory)/..data_tmp", withDestinationPath: data)
            guard rename("\(directory)/..data_tmp", "\(directory)/..data") == 0 else { throw SocketError.failed("rename", errno) }
        }
        let base = "mode: relay\nlisten: 127.0.0.1:0\nstats: 127.0.0.1:0\nworkers: 1\nhealth-check: off\n"
        try publish(base + "upstream: [\"\(a.address)\"]\n", version: 1)
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/server.yaml", withDestinationPath: "..data/server.yaml")

        let server = try ServerProcess(["--config", "\(directory)/server.yaml", "--watch-config"])
        let address = try server.waitUntilListening()
        let stats = try statsAddress(server)
        #expect(try roundTrip(address, 1000))
        #expect(a.statistics().connectionsAccepted == 1)

        // The ConfigMap changes: the relay reloads by itself; new connections go to b.
        try publish(base + "upstream: [\"\(b.address)\"]\n", version: 2)
        #expect(server.read(timeout: 10) { _ in server.errors.contains("reload: --upstream applied") }, "stderr: \(server.errors)")
        #expect(try metric(stats, "fastalloc_config_generation") == 2)
        #expect(try roundTrip(address, 1000))
        #expect(b.statistics().connectionsAccepted == 1)
        #expect(a.statistics().connectionsAccepted == 1)

        // A bad version: refused and counted; the running configuration stays.
        try publish(base + "upstream: [\"\(b.address)\"]\nworkers: many\n", version: 3)
        #expect(server.read(timeout: 10) { _ in server.errors.contains("reload failed") }, "stderr: \(server.errors)")
        #expect(try metric(stats, "fastalloc_config_reload_failures_total") == 1)
        #expect(try roundTrip(address, 1000))
        #expect(b.statistics().connectionsAccepted == 2)

        // The same content again (a new directory, a new symlink): no reload at all.
        let reloads = try metric(stats, "fastalloc_config_reloads_total") ?? -1
        try publish(base + "upstream: [\"\(b.address)\"]\n", version: 4)   // a good one again: a reload, nothing changed
        #expect(server.read(timeout: 10) { _ in server.errors.contains("reload: nothing changed") }, "stderr: \(server.errors)")
        try publish(base + "upstream: [\"\(b.address)\"]\n", version: 5)   // identical to version 4
        #expect(server.read(timeout: 10) { _ in server.errors.contains("its content did not: no reload") }, "stderr: \(server.errors)")
        // A later, different change: the watch still runs.
        try publish(base + "upstream: [\"\(a.address)\"]\n", version: 6)
        #expect(server.read(timeout: 10) { _ in server.errors.components(separatedBy: "reload: --upstream applied").count == 3 },
                "stderr: \(server.errors)")
        #expect(try metric(stats, "fastalloc_config_reloads_total") == reloads + 2, "versions 4 and 6 reloaded, 5 did not")
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0)
    }

    @Test func watchConfigWithoutAFile_isAUsageError() throws {
        let server = try ServerProcess(["echo", "--watch-config", "--stats", "off"])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("--watch-config: there is no --config file to watch"), "\(server.errors)")
    }
}

/// One unlabelled sample of `/metrics`.
func metric(_ stats: SocketAddress, _ name: String) throws -> Double? {
    let body = try get(stats, "/metrics").body
    for line in body.split(separator: "\n") where line.hasPrefix(name + " ") {
        return Double(line.split(separator: " ")[1])
    }
    return nil
}
