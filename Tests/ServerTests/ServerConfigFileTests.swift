import ConfigYAML
import FastAlloc
import Foundation
import Options
import ServerCore
import Testing
import UVLoop

/// The server's config file: its keys are ServerConfig.table's names; `upstream` takes a list of
/// entries or of maps; `mode` is a key; flags > variables > file > defaults.
@Suite struct ServerConfigFileTests {
    /// `yaml` as the file `relay.yaml`, under `values` and `environment`.
    func load(_ yaml: String, values: [String: String] = [:], environment: [String: String] = [:]) throws(ConfigError) -> ServerConfig {
        let file = try ServerConfig.table.fileValues(from: ConfigYAML.parse(Array(yaml.utf8), path: "relay.yaml"), path: "relay.yaml")
        return try ServerConfig(values: values, environment: environment, file: file)
    }

    func refusal(_ yaml: String, values: [String: String] = [:], environment: [String: String] = [:]) -> String {
        do {
            _ = try load(yaml, values: values, environment: environment)
            return "(accepted)"
        } catch {
            return error.description
        }
    }

    @Test func relayFile_givesTheModeAndEveryUpstream() throws {
        let config = try load("""
            mode: relay
            listen: 127.0.0.1:0
            upstream:
              - address: 127.0.0.1:7001
                weight: 3
              - 127.0.0.1:7002 weight=2
              - address: 127.0.0.1:7003
                backup: true
                proxy-protocol: v1
            balance: leastconn
            proxy-protocol-upstream: v2
            health-check-interval: 500ms
            workers: 2
            stats: 'off'
            """)
        #expect(config.mode == .relay)
        #expect(config.upstreams.map(\.description) == ["127.0.0.1:7001 weight=3", "127.0.0.1:7002 weight=2", "127.0.0.1:7003 backup proxy-protocol=v1"])
        #expect(config.proxyProtocolUpstream == .v2)
        #expect(config.balance == .leastconn)
        #expect(config.healthCheckInterval == 0.5)
        #expect(config.workers == 2)
        #expect(config.stats == nil)
    }

    @Test func everyExampleFile_isValid() throws {
        let directory = DocsTests.root.appendingPathComponent("deploy/config")
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 2, "\(names)")
        for name in names {
            let path = directory.appendingPathComponent(name).path
            let file = try ServerConfig.table.readConfigFile(path)
            // What a machine without those addresses still checks: every value, the mode included.
            let config = try ServerConfig(values: [:], environment: [:], file: file)
            #expect(file.entries["mode"] != nil, "\(name) names no mode")
            if name.hasPrefix("relay") {
                #expect(config.mode == .relay)
                #expect(config.upstreams.count == 3 && config.upstreams.contains(where: \.backup)
                        && config.upstreams.contains { $0.weight > 1 }, "\(name): \(config.upstreams)")
                #expect(file.entries["health-check"] != nil)
            }
        }
    }

    @Test func modeComesFromTheFile_belowTheArgumentAndTheVariable() throws {
        let yaml = "mode: relay\nupstream: 127.0.0.1:7001\n"
        #expect(try load(yaml).mode == .relay)
        #expect(refusal(yaml, environment: ["FASTALLOC_MODE": "echo"])
                == "relay.yaml:2: upstream: 127.0.0.1:7001 (expected: no upstream in echo mode (use relay))")
        #expect(try load("mode: echo\nupstream: 127.0.0.1:7001\n", environment: ["FASTALLOC_MODE": "relay"]).mode == .relay)
        #expect(try load("mode: echo\n", values: ["mode": "relay", "upstream": "127.0.0.1:7001"], environment: ["FASTALLOC_MODE": "echo"]).mode == .relay)
        #expect(refusal("workers: 1\n") == "--mode: (none) (expected: echo or relay, as the first argument, --mode, FASTALLOC_MODE or the config file's mode)")
        #expect(refusal("mode: rely\n") == "relay.yaml:1: mode: 'rely' (expected: echo or relay)")
    }

    @Test func flagsWinOverVariables_whichWinOverTheFile_whichWinsOverDefaults() throws {
        let yaml = """
            mode: relay
            upstream: [127.0.0.1:7001, 127.0.0.1:7002]
            workers: 2
            idle-timeout: 20s
            buffer-size: 16KiB
            """
        let config = try load(yaml, values: ["workers": "3"],
                              environment: ["FASTALLOC_WORKERS": "5", "FASTALLOC_IDLE_TIMEOUT": "9s", "FASTALLOC_UPSTREAM": "127.0.0.1:7009"])
        #expect(config.workers == 3)                                              // flag
        #expect(config.idleTimeout == 9)                                          // variable over file
        #expect(config.upstreams.map(\.description) == ["127.0.0.1:7009"])        // a list replaced whole
        #expect(config.buffers.bufferSize == 16384)                               // file
        #expect(config.drainTimeout == ServerConfig(mode: .relay).drainTimeout)   // default
    }

    @Test(arguments: [
        // An upstream map without its address, with an unknown key, with a bad weight or backup.
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n  - weight: 2\n    backup: true\n",
         "relay.yaml:4: upstream: a map without address (expected: address: HOST:PORT, optionally weight: N, backup: true and proxy-protocol: v1|v2|off)"),
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n    wieght: 2\n",
         "relay.yaml:4: upstream: 'wieght'; did you mean weight? (expected: address, weight, backup or proxy-protocol)"),
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n    weight: 0\n",
         "relay.yaml:4: upstream: weight: '0' (expected: a whole number from 1 to 256)"),
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n    proxy-protocol: v3\n",
         "relay.yaml:4: upstream: proxy-protocol: 'v3' (expected: v1, v2 or off)"),
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n    backup: maybe\n",
         "relay.yaml:4: upstream: backup: 'maybe' (expected: true or false)"),
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001 weight=2\n",
         "relay.yaml:3: upstream: address: '127.0.0.1:7001 weight=2' (expected: HOST:PORT alone (weight and backup are keys of their own))"),
        ("mode: relay\nupstream:\n  - address: [127.0.0.1:7001]\n",
         "relay.yaml:3: upstream: address: a list (expected: one value for address)"),
        ("mode: relay\nupstream:\n  - [127.0.0.1:7001]\n",
         "relay.yaml:3: upstream: a list (expected: HOST:PORT [weight=N] [backup] [proxy-protocol=v1|v2|off], or a map with address: HOST:PORT, optionally weight: N, backup: true and proxy-protocol: v1|v2|off)"),
        // A bad entry among good ones: its own line.
        ("mode: relay\nupstream:\n  - 127.0.0.1:7001\n  - 127.0.0.1:notaport\n  - 127.0.0.1:7003\n",
         "relay.yaml:4: upstream: '127.0.0.1:notaport' (expected: HOST:PORT with an IPv4 address, an [IPv6] address or a name that resolves to one, like 127.0.0.1:7001, [::1]:7001 or upstream.internal:7001, then optionally weight=N, backup and proxy-protocol=v1|v2|off (the port must be a number from 0 to 65535))"),
        // Rules between options: the file's line of the value named.
        ("mode: relay\nupstream:\n  - address: 127.0.0.1:7001\n    backup: true\n",
         "relay.yaml:3: upstream: 127.0.0.1:7001 backup (expected: at least one upstream that is not a backup)"),
        ("mode: echo\nhigh-watermark: 64KiB\nlow-watermark: 1MiB\n",
         "relay.yaml:3: low-watermark: 1048576 (expected: 0...--high-watermark - 1 (65535))"),
        // (What the file lacks is named as the option.)
        ("mode: relay\n", "--upstream: (none) (expected: HOST:PORT of the upstream, required in relay mode)"),
        // Unknown keys, wrong types, syntax.
        ("mode: echo\nlisnen: 127.0.0.1:7000\n",
         "relay.yaml:2: lisnen: unknown key; did you mean listen? (expected: an option name of --help, without its dashes)"),
        ("mode: echo\nlisen: 127.0.0.1:7000\n",
         "relay.yaml:2: lisen: unknown key; did you mean listen or rise? (expected: an option name of --help, without its dashes)"),
        ("mode: echo\nlisten:\n  host: 127.0.0.1\n  port: 7000\n", "relay.yaml:3: listen: a map (expected: one value, HOST:PORT)"),
        ("mode: echo\nworkers: [1, 2]\n", "relay.yaml:2: workers: a list (expected: one value, N)"),
        ("mode: echo\nworkers: 2\n  idle-timeout: 5s\n",
         "relay.yaml:3: YAML syntax error: mapping values are not allowed in this context, column 15 (expected: YAML)"),
    ] as [(String, String)])
    func badFile_namesTheLine_theKey_andTheRule(yaml: String, message: String) {
        #expect(refusal(yaml) == message)
    }

    @Test func aValueFromTheFile_thatAFlagReplaces_isNotChecked() throws {
        // The flag wins before anything is parsed: the file's bad value never counts.
        let config = try load("mode: echo\nworkers: many\n", values: ["workers": "2"])
        #expect(config.workers == 2)
    }

    @Test func renderedYAML_readsBackAsTheSameConfiguration() throws {
        let config = try load("""
            mode: relay
            listen: '[::1]:0'
            upstream:
              - address: 127.0.0.1:7001
                weight: 3
              - address: 127.0.0.1:7003
                backup: true
            stats: 'off'
            overflow-growth: linear:32
            allow-root: true
            """)
        let yaml = ServerConfig.table.renderYAML(config)
        #expect(yaml.hasPrefix("mode: relay\nlisten: '[::1]:0'\nupstream:\n  - 127.0.0.1:7001 weight=3\n  - 127.0.0.1:7003 backup\n"), "\(yaml)")
        #expect(yaml.contains("\nstats: 'off'\n") && yaml.contains("\nallow-root: true\n"))
        let again = try load(yaml)
        #expect(ServerConfig.table.renderYAML(again) == yaml)
        // Every option but the file's own is a key of it.
        #expect(yaml.split(separator: "\n").filter { !$0.hasPrefix(" ") }.count == ServerConfig.options.count - 1)
    }
}
