import FastAlloc
import PacketBuffers
import Testing

@Suite struct PacketBufferConfigTests {
    @Test func defaults_are64KiBBuffers() throws {
        let config = try PacketBufferConfig()
        #expect(config.bufferSize == 65536)
        #expect(config.overflowMax >= config.overflowInitial)
    }

    @Test(arguments: [0, 63, 1_048_577, -1])
    func bufferSize_mustBeBetween64BAnd1MiB(_ size: Int) {
        #expect(throws: PoolConfigError(field: "bufferSize", value: "\(size)", expected: "64...1048576 bytes")) {
            try PacketBufferConfig(bufferSize: size)
        }
    }

    @Test(arguments: [64, 1500, 65536, 1_048_576])
    func bufferSize_boundsAccepted(_ size: Int) throws {
        #expect(try PacketBufferConfig(bufferSize: size).bufferSize == size)
    }

    @Test func localBuffers_mustBePositive() {
        #expect(throws: PoolConfigError(field: "localBuffers", value: "0", expected: "> 0")) {
            try PacketBufferConfig(localBuffers: 0)
        }
    }

    @Test func overflowMax_mustCoverInitial_andNamesBothFields() {
        #expect(throws: PoolConfigError(field: "overflowMax", value: "3", expected: ">= overflowInitial (4)")) {
            try PacketBufferConfig(overflowInitial: 4, overflowMax: 3)
        }
    }

    @Test func overflowGrowth_isChecked() {
        #expect(throws: PoolConfigError(field: "overflowGrowth", value: ".exponential(1.0)", expected: "a finite factor > 1")) {
            try PacketBufferConfig(overflowGrowth: .exponential(1))
        }
    }
}
