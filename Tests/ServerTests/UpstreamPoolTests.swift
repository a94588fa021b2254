import Logging
@testable import ServerCore
import Testing
import UVLoop

/// The upstream pool without a socket: each balancing method's distribution, the tiers
/// (primaries, backups, all down), retries never picking a member twice, and passive and
/// active health (fall, rise).
@Suite struct UpstreamPoolTests {
    static func pool(_ balance: BalanceMethod, weights: [Int] = [1, 1, 1], backups: Set<Int> = [],
                     checks: HealthCheckMode = .tcp, fall: Int = 3, rise: Int = 2) -> UpstreamPool {
        var config = ServerConfig(mode: .relay)
        config.upstreams = weights.enumerated().map { index, weight in
            UpstreamSpec(SocketAddress(host: "127.0.0.\(index + 1)", port: 7000), weight: weight, backup: backups.contains(index))
        }
        config.balance = balance
        config.healthCheck = checks
        config.healthCheckInterval = 1
        config.fall = fall
        config.rise = rise
        return UpstreamPool(config: config, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// Picks `count` times (each a new connection that connects at once) and counts per member.
    static func picks(_ pool: UpstreamPool, _ count: Int, key: (Int) -> UInt64 = { _ in 0 }, hold: Bool = false) -> [Int] {
        var random = SplitMix64(seed: 42)
        var counts = Array(repeating: 0, count: pool.current.count)
        for index in 0..<count {
            let member = pool.choose(clientKey: key(index), tried: [], now: 0, random: &random)!
            if hold { member.active.add(1, ordering: .relaxed) }
            counts[pool.current.firstIndex { $0 === member }!] += 1
        }
        return counts
    }

    @Test func roundrobin_isExact_byWeight() {
        #expect(Self.picks(Self.pool(.roundrobin), 300) == [100, 100, 100])
        #expect(Self.picks(Self.pool(.roundrobin, weights: [1, 2, 3]), 600) == [100, 200, 300])
        // The rotation is exact over any window of one turn, not only in total.
        let pool = Self.pool(.roundrobin)
        var random = SplitMix64(seed: 1)
        let sequence = (0..<6).map { _ in pool.choose(clientKey: 0, tried: [], now: 0, random: &random)!.address.host }
        #expect(Set(sequence[0..<3]).count == 3 && Set(sequence[3..<6]).count == 3)
    }

    @Test func leastconn_picksTheFewestPerWeight_andTiesTakeTurns() {
        let pool = Self.pool(.leastconn)
        let members = pool.current
        members[0].active.store(5, ordering: .relaxed)
        members[1].active.store(1, ordering: .relaxed)
        members[2].active.store(3, ordering: .relaxed)
        #expect(Self.picks(pool, 10) == [0, 10, 0])
        // Connections that stay open spread evenly.
        let even = Self.pool(.leastconn)
        #expect(Self.picks(even, 300, hold: true) == [100, 100, 100])
        // Weight 2 takes twice the connections.
        let weighted = Self.pool(.leastconn, weights: [2, 1])
        #expect(Self.picks(weighted, 300, hold: true) == [200, 100])
    }

    @Test func random_powerOfTwoChoices_spreads_andAvoidsTheLoaded() {
        let counts = Self.picks(Self.pool(.random), 3000, hold: true)
        for count in counts { #expect((900...1100).contains(count), "\(counts)") }
        // A member far more loaded than the others is picked only when both draws land on it.
        let pool = Self.pool(.random)
        pool.current[0].active.store(1000, ordering: .relaxed)
        let skewed = Self.picks(pool, 3000)
        #expect(skewed[0] < 3000 / 6, "\(skewed)")  // about 1/9 expected: both draws on it
    }

    @Test func hash_isStickyPerClient_andOnlyTheLeavingMembersClientsMove() {
        let keys = (0..<4000).map { UpstreamPool.mix(UInt64($0)) }
        let four = Self.pool(.hash, weights: [1, 1, 1, 1])
        var random = SplitMix64(seed: 3)
        func owner(_ pool: UpstreamPool, _ key: UInt64) -> SocketAddress {
            pool.choose(clientKey: key, tried: [], now: 0, random: &random)!.address
        }
        let before = keys.map { owner(four, $0) }
        #expect(keys.map { owner(four, $0) } == before, "the same client must keep its upstream")
        let shares = Dictionary(grouping: before, by: { $0 }).mapValues(\.count)
        for (address, count) in shares { #expect((800...1200).contains(count), "\(address): \(count)") }
        // Member 4 leaves: its clients move, nobody else's.
        var config = ServerConfig(mode: .relay)
        config.upstreams = (1...3).map { UpstreamSpec(SocketAddress(host: "127.0.0.\($0)", port: 7000)) }
        four.update(config.upstreams)
        let after = keys.map { owner(four, $0) }
        var moved = 0
        for (old, new) in zip(before, after) where old != new {
            moved += 1
            #expect(old.host == "127.0.0.4", "a client of \(old) moved to \(new)")
        }
        #expect((800...1200).contains(moved), "moved \(moved) of 4000: about 1/4 expected")
    }

    @Test func backups_onlyWhenNoPrimaryIsUp_andAllDown_stillTries() {
        let pool = Self.pool(.roundrobin, backups: [2], fall: 1)
        #expect(Self.picks(pool, 100)[2] == 0)
        for member in pool.current[0..<2] { pool.connectFailed(member, .refused, now: 1) }
        #expect(!pool.current[0].isUp && !pool.current[1].isUp)
        #expect(Self.picks(pool, 10) == [0, 0, 10])
        pool.connectFailed(pool.current[2], .timeout, now: 1)
        // Every member is down: try them anyway (nginx), primaries and backups.
        #expect(Self.picks(pool, 30) == [10, 10, 10])
    }

    @Test func retries_neverPickATriedMember_andEndWhenAllWereTried() {
        for method in BalanceMethod.allCases {
            let pool = Self.pool(method)
            var random = SplitMix64(seed: 9)
            var tried: [ObjectIdentifier] = []
            for _ in 0..<3 {
                let member = pool.choose(clientKey: 7, tried: tried, now: 0, random: &random)
                #expect(member != nil && !tried.contains(ObjectIdentifier(member!)), "\(method)")
                tried.append(ObjectIdentifier(member!))
            }
            #expect(pool.choose(clientKey: 7, tried: tried, now: 0, random: &random) == nil, "\(method)")
        }
    }

    @Test func passiveFall_activeRise_andCounts() {
        let pool = Self.pool(.roundrobin, fall: 3, rise: 2)
        let member = pool.current[0]
        pool.connectFailed(member, .refused, now: 1)
        pool.connectFailed(member, .timeout, now: 2)
        pool.connected(member, nanoseconds: 300_000)  // a success resets the run of failures
        pool.connectFailed(member, .refused, now: 3)
        pool.connectFailed(member, .other, now: 4)
        #expect(member.isUp)
        pool.connectFailed(member, .refused, now: 5)
        #expect(!member.isUp)
        pool.checked(member, passed: true, now: 6)
        #expect(!member.isUp, "one passed check of rise 2")
        pool.checked(member, passed: false, now: 7)
        pool.checked(member, passed: true, now: 8)
        #expect(!member.isUp, "a failed check starts the rise again")
        pool.checked(member, passed: true, now: 9)
        #expect(member.isUp)
        let figures = member.statistics
        #expect(figures.connectRefused == 3 && figures.connectTimedOut == 1 && figures.connectOther == 1)
        #expect(figures.checksPassed == 3 && figures.checksFailed == 1)
        #expect(figures.wentDown == 1 && figures.cameUp == 1)
        #expect(figures.connectTimes.total == 1 && figures.connectTimes.counts[2] == 1)  // 0.3 ms: the 0.5 ms bucket
    }

    @Test func checksOff_aDownMemberGetsOneTryAfterTheInterval() {
        let pool = Self.pool(.roundrobin, weights: [1, 1], checks: .off, fall: 1)
        let member = pool.current[0]
        pool.connectFailed(member, .refused, now: 10_000)
        #expect(Self.picksAt(pool, now: 10_500, 10) == [0, 10])
        #expect(Self.picksAt(pool, now: 11_000, 10) == [5, 5], "retried once the interval (1 s) passed")
        pool.connected(member, nanoseconds: 1000)
        #expect(member.isUp)
    }

    static func picksAt(_ pool: UpstreamPool, now: UInt64, _ count: Int) -> [Int] {
        var random = SplitMix64(seed: 5)
        var counts = Array(repeating: 0, count: pool.current.count)
        for _ in 0..<count {
            let member = pool.choose(clientKey: 0, tried: [], now: now, random: &random)!
            counts[pool.current.firstIndex { $0 === member }!] += 1
        }
        return counts
    }

    @Test func update_keepsTheStateOfMembersThatRemain() {
        let pool = Self.pool(.roundrobin, fall: 1)
        let kept = pool.current[1]
        pool.connectFailed(kept, .refused, now: 1)
        var config = ServerConfig(mode: .relay)
        config.upstreams = [UpstreamSpec(SocketAddress(host: "127.0.0.2", port: 7000)), UpstreamSpec(SocketAddress(host: "::1", port: 7000))]
        #expect(pool.update(config.upstreams))
        #expect(pool.current.count == 2)
        #expect(pool.current[0] === kept && !pool.current[0].isUp)
        #expect(pool.current[1].address.family == .ipv6 && pool.current[1].isUp)
        #expect(!pool.update(config.upstreams), "the same set is no change")
    }

    /// A name stands for every address it resolves to; resolving again keeps the last good
    /// addresses of an entry whose lookup fails.
    @Test func resolvingAgain_keepsTheLastGoodSet_whenALookupFails() throws {
        let name = try UpstreamSpec(parsing: "localhost:7001 weight=2")
        #expect(!name.resolved.isEmpty && name.resolved.allSatisfy { $0.port == 7001 })
        #expect(name.resolved.contains(SocketAddress(host: "127.0.0.1", port: 7001)), "\(name.resolved)")
        var broken = UpstreamSpec(SocketAddress(host: "10.9.8.7", port: 80))
        broken.address = "no-such-host.invalid:80"  // RFC 2606: never resolves
        let (next, failures) = UpstreamSpec.resolveAgain([name, broken])
        #expect(failures.count == 1 && failures[0].address == "no-such-host.invalid:80")
        #expect(next[1].resolved == [SocketAddress(host: "10.9.8.7", port: 80)], "the last good set is kept")
        #expect(next[0].resolved == name.resolved && next[0].weight == 2)
    }

    /// The `hash` balancer's key: the host alone, so a client's connections (other ports) share it.
    @Test func clientKey_isTheHostsAlone() {
        let a = RawSocketAddress(SocketAddress(host: "10.0.0.1", port: 40000))
        let samePort = RawSocketAddress(SocketAddress(host: "10.0.0.1", port: 40001))
        let other = RawSocketAddress(SocketAddress(host: "10.0.0.2", port: 40000))
        let v6 = RawSocketAddress(SocketAddress(host: "::1", port: 40000))
        #expect(a.hostHash == samePort.hostHash)
        #expect(a.hostHash != other.hostHash && a.hostHash != v6.hostHash && a.hostHash != 0)
        #expect(RawSocketAddress().hostHash == 0)
    }
}
