import FastAlloc
import Options
import Testing

/// A small configuration to drive the table with: one option of every kind.
private struct Sample: Sendable, Equatable {
    enum Color: String, CaseIterable, Sendable { case red, green }
    var count = 4
    var size = 65536
    var timeout = 5.0
    var color = Color.red
    var verbose = false

    static let table = OptionTable<Sample>([
        .integer("count", environment: "SAMPLE_COUNT", \.count, range: 1...10, help: "How many, 1 to 10."),
        .byteCount("size", environment: "SAMPLE_SIZE", \.size, range: 64...(1 << 20), help: "Bytes."),
        .duration("timeout", environment: nil, \.timeout,
                  rule: DurationRule(zeroAllowed: false, maximum: 60, text: "a time > 0, at most 1m"), help: "How long."),
        .choice("color", environment: "SAMPLE_COLOR", \.color, help: "A color."),
        .flag("verbose", environment: "SAMPLE_VERBOSE", \.verbose, help: "Say more."),
    ], environmentPrefix: "SAMPLE_")

    static func make(_ values: [String: String], _ environment: [String: String] = [:]) throws(ConfigError) -> Sample {
        try configured(Sample(), by: table, values, environment)
    }
}

/// `defaults` with `values` and `environment` stored through `table` and validated by it, the
/// error naming where the value came from: how a configuration type builds itself.
func configured<Config>(_ defaults: Config, by table: OptionTable<Config>, _ values: [String: String],
                        _ environment: [String: String]) throws(ConfigError) -> Config {
    var config = defaults
    let origins = try table.apply(values: values, environment: environment, to: &config)
    do { try table.validate(config) } catch { throw origins.renaming(error) }
    return config
}

@Suite struct OptionTableTests {
    @Test func commandLine_takesBothSpellings_flags_andPositionals() throws {
        let parsed = try Sample.table.parse(commandLine: ["echo", "--count", "3", "--size=1MiB", "--verbose", "--", "--count"])
        #expect(parsed.values == ["count": "3", "size": "1MiB", "verbose": "true"])
        #expect(parsed.positional == ["echo", "--count"])
        #expect(!parsed.wantsHelp)
        #expect(try Sample.table.parse(commandLine: ["-h"]).wantsHelp)
        #expect(try Sample.table.parse(commandLine: ["--count", "1", "--count", "2"]).values["count"] == "2")
    }

    @Test func commandLine_unknownOrValuelessOption_isNamed() {
        #expect(throws: CommandLineError(message: "unknown option '--cuont' (did you mean --count?); see --help")) {
            try Sample.table.parse(commandLine: ["--cuont", "3"])
        }
        #expect(throws: CommandLineError(message: "--count needs a value (N)")) { try Sample.table.parse(commandLine: ["--count"]) }
        #expect(throws: CommandLineError.self) { try Sample.table.parse(commandLine: ["-c", "3"]) }
    }

    @Test func values_winOverTheEnvironment_whichWinsOverDefaults() throws {
        let sample = try Sample.make(["count": "3"], ["SAMPLE_COUNT": "5", "SAMPLE_SIZE": "64K", "SAMPLE_COLOR": "", "SAMPLE_VERBOSE": "yes"])
        #expect(sample == Sample(count: 3, size: 65536, timeout: 5, color: .red, verbose: true))
    }

    @Test(arguments: [
        (["count": "three"], [:], "--count: 'three' (expected: a whole number)"),
        (["count": "11"], [:], "--count: 11 (expected: 1...10)"),
        ([:], ["SAMPLE_COUNT": "0"], "--count (from SAMPLE_COUNT): 0 (expected: 1...10)"),
        (["size": "1x"], [:], "--size: '1x' (expected: a byte count like 65536, 64K or 1MiB)"),
        (["size": "32"], [:], "--size: 32 (expected: 64...1048576)"),
        (["timeout": "2m"], [:], "--timeout: '2m' (expected: a time > 0, at most 1m)"),
        (["color": "blue"], [:], "--color: 'blue' (expected: red or green)"),
        ([:], ["SAMPLE_VERBOSE": "maybe"], "--verbose (from SAMPLE_VERBOSE): 'maybe' (expected: 1, true or yes (set), 0, false or no (unset))"),
    ] as [([String: String], [String: String], String)])
    func badValues_nameTheOption_whereFrom_andTheRule(values: [String: String], environment: [String: String], message: String) {
        #expect(throws: (any Error).self) { try Sample.make(values, environment) }
        do { _ = try Sample.make(values, environment) } catch { #expect(error.description == message) }
    }

    @Test func help_listsEveryOption_withItsDefaultAndVariable() {
        let help = Sample.table.help(defaults: Sample())
        for option in Sample.table.options {
            #expect(help.contains("--\(option.name)"))
            if let variable = option.environment { #expect(help.contains("(\(variable))")) }
        }
        #expect(help.contains("Default: 64KiB."))
        #expect(help.contains("Default: 5s."))
        #expect(help.contains("Default: red."))
    }

    @Test func rendered_configurationParsesBackToItself() throws {
        let sample = Sample(count: 7, size: 3 << 20, timeout: 0.25, color: .green, verbose: true)
        var values: [String: String] = [:]
        for line in Sample.table.render(sample).split(separator: "\n") {
            let parts = line.split(separator: " = ", maxSplits: 1).map(String.init)
            values[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        var parsed = Sample()
        _ = try Sample.table.apply(values: values, environment: [:], to: &parsed)
        #expect(parsed == sample)
    }
}
