import LoadClient
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The real `fastalloc-load` executable's command line, read through LoadConfig.table: --help
/// lists every flag of the table, and a bad command line exits 64 naming the flag, the value and
/// the rule, before any connection is tried; and its progress lines.
@Suite struct LoadCommandLineTests {
    @Test func help_listsEveryFlagOfTheTable_andExits0() throws {
        let load = try ChildProcess("fastalloc-load", ["--help"])
        #expect(load.waitForExit() == 0, "stderr: \(load.errors)")
        #expect(load.output.hasPrefix("A load-test client for echo servers and relays"))
        #expect(load.output.contains("USAGE: fastalloc-load [--option value ...]"))
        for option in LoadConfig.table.options {
            #expect(load.output.contains("\n  --\(option.name)"), "--\(option.name) missing from:\n\(load.output)")
        }
        #expect(load.output.contains("  -h, --help\n"))
        #expect(load.errors.isEmpty)
    }

    /// During --warmup the progress lines (once a second, on stderr) say so and give the
    /// warm-up's own rate; they used to print "0 msg/s  p99 0 µs".
    @Test func progressDuringWarmup_saysWarmingUp_withItsRate() throws {
        let server = try ChildProcess("fastalloc-server", ["echo", "--listen", "127.0.0.1:0", "--stats", "off", "--workers", "1"])
        let address = try server.waitUntilListening()
        let load = try ChildProcess("fastalloc-load", [
            "--target", "\(address)", "--connections", "2", "--warmup", "2.5s", "--duration", "1.2s", "--json",
        ])
        #expect(load.waitForExit(timeout: 30) == 0, "stdout: \(load.output) stderr: \(load.errors)")
        let lines = load.errors.split(separator: "\n").map(String.init)
        let warm = lines.filter { $0.contains("warming up: ") }
        // Ticks at 1 s and 2 s fall in the warm-up, the one at 3 s after it.
        #expect(!warm.isEmpty, "stderr: \(load.errors)")
        for line in warm {
            let rate = line.split(separator: " ").dropLast().last.flatMap { Int($0) }
            #expect(line.hasSuffix(" msg/s") && (rate ?? 0) > 0, "\(line)")
        }
        #expect(!lines.contains { $0.contains(" 0 msg/s  p99 0 µs") }, "stderr: \(load.errors)")
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "stderr: \(server.errors)")
    }

    @Test(arguments: [
        (["--conections", "8"], "Error: unknown option '--conections' (did you mean --connections?); see --help"),
        (["--size"], "Error: --size needs a value (N)"),
        (["--size", "64K"], "Error: --size: '64K' (expected: a whole number)"),
        (["--warmup", "-1s"], "Error: --warmup: '-1s' (expected: a time like 60s, 500ms, 2m or 1.5)"),
        (["--target", "127.0.0.1:0"], "Error: --target: 127.0.0.1:0 (expected: a port from 1 to 65535)"),
        (["--threads", "3", "--connections", "2"], "Error: --threads: 3 (expected: 1...connections (2))"),
        (["echo"], "Error: unexpected argument 'echo' (fastalloc-load takes options only)"),
        (["-c", "8"], "Error: unknown option '-c' (options are long: --name VALUE; see --help)"),
    ])
    func badCommandLine_exits64_namingFlagValueAndRule(arguments: [String], message: String) throws {
        // Port 9 (discard): refused before any connection is tried.
        let load = try ChildProcess("fastalloc-load", ["--target", "127.0.0.1:9"] + arguments)
        #expect(load.waitForExit() == 64, "stdout: \(load.output) stderr: \(load.errors)")
        #expect(load.errors.hasPrefix(message + "\n"), "stderr: \(load.errors)")
        #expect(load.errors.contains("USAGE: fastalloc-load [--option value ...]\n  See 'fastalloc-load --help' for the options."))
        #expect(load.output.isEmpty)
    }
}
