import FastAlloc
import TestSupport
import Testing

@Suite struct PoolConfigTests {
    @Test func defaults_areValid() throws {
        let config = try PoolConfig<Int64>(capacity: 8)
        #expect(config.alignment == 8)
        #expect(config.maxCapacity == 8)
        #expect(config.growth == .none)
        #expect(config.order == .lifo)
    }

    @Test func growingDefault_maxIsLarge() throws {
        let config = try PoolConfig<Int64>(capacity: 8, growth: .linear(8))
        #expect(config.maxCapacity == Int(Int32.max))
    }

    @Test(arguments: [0, -1])
    func capacity_mustBePositive(_ capacity: Int) {
        #expect(throws: PoolConfigError(field: "capacity", value: "\(capacity)", expected: "> 0")) {
            try PoolConfig<Int64>(capacity: capacity)
        }
    }

    @Test func alignment_errorNamesFieldValueAndRule() {
        do {
            _ = try PoolConfig<Int64>(capacity: 4, alignment: 48)
            Issue.record("alignment 48 was accepted")
        } catch {
            #expect(error.description == "alignment: 48 (expected: a power of two >= 8)")
        }
    }

    @Test(arguments: [0, 3, 4, 12, -8])
    func alignment_mustBePowerOfTwoAtLeastTypes(_ alignment: Int) {
        #expect(throws: PoolConfigError.self) { try PoolConfig<Int64>(capacity: 4, alignment: alignment) }
    }

    @Test(arguments: [8, 16, 64, 4096])
    func alignment_powersOfTwoAccepted(_ alignment: Int) throws {
        #expect(try PoolConfig<Int64>(capacity: 4, alignment: alignment).alignment == alignment)
    }

    @Test func maxCapacity_mustBeAtLeastCapacity() {
        #expect(throws: PoolConfigError(field: "maxCapacity", value: "3", expected: ">= capacity (4)")) {
            try PoolConfig<Int>(capacity: 4, growth: .linear(1), maxCapacity: 3)
        }
    }

    @Test(arguments: [1.0, 0.5, -2, .infinity, .nan])
    func exponentialFactor_mustBeAboveOne(_ factor: Double) {
        #expect(throws: PoolConfigError.self) { try PoolConfig<Int>(capacity: 4, growth: .exponential(factor)) }
    }

    @Test func linearStep_mustBePositive() {
        #expect(throws: PoolConfigError(field: "growth", value: ".linear(0)", expected: "a linear step > 0")) {
            try PoolConfig<Int>(capacity: 4, growth: .linear(0))
        }
    }

    @Test func validate_checksFieldsChangedAfterInit() throws {
        var config = try PoolConfig<Int>(capacity: 4)
        config.capacity = 0
        #expect(throws: PoolConfigError.self) { try config.validate() }
        #expect(throws: PoolConfigError.self) { try FixedPool<Int>(config: config) }
    }

    @Test func fixedPool_rejectsGrowth() throws {
        let config = try PoolConfig<Int>(capacity: 4, growth: .linear(4))
        #expect(throws: PoolConfigError(field: "growth", value: ".linear(4)", expected: ".none for a FixedPool")) {
            try FixedPool<Int>(config: config)
        }
    }

    @Test func growthStep_linearAndExponential() {
        #expect(GrowthStrategy.linear(3).description == ".linear(3)")
        #expect(GrowthStrategy.exponential(1.5).description == ".exponential(1.5)")
    }
}
