import LoadClient
import Testing

/// The real `fastalloc-load` executable's command line, read through LoadConfig.table: --help
/// lists every flag of the table, and a bad command line exits 64 naming the flag, the value and
/// the rule, before any connection is tried.
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
