import Options
import Testing

/// The value syntaxes the options share: times and byte counts, parsed and printed back.
@Suite struct ValuesTests {
    @Test(arguments: [("10s", 10.0), ("500ms", 0.5), ("2m", 120.0), ("1.5", 1.5), ("250us", 0.00025)])
    func durations_parse(_ text: String, _ seconds: Double) {
        #expect(parseDuration(text) == seconds)
    }

    @Test(arguments: ["", "ten", "-1s", "5x", "inf"])
    func badDurations_rejected(_ text: String) {
        #expect(parseDuration(text) == nil)
    }

    @Test func byteCountsAndDurations_parseWithoutOverflow() {
        #expect(parseByteCount("99999999999999999999K") == nil)
        #expect(parseByteCount("9223372036854775807K") == nil)
        #expect(parseByteCount("8589934592G") == nil)
        #expect(parseByteCount("8589934591G") == 8_589_934_591 << 30)
        #expect(parseByteCount("1GiB") == 1 << 30)
        #expect(parseByteCount("2G") == 2 << 30)
        #expect(parseDuration("7d") == 604_800)
        #expect(parseDuration("1e308d") == nil)  // overflows a Double
        #expect(parseDuration("nan") == nil && parseDuration("nanms") == nil)
        #expect(parseDuration("1e-300") == 1e-300)
    }

    @Test(arguments: [0.0, 0.5, 0.001, 1, 60, 90, 1.5, 604_800, 32_767])
    func durations_printAsTheyParse(_ seconds: Double) {
        #expect(parseDuration(formatDuration(seconds)) == seconds)
    }

    @Test(arguments: [0, 1, 100, 1024, 65536, 1 << 20, 3 << 30, 1536])
    func byteCounts_printAsTheyParse(_ bytes: Int) {
        #expect(parseByteCount(formatByteCount(bytes)) == bytes)
    }
}
