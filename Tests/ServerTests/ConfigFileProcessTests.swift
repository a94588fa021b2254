import Foundation
import ServerCore
import Testing
import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The real `fastalloc-server` with a config file: `check` (exit 0 with the configuration in
/// effect, 64 with the file, the line, the key and the rule) and a start from a file alone.
@Suite struct ConfigFileProcessTests {
    /// A directory of its own for a test's files, removed when done.
    final class Scratch {
        let directory: String
        init() throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("fastalloc-config-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        deinit { try? FileManager.default.removeItem(atPath: directory) }
        func write(_ name: String, _ text: String) throws -> String {
            let path = directory + "/" + name
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
    }

    static let relayExample = DocsTests.root.appendingPathComponent("deploy/config/relay.yaml").path

    @Test func check_goodFile_printsTheConfigurationInEffect_andExits0() throws {
        let check = try ServerProcess(["check", "--config", ConfigFileProcessTests.relayExample, "--workers", "1"],
                                      environment: ["FASTALLOC_IDLE_TIMEOUT": "9s"])
        #expect(check.waitForExit() == 0, "stderr: \(check.errors)")
        let output = check.output
        #expect(output.hasPrefix("# fastalloc-server check: OK."), "\(output)")
        for line in ["mode: relay", "upstream:", "  - 127.0.0.1:7001 weight=3", "  - 127.0.0.1:7003 backup", "balance: leastconn",
                     "workers: 1", "idle-timeout: 9s", "drain-timeout: 20s", "stats: 127.0.0.1:9464",
                     // (ServerProcess sets FASTALLOC_ALLOW_ROOT=1 when the tests run as root.)
                     "allow-root: \(geteuid() == 0)"] {
            #expect(output.split(separator: "\n").contains { $0 == line }, "no '\(line)' in:\n\(output)")
        }
        // It reads back: checked again, as a file, it gives itself.
        let scratch = try Scratch()
        let effective = try scratch.write("effective.yaml", output)
        let again = try ServerProcess(["check", "--config", effective])
        #expect(again.waitForExit() == 0, "stderr: \(again.errors)")
        #expect(again.output.split(separator: "\n").dropFirst() == output.split(separator: "\n").dropFirst())
    }

    @Test func check_badFile_namesTheFileLineKeyAndRule_andExits64() throws {
        let scratch = try Scratch()
        let cases: [(String, String)] = [
            ("mode: relay\nupstream: 127.0.0.1:7001\nworkers: 0\n", "workers: 0 (expected: 1...256)"),
            ("mode: relay\nupstream: 127.0.0.1:7001\nworkres: 2\n", "workres: unknown key; did you mean workers?"),
            ("mode: relay\nupstream:\n  - weight: 2\n", "upstream: a map without address"),
            ("mode: relay\nupstream: 127.0.0.1:7001\nlisten: {host: x}\n", "listen: a map (expected: one value, HOST:PORT)"),
            ("mode: relay\nupstream: 127.0.0.1:7001\nlisten: [x\n", "YAML syntax error"),
        ]
        for (index, (yaml, message)) in cases.enumerated() {
            let path = try scratch.write("bad\(index).yaml", yaml)
            let check = try ServerProcess(["check", "--config", path])
            #expect(check.waitForExit() == 64, "\(yaml)")
            #expect(check.errors.hasPrefix("fastalloc-server check: \(path):"), "stderr: \(check.errors)")
            #expect(check.errors.contains(message), "stderr: \(check.errors)")
            #expect(check.errors.contains(":3: ") || check.errors.contains(":4: "), "no line in: \(check.errors)")
            #expect(check.output.isEmpty)
        }
        let missing = try ServerProcess(["check"], environment: ["FASTALLOC_CONFIG": scratch.directory + "/none.yaml"])
        #expect(missing.waitForExit() == 64)
        #expect(missing.errors.contains("--config (from FASTALLOC_CONFIG): '\(scratch.directory)/none.yaml' (expected: a readable YAML file (No such file or directory))"),
                "stderr: \(missing.errors)")
    }

    @Test func check_appliesFlagsAndVariables_overTheFile() throws {
        // The file is fine alone; a variable makes it wrong (echo with upstreams), a flag right again.
        let echo = try ServerProcess(["check", "--config", ConfigFileProcessTests.relayExample], environment: ["FASTALLOC_MODE": "echo"])
        #expect(echo.waitForExit() == 64)
        #expect(echo.errors.contains("relay.yaml:10: upstream: 127.0.0.1:7001 weight=3 (expected: no upstream in echo mode (use relay))"),
                "stderr: \(echo.errors)")
        let relay = try ServerProcess(["check", "relay", "--config", ConfigFileProcessTests.relayExample], environment: ["FASTALLOC_MODE": "echo"])
        #expect(relay.waitForExit() == 0, "stderr: \(relay.errors)")
    }

    @Test func fileWithModeRelay_runsARelay_withNoArgumentButTheFile() throws {
        let upstream = try TestListener()
        let scratch = try Scratch()
        let path = try scratch.write("relay.yaml", """
            mode: relay
            listen: 127.0.0.1:0
            upstream:
              - address: \(upstream.address)
                weight: 2
            health-check: 'off'
            workers: 1
            stats: 'off'
            """)
        let server = try ServerProcess(["--config", path])
        let address = try server.waitUntilListening()
        #expect(server.output.contains("(relay to \(upstream.address), 1 worker)"), "\(server.output)")
        let client = try TestSocket(connectingTo: address)
        let far = try upstream.accept()
        try client.sendAll(pattern(1000))
        #expect(try far.receive(exactly: 1000) == pattern(1000))
        try far.sendAll(pattern(500, seed: 7))
        #expect(try client.receive(exactly: 500) == pattern(500, seed: 7))
        client.close()
        far.close()
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
    }

    @Test func startWithABadFile_exits64_withTheLine() throws {
        let scratch = try Scratch()
        let path = try scratch.write("echo.yaml", "mode: echo\nlisten: 127.0.0.1:0\nidle-timeout: soon\n")
        let server = try ServerProcess(["--config", path])
        #expect(server.waitForExit() == 64)
        #expect(server.errors.contains("Error: \(path):3: idle-timeout: 'soon' (expected: a time like 60s, 500ms, 2m or 1.5)"),
                "stderr: \(server.errors)")
    }
}
