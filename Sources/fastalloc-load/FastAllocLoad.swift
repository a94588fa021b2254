import LoadClient
import Options
#if canImport(Glibc)
import Glibc
#endif

/// fastalloc-load: drives an echo server (or a relay in front of one) and checks every byte.
@main
struct FastAllocLoad {
    static let usage = "USAGE: fastalloc-load [--option value ...]"

    static let about = """
        A load-test client for echo servers and relays: verifies every echoed byte, reports throughput and latency.

        Each connection sends a deterministic byte pattern (per connection and offset) and checks
        every byte that comes back, however the server splits or coalesces it. Without --rate the
        load is closed loop (each connection keeps --depth messages in flight). With --rate it is
        open loop: every message has an intended send time and its latency counts from that time,
        so a server that stalls cannot hide it (as wrk2 does). Warm-up results are discarded.
        Exit status: 0 when every byte matched and no connection failed or closed early; 1 otherwise,
        with the reason on stderr; 64 for a bad flag.
        """

    static func main() {
        let command: ParsedCommandLine
        do {
            command = try LoadConfig.table.parse(commandLine: Array(CommandLine.arguments.dropFirst()))
        } catch {
            usageError(error.message)
        }
        if command.wantsHelp {
            print("\(about)\n\n\(usage)\n\nOPTIONS:\n\(LoadConfig.table.help(defaults: LoadConfig()))"
                + "  -h, --help\n        Show this help.")
            return
        }
        if let argument = command.positional.first {
            usageError("unexpected argument '\(argument)' (fastalloc-load takes options only)")
        }
        let config: LoadConfig
        do {
            config = try LoadConfig(values: command.values)
        } catch {
            usageError("\(error)")
        }
        exit(run(config))
    }

    /// Runs the load and prints its report; the exit status: 0 when it succeeded, 1 otherwise.
    static func run(_ config: LoadConfig) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let terminal = isatty(STDERR_FILENO) == 1
        let progress: @Sendable (LoadProgress) -> Void = { progress in
            writeStderr(terminal ? "\r\u{1B}[K" + progress.line : progress.line + "\n")
        }
        let report: LoadReport
        do {
            report = try runLoad(config, progress: progress)
        } catch {
            usageError("\(error)")  // validated already: not reached
        }
        if terminal { writeStderr("\r\u{1B}[K") }
        print(config.jsonOutput ? report.json() : report.summary())
        if let reason = report.failureReason {
            writeStderr("fastalloc-load: \(reason)\n")
            return 1
        }
        return 0
    }

    /// A bad command line or flag: the message, the usage line, status 64 (EX_USAGE).
    static func usageError(_ message: String) -> Never {
        writeStderr("Error: \(message)\n\(usage)\n  See 'fastalloc-load --help' for the options.\n")
        exit(64)
    }
}

func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(STDERR_FILENO, bytes.baseAddress, bytes.count) }
}
