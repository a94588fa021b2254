import FastAlloc
import Options
import Testing

/// The kinds added for the load client: an optional value, a flag that turns something off, and
/// a duration whose rule another option can make moot.
private struct Run: Sendable, Equatable {
    var rate: Double?
    var messages: Int?
    var verify = true
    var duration = 10.0

    static let table = OptionTable<Run>([
        .optional("rate", environment: "RUN_RATE", \.rate, valueName: "N", syntax: "a number", parse: { Double($0) },
                  rule: "0.001...1000", allows: { (0.001...1000).contains($0) }, help: "Per second.", defaultText: "closed loop"),
        .optional("messages", environment: nil, \.messages, valueName: "N", syntax: "a whole number", parse: { Int($0) },
                  rule: "1...100", allows: { (1...100).contains($0) }, help: "How many."),
        .flag("no-verify", environment: "RUN_NO_VERIFY", \.verify, setting: false, help: "Do not check."),
        .duration("duration", environment: nil, \.duration,
                  rule: DurationRule(zeroAllowed: false, maximum: 60, text: "a time > 0, at most 1m"),
                  onlyWhen: { $0.messages == nil }, help: "How long, unless --messages."),
    ], environmentPrefix: "RUN_")

    static func make(_ values: [String: String], _ environment: [String: String] = [:]) throws(ConfigError) -> Run {
        try configured(Run(), by: table, values, environment)
    }
}

@Suite struct OptionKindsTests {
    @Test func optional_isNilUnlessGiven_andAnEmptyTextGivesNilBack() throws {
        #expect(try Run.make([:]) == Run())
        #expect(try Run.make(["rate": "2.5", "messages": "7"]) == Run(rate: 2.5, messages: 7))
        #expect(try Run.make([:], ["RUN_RATE": "10"]).rate == 10)
        #expect(try Run.make(["rate": ""], ["RUN_RATE": "10"]).rate == nil)
    }

    @Test(arguments: [
        (["rate": "fast"], "--rate: 'fast' (expected: a number)"),
        (["rate": "1e-300"], "--rate: 1e-300 (expected: 0.001...1000)"),
        (["rate": "nan"], "--rate: nan (expected: 0.001...1000)"),
        (["messages": "0"], "--messages: 0 (expected: 1...100)"),
        (["messages": "1.5"], "--messages: '1.5' (expected: a whole number)"),
        (["duration": "2m"], "--duration: 120.0 (expected: a time > 0, at most 1m)"),
        (["duration": "soon"], "--duration: 'soon' (expected: a time like 60s, 500ms, 2m or 1.5)"),
    ] as [([String: String], String)])
    func badValues_nameTheOptionAndTheRule(values: [String: String], message: String) {
        #expect(throws: ConfigError.self) { try Run.make(values) }
        do { _ = try Run.make(values) } catch { #expect(error.description == message) }
    }

    @Test func flagSettingFalse_clearsItsField_andPrintsAsGiven() throws {
        #expect(try Run.make(["no-verify": "true"]).verify == false)
        #expect(try Run.make([:], ["RUN_NO_VERIFY": "yes"]).verify == false)
        #expect(try Run.make(["no-verify": "0"]).verify == true)
        #expect(Run.table.render(Run(verify: false)).contains("no-verify = true"))
        #expect(Run.table.render(Run()).contains("no-verify = false"))
    }

    @Test func conditionalDuration_isCheckedOnlyWhereItApplies() throws {
        // Moot with --messages, whichever comes first: not refused.
        #expect(try Run.make(["duration": "1h", "messages": "5"]) == Run(messages: 5, duration: 3600))
        #expect(throws: ConfigError.self) { try Run.make(["duration": "0"]) }
        #expect(throws: ConfigError.self) { try Run.table.validate(Run(duration: .infinity)) }
        try Run.table.validate(Run(messages: 1, duration: .infinity))
    }

    @Test func help_showsWhatNilMeans_onlyWhereSaid() {
        let help = Run.table.help(defaults: Run())
        #expect(help.contains("--rate <N>\n        Per second. Default: closed loop. (RUN_RATE)"))
        #expect(help.contains("--messages <N>\n        How many.\n"))
        #expect(help.contains("--no-verify\n        Do not check. (RUN_NO_VERIFY)\n"))
        #expect(help.contains("Default: 10s."))
    }

    @Test func rendered_configurationParsesBackToItself() throws {
        for run in [Run(), Run(rate: 0.25, messages: 100, verify: false, duration: 0.5)] {
            var values: [String: String] = [:]
            for line in Run.table.render(run).split(separator: "\n") {
                let parts = line.split(separator: " = ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                values[parts[0]] = parts.count > 1 ? parts[1] : ""
            }
            #expect(try Run.make(values) == run)
        }
    }
}
