import ConfigYAML
import FastAlloc
import Logging
import Options
import ServerCore
import StatsEndpoint
import Synchronization
import Threads
import Upgrade
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// fastalloc-server: a libuv TCP echo or relay server on pooled packet buffers.
@main
struct FastAllocServer {
    static let usage = """
        USAGE: fastalloc-server <echo|relay> [--option value ...]
               fastalloc-server [echo|relay] --config FILE [--option value ...]
               fastalloc-server check [echo|relay] [--config FILE] [--option value ...]
        """

    static let about = """
        A libuv TCP echo and relay server whose every read lands in a pooled packet buffer.

        Modes: echo sends every byte back to its sender; relay gives every client its own
        connection to one of the --upstream servers (picked by --balance among those up; clients
        never choose) and moves bytes both ways.
        The mode is the first argument, or else FASTALLOC_MODE, or else the config file's mode.

        Every option can also come from the environment variable named in its help, and from a
        YAML config file (--config FILE) whose keys are the option names; a flag wins over the
        variable, the variable over the file, the file over the default. The server binds
        127.0.0.1 unless told otherwise. Every time, size and count has the range its help gives
        (and all packet buffers together must fit the physical memory): a value outside it is
        refused with its rule, and its file and line when it came from the file (status 64).

        'check' starts nothing: it reads the options as a start would (file, variables, flags),
        prints the configuration in effect as YAML (a config file) and exits 0, or names the
        first error, with its file and line, and exits 64.

        On SIGTERM or SIGINT the server stops accepting (/readyz answers 503) and lets every
        connection go on, both ways, until it ends by itself; when --drain-timeout passes it
        resets what is left on both sides (a cut is never a clean end), prints a summary with how
        many ended and how many were cut, and exits 0; a second signal exits at once (status 1).
        Exit status 1 when it cannot listen; 64 for a bad option.

        On SIGHUP it reads the --config file again and applies what a reload may change to new
        connections (or refuses the whole reload, naming what needs an upgrade). On SIGUSR2 it
        upgrades: it starts the binary at its own path again, with the same arguments, hands it
        the listening sockets (never closed, so no connection is refused), and once the new
        process says it is ready, stops accepting and drains as on SIGTERM; if the new process
        fails to start within --upgrade-timeout, this one keeps serving. SIGUSR1 reopens the access log.
        """

    static func main() {
        let environment = ProcessEnvironment.current
        let command: ParsedCommandLine
        do {
            command = try ServerConfig.table.parse(commandLine: Array(CommandLine.arguments.dropFirst()))
        } catch {
            usageError(error.message)
        }
        if command.wantsHelp {
            write("\(about)\n\n\(usage)\n\nOPTIONS:\n\(ServerConfig.table.help(defaults: ServerConfig(mode: .echo)))"
                + "  -h, --help\n        Show this help.\n", to: 1)
            exit(0)
        }
        var positional = command.positional
        let checking = positional.first == "check"
        if checking { positional.removeFirst() }
        if positional.count > 1 { usageError("one mode expected, got \(positional.joined(separator: " "))") }
        var values = command.values
        if let modeText = positional.first {
            guard ServerMode(rawValue: modeText) != nil else {
                usageError("mode: '\(modeText)' (expected: echo or relay, or check)")
            }
            if let flag = values["mode"], flag != modeText { usageError("two modes: '\(modeText)' and --mode \(flag)") }
            values["mode"] = modeText
        }
        // The configuration as a start reads it; a reload (SIGHUP) reads it again the same way: the
        // file again, the start's variables and flags.
        let configValues = values
        let read: @Sendable () throws -> ServerConfig = {
            var file: ConfigFileValues?
            if let (path, field) = ServerConfig.table.configFilePath(values: configValues, environment: environment) {
                file = try ServerConfig.table.readConfigFile(path, field: field)
            }
            return try ServerConfig(values: configValues, environment: environment, file: file)
        }
        let configPath = ServerConfig.table.configFilePath(values: values, environment: environment)?.path
        let hasFile = configPath != nil
        let config: ServerConfig
        do {
            config = try read()
        } catch {
            if checking {
                write("fastalloc-server check: \(error)\n", to: 2)
                exit(64)
            }
            usageError("\(error)")
        }
        if config.watchConfig && !hasFile && !checking {
            usageError("--watch-config: there is no --config file to watch")
        }
        if checking {
            let sources = ServerConfig.table.configFilePath(values: values, environment: environment).map { " < \($0.path)" } ?? ""
            write("# fastalloc-server check: OK. The configuration in effect (defaults\(sources) < variables < flags):\n"
                + ServerConfig.table.renderYAML(config), to: 1)
            exit(0)
        }
        if geteuid() == 0 && !config.allowRoot {
            // A server that faces the network should hold no privilege it does not need: a flaw
            // in it must not hand out root. Binding a port below 1024 needs only
            // CAP_NET_BIND_SERVICE (see deploy/systemd), not root.
            usageError("""
                refusing to run as root (effective uid 0): run it as an unprivileged user \
                (deploy/systemd and deploy/kubernetes do), or pass --allow-root (FASTALLOC_ALLOW_ROOT=1) to accept the risk
                """)
        }
        do {
            try run(config, viaFlag: command.values["allow-root"] != nil, reread: hasFile ? read : nil, configPath: configPath,
                    environment: environment)
        } catch {
            fail("\(error)")
        }
    }

    static func run(_ config: ServerConfig, viaFlag allowRootFlag: Bool, reread: (@Sendable () throws -> ServerConfig)?,
                    configPath: String?, environment: [String: String]) throws {
        // Until their watchers are installed (after the workers listen), a SIGHUP (systemctl
        // reload), SIGUSR1 (logrotate) or SIGUSR2 (upgrade) must not end the process: their
        // default action would. libuv's watchers replace these dispositions with their own handler.
        signal(SIGHUP, SIG_IGN)
        signal(SIGUSR1, SIG_IGN)
        signal(SIGUSR2, SIG_IGN)
        // Resolved now: an upgrade runs whatever file is at this path then (a new release).
        let executable = Successor.currentExecutable()
        let mode = config.mode
        // One level for the process, which a reload may change (SwitchedLogHandler).
        let levels = LogLevelSwitch(config.logLevel)
        LoggingSystem.bootstrap { label in
            SwitchedLogHandler(base: StreamLogHandler.standardError(label: label), levels: levels)
        }
        let logger = Logger(label: "fastalloc-server")
        if geteuid() == 0 {
            let why = allowRootFlag ? "--allow-root" : "FASTALLOC_ALLOW_ROOT is set (the Makefile sets it when you are root)"
            logger.warning("running as root because \(why); an unprivileged user is safer (SECURITY.md)")
        }

        // Started by an upgrade: the old process's listening sockets, to accept on.
        let adopted = adoptHandOver(config: config, environment: environment, logger: logger)

        // The main thread waits on its own loop for signals and for the workers to finish.
        let control = try EventLoop()
        let done = try AsyncWake(loop: control) { $0.loop.stop() }
        let server: Server
        do {
            // The stats endpoint's connections and its loop come out of the same descriptor limit.
            let statsDescriptors = config.stats == nil ? 0 : StatsLimits().maxConnections + 8
            server = try Server(config: config, logger: logger, reservedDescriptors: statsDescriptors,
                                inherited: adopted?.listeners ?? [], acceptLater: adopted != nil, onFinished: { done.send() })
        } catch let error as UVError {
            done.close()
            control.runOnce(wait: false)  // the close callback frees the handle before we exit
            FastAllocServer.fail("cannot listen on \(config.listen): \(error.message) (\(error.name))")
        } catch let error as ConfigError {
            done.close()
            control.runOnce(wait: false)
            FastAllocServer.fail("cannot start: \(error)")
        }
        var statsEndpoint: StatsEndpoint?
        if let statsAddress = config.stats {
            do {
                statsEndpoint = try StatsEndpoint(server: server, address: statsAddress, adopting: adopted?.stats,
                                                  acceptLater: adopted != nil, logger: logger)
            } catch {
                server.stop()
                server.wait()
                done.close()
                control.runOnce(wait: false)
                FastAllocServer.fail("cannot listen on stats address \(statsAddress): \(error.message) (\(error.name))")
            }
        }
        var signals = 0
        let upgrade = UpgradeControl(loop: control, server: server, stats: statsEndpoint, executable: executable,
                                     environment: environment, logger: logger)
        let onSignal: (SignalWatcher, Int32) -> Void = { _, number in
            signals += 1
            if signals == 1 && upgrade.handedOver {
                logger.notice("signal \(number): already draining since the upgrade; a second signal exits at once")
            } else if signals == 1 {
                upgrade.cancel()
                logger.notice("signal \(number): draining (up to \(server.currentConfig.drainTimeout) s); a second signal exits at once")
                server.drain()
            } else {
                logger.warning("second signal: exiting now")
                Glibc.exit(1)
            }
        }
        let term = try SignalWatcher(loop: control, signal: SIGTERM, onSignal)
        let interrupt = try SignalWatcher(loop: control, signal: SIGINT, onSignal)
        // SIGUSR1 (logrotate's postrotate): the access log reopens its file.
        let reopen = try SignalWatcher(loop: control, signal: SIGUSR1) { _, _ in server.reopenAccessLog() }
        // SIGUSR2: a binary upgrade (UpgradeControl).
        let upgradeSignal = try SignalWatcher(loop: control, signal: SIGUSR2) { _, _ in
            upgrade.begin(draining: signals > 0)
        }
        // SIGHUP (systemd's ExecReload): the config file is read again; what a reload may change
        // applies to new connections, anything else refuses the whole reload (logged, counted).
        let hangUp = try SignalWatcher(loop: control, signal: SIGHUP) { _, _ in
            guard let reread else {
                server.countFailedReload()
                logger.error("SIGHUP: no config file (--config) to read again; nothing changed")
                return
            }
            do {
                let next = try reread()
                switch try server.reload(next) {
                case .applied(let names):
                    // The log level is the process's (the handler's), not the server's: set here.
                    if names.contains("log-level") { levels.set(next.logLevel) }
                    logger.notice("reload: \(ReloadError.list(names)) applied to new connections (configuration generation \(server.statistics().reloads.generation))")
                case .unchanged:
                    logger.notice("reload: nothing changed")
                }
            } catch let error as ReloadError {
                logger.error("\(error)")
            } catch {
                server.countFailedReload()
                logger.error("reload failed, the running configuration stays: \(error)")
            }
        }
        // --watch-config: a change of the file's content acts as a SIGHUP.
        let fileWatch = try configPath.flatMap { path in
            config.watchConfig ? try ConfigFileWatch(loop: control, path: path, logger: logger) : nil
        }
        let workerWord = config.workers == 1 ? "worker" : "workers"
        let upstreamText = config.upstreams.isEmpty ? "" : " to " + config.upstreams.map(\.address).joined(separator: ", ")
        // One line on stdout, written at once (scripts wait for it), even into a pipe.
        let statsText = statsEndpoint.map { "; stats on http://\($0.address)/" } ?? ""
        FastAllocServer.write("listening on \(server.address) (\(mode.rawValue)\(upstreamText), \(config.workers) \(workerWord))\(statsText)\n", to: 1)
        if let adopted {
            // Everything has started: accept now (nothing accepted before could have been cut by
            // a failed start). The old process may then close its copies and drain.
            // The stats port first: a port taken there fails here (libuv reports a bind's
            // EADDRINUSE at listen), before a worker has taken any client.
            var failures = statsEndpoint?.startAccepting().map { ["stats \(config.stats.map { "\($0)" } ?? ""): \($0)"] } ?? []
            if failures.isEmpty { failures = server.startAccepting() }
            if !failures.isEmpty {
                // Not ready: the old process keeps serving (it sees this process exit). What the
                // workers that did accept took meanwhile drains first.
                logger.error("upgrade: cannot accept (\(failures.joined(separator: "; "))); exiting, PID \(adopted.handOver.from) keeps serving")
                server.drain()
                server.wait()
                statsEndpoint?.stop()
                Glibc.exit(1)
            }
            server.markInherited()
            let told = adopted.handOver.signalReady()
            let statsText = adopted.stats != nil ? " and on its stats socket" : ""
            let toldText = told ? "it drains now" : "it could not be told (gone?)"
            logger.notice("upgrade: accepting on \(adopted.listeners.count) listening sockets from PID \(adopted.handOver.from)\(statsText); \(toldText)")
            // systemd follows this process from now on (Type=notify, NotifyAccess=all).
            SystemdNotify.send("MAINPID=\(getpid())\nREADY=1\nSTATUS=serving (took over from PID \(adopted.handOver.from))", environment: environment)
        } else {
            SystemdNotify.send("READY=1\nSTATUS=serving", environment: environment)
        }

        control.run()
        for handle in [term, interrupt, reopen, upgradeSignal, hangUp] as [Handle] { handle.close() }
        upgrade.close()
        fileWatch?.close()
        done.close()
        control.runOnce(wait: false)
        let final = server.wait()
        statsEndpoint?.stop()
        FastAllocServer.write("stopped: \(final.summary)\n", to: 1)
    }

    /// A bad command line or option: the message, the usage line, status 64 (EX_USAGE).
    static func usageError(_ message: String) -> Never {
        write("Error: \(message)\n\(usage)\n  See 'fastalloc-server --help' for the options.\n", to: 2)
        exit(64)
    }

    static func fail(_ message: String) -> Never {
        write("fastalloc-server: \(message)\n", to: 2)
        Glibc.exit(1)
    }

    /// Writes straight to a file descriptor (no stdio buffering to flush).
    static func write(_ text: String, to descriptor: Int32) {
        var text = text
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written <= 0 { break }
                offset += written
            }
        }
    }
}

enum ProcessEnvironment {
    static var current: [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
