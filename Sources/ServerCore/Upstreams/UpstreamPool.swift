import Logging
#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import UVLoop

/// The relay's upstreams, shared by every worker: which are up, how many connections each has
/// (all workers together, so that balancing sees the whole server), and the choice of one for
/// a new connection. The member set changes only when names are resolved again; a snapshot is
/// taken under a lock once per connection (never per message).
public final class UpstreamPool: Sendable {
    /// The balancing method of a `choose` that names none (a session names the one in effect
    /// when it was accepted). A reload may change it.
    public var method: BalanceMethod { BalanceMethod.allCases[Int(methodIndex.load(ordering: .relaxed))] }
    private let methodIndex: Atomic<Int>
    // The health settings: each a relaxed load where it is used (a connect's result, a check's,
    // a choice), none per message. A reload changes them for every member at once (a member's
    // consecutive counts go on, compared with the new thresholds).
    var rise: Int { riseValue.load(ordering: .relaxed) }
    var fall: Int { fallValue.load(ordering: .relaxed) }
    /// With active checks off, a down member gets one try after this many ms (nginx's
    /// fail_timeout): otherwise nothing would ever bring it back.
    var retryDownAfter: UInt64 { retryDownAfterValue.load(ordering: .relaxed) }
    var checksEnabled: Bool { checksEnabledValue.load(ordering: .relaxed) }
    private let riseValue: Atomic<Int>
    private let fallValue: Atomic<Int>
    private let retryDownAfterValue: Atomic<UInt64>
    private let checksEnabledValue: Atomic<Bool>
    /// Some member's connections start with a PROXY header (which needs each client's address
    /// and the address it connected to, read at accept). Set again by each reload.
    private let headers: Atomic<Bool>
    var sendsProxyHeaders: Bool { headers.load(ordering: .relaxed) }
    private let members: Mutex<[UpstreamMember]>
    /// The configured entries, as last resolved or reloaded, and `--proxy-protocol-upstream` (the
    /// setting of members whose entry has none); taken before `members`, never after.
    private let entries: Mutex<(specs: [UpstreamSpec], proxyProtocol: ProxyProtocolSetting)>
    /// Changes of the member set (a resolution or a reload that changed it).
    let version = Atomic<UInt64>(0)
    /// The rotation of `roundrobin` (and the tie-break of `leastconn`).
    private let rotation = Atomic<UInt64>(0)
    /// Lookups that failed (the last good set was kept).
    let resolveFailures = Atomic<UInt64>(0)
    let logger: Logger

    public init(config: ServerConfig, logger: Logger) {
        methodIndex = Atomic(BalanceMethod.allCases.firstIndex(of: config.balance)!)
        riseValue = Atomic(config.rise)
        fallValue = Atomic(config.fall)
        checksEnabledValue = Atomic(config.healthCheck == .tcp)
        retryDownAfterValue = Atomic(UpstreamPool.retryDownAfter(config))
        self.logger = logger
        headers = Atomic(UpstreamPool.anyHeaders(config.upstreams, default: config.proxyProtocolUpstream))
        members = Mutex(UpstreamPool.members(for: config.upstreams, keeping: [], proxyProtocol: config.proxyProtocolUpstream))
        entries = Mutex((config.upstreams, config.proxyProtocolUpstream))
    }

    static func retryDownAfter(_ config: ServerConfig) -> UInt64 { max(1, ServerConfig.milliseconds(config.healthCheckInterval)) }

    /// The members now, in configuration order.
    public var current: [UpstreamMember] { members.withLock { $0 } }

    /// Every member's figures.
    public var statistics: [UpstreamStatistics] { current.map(\.statistics) }

    /// The members for `specs`, reusing those of `old` with the same address and entry (their
    /// health and counts go on).
    static func members(for specs: [UpstreamSpec], keeping old: [UpstreamMember], proxyProtocol: ProxyProtocolSetting) -> [UpstreamMember] {
        var result: [UpstreamMember] = []
        for spec in specs {
            let header = spec.proxyProtocol ?? proxyProtocol
            for address in spec.resolved where !result.contains(where: { $0.address == address && $0.entry == spec.address }) {
                let kept = old.first {
                    $0.address == address && $0.entry == spec.address && $0.weight == spec.weight && $0.backup == spec.backup
                        && $0.proxyProtocol == header
                }
                result.append(kept ?? UpstreamMember(address: address, entry: spec.address, weight: spec.weight, backup: spec.backup,
                                                     proxyProtocol: header))
            }
        }
        return result
    }

    /// The configured entries now, with the addresses they last resolved to.
    var currentEntries: [UpstreamSpec] { entries.withLock { $0.specs } }

    /// Takes a new resolution of the entries, unless a reload replaced them since `previous` was
    /// read (the reload's entries win). Returns whether the member set changed.
    @discardableResult
    func resolved(_ next: [UpstreamSpec], from previous: [UpstreamSpec]) -> Bool {
        entries.withLock { current in
            guard current.specs == previous else { return false }
            current.specs = next
            return replaceMembers(next, proxyProtocol: current.proxyProtocol)
        }
    }

    /// A reload's entries (resolved by its parsing): members that remain (same address, entry,
    /// weight, role and header) keep their health and counts, as haproxy's server-state-file
    /// keeps them; new ones start up; the connections of members that leave go on. Returns
    /// whether the member set changed. `config` (nil: only the entries change) brings the
    /// default PROXY setting (`--proxy-protocol-upstream`: a member whose header changes is a new
    /// member), the balancing method and the health settings.
    @discardableResult
    func reload(_ specs: [UpstreamSpec], config: ServerConfig? = nil) -> Bool {
        if let config {
            methodIndex.store(BalanceMethod.allCases.firstIndex(of: config.balance)!, ordering: .relaxed)
            riseValue.store(config.rise, ordering: .relaxed)
            fallValue.store(config.fall, ordering: .relaxed)
            checksEnabledValue.store(config.healthCheck == .tcp, ordering: .relaxed)
            retryDownAfterValue.store(UpstreamPool.retryDownAfter(config), ordering: .relaxed)
        }
        return entries.withLock { current in
            current.specs = specs
            if let config { current.proxyProtocol = config.proxyProtocolUpstream }
            // Before the members change: a connection accepted from now on reads the addresses
            // its header will need. (One accepted just before, connecting after, sends LOCAL.)
            headers.store(UpstreamPool.anyHeaders(specs, default: current.proxyProtocol), ordering: .relaxed)
            return replaceMembers(specs, proxyProtocol: current.proxyProtocol)
        }
    }

    /// Whether some entry's connections start with a PROXY header.
    static func anyHeaders(_ specs: [UpstreamSpec], default setting: ProxyProtocolSetting) -> Bool {
        specs.contains { ($0.proxyProtocol ?? setting) != .off }
    }

    /// Members for `specs`: those that remain keep their state; new ones start up. Returns
    /// whether the set changed.
    @discardableResult
    func update(_ specs: [UpstreamSpec]) -> Bool {
        replaceMembers(specs, proxyProtocol: entries.withLock { $0.proxyProtocol })
    }

    /// `update` with the default PROXY setting given (called with `entries` locked).
    private func replaceMembers(_ specs: [UpstreamSpec], proxyProtocol: ProxyProtocolSetting) -> Bool {
        let changed = members.withLock { current in
            let next = UpstreamPool.members(for: specs, keeping: current, proxyProtocol: proxyProtocol)
            // The same members in another order (a resolver rotating its answers) is no change.
            let changed = Set(next.map(ObjectIdentifier.init)) != Set(current.map(ObjectIdentifier.init))
            current = next
            return changed
        }
        if changed { version.add(1, ordering: .releasing) }
        return changed
    }

    // MARK: Choosing

    /// The member for a new connection, or nil when every member was tried already.
    /// - `clientKey`: a hash of the client's IP address (the `hash` method's input).
    /// - `tried`: members this connection tried already; a retry never picks one again.
    /// - `method`: the session's (nil: the pool's `method`).
    /// Tiers: the primaries that are up; else the backups that are up; else every member
    /// (all are down: try them anyway, as nginx does, rather than refuse everyone).
    func choose(method: BalanceMethod? = nil, clientKey: UInt64, tried: [ObjectIdentifier], now: UInt64,
                random: inout SplitMix64) -> UpstreamMember? {
        let method = method ?? self.method
        let members = current
        for tier in 0..<3 {
            let eligible: (UpstreamMember) -> Bool = { member in
                guard !tried.contains(ObjectIdentifier(member)) else { return false }
                switch tier {
                case 0: return !member.backup && self.isUsable(member, now: now)
                case 1: return member.backup && self.isUsable(member, now: now)
                default: return true
                }
            }
            if let member = pick(from: members, eligible, method: method, clientKey: clientKey, random: &random) {
                member.selected.add(1, ordering: .relaxed)
                return member
            }
        }
        return nil
    }

    /// Up, or down with checks off and its retry time come.
    private func isUsable(_ member: UpstreamMember, now: UInt64) -> Bool {
        if member.isUp { return true }
        return !checksEnabled && now &- member.downSince.load(ordering: .relaxed) >= retryDownAfter
    }

    private func pick(from members: [UpstreamMember], _ eligible: (UpstreamMember) -> Bool, method: BalanceMethod,
                      clientKey: UInt64, random: inout SplitMix64) -> UpstreamMember? {
        var totalWeight = 0
        var count = 0
        for member in members where eligible(member) {
            totalWeight += member.weight
            count += 1
        }
        guard count > 0 else { return nil }
        switch method {
        case .roundrobin:
            let turn = Int(rotation.add(1, ordering: .relaxed).oldValue % UInt64(totalWeight))
            return member(at: turn, weighted: members, eligible)
        case .random:
            let first = member(at: Int(random.next() % UInt64(totalWeight)), weighted: members, eligible)
            let second = member(at: Int(random.next() % UInt64(totalWeight)), weighted: members, eligible)
            guard let first, let second else { return first ?? second }
            return second.load < first.load ? second : first
        case .leastconn:
            // The least loaded; among equals, the first from a rotating start (they take turns).
            let start = Int(rotation.add(1, ordering: .relaxed).oldValue % UInt64(count))
            var best: UpstreamMember?
            for pass in 0..<2 {
                var index = 0
                for member in members where eligible(member) {
                    defer { index += 1 }
                    guard (pass == 0) == (index >= start) else { continue }
                    if best == nil || member.load < best!.load { best = member }
                }
            }
            return best
        case .hash:
            var best: UpstreamMember?
            var bestScore = -Double.infinity
            for member in members where eligible(member) {
                let score = UpstreamPool.rendezvousScore(clientKey: clientKey, member: member)
                if score > bestScore { best = member; bestScore = score }
            }
            return best
        }
    }

    /// The eligible member that holds position `position` when each takes `weight` positions.
    private func member(at position: Int, weighted members: [UpstreamMember], _ eligible: (UpstreamMember) -> Bool) -> UpstreamMember? {
        var remaining = position
        for member in members where eligible(member) {
            if remaining < member.weight { return member }
            remaining -= member.weight
        }
        return nil
    }

    /// Weighted rendezvous hashing: each member scores the client; the highest score wins. A
    /// member leaving moves only its own clients; one joining takes about weight/total of them.
    static func rendezvousScore(clientKey: UInt64, member: UpstreamMember) -> Double {
        let hash = mix(clientKey ^ memberKey(member))
        // A uniform number in (0, 1), then -weight / ln(u): the weighted form (Schindelhauer).
        let unit = (Double(hash >> 11) + 0.5) / Double(1 << 53)
        return -Double(member.weight) / Glibc.log(unit)
    }

    /// A stable hash of a member's address (FNV-1a over its text).
    static func memberKey(_ member: UpstreamMember) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in member.address.description.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
        }
        return hash
    }

    /// SplitMix64's finaliser: a good 64-bit mix.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    // MARK: Health

    /// A client's connect succeeded after `nanoseconds`.
    func connected(_ member: UpstreamMember, nanoseconds: UInt64) {
        member.connectTimes.record(nanoseconds: nanoseconds)
        member.failures.store(0, ordering: .relaxed)
        // With checks off, a successful try brings a down member back; with checks on, the
        // checker decides (rise).
        if !checksEnabled && !member.isUp { markUp(member, why: "a connect succeeded") }
    }

    /// A client's connect to `member` failed.
    func connectFailed(_ member: UpstreamMember, _ failure: UpstreamFailure, now: UInt64) {
        switch failure {
        case .refused: member.connectRefused.add(1, ordering: .relaxed)
        case .timeout: member.connectTimedOut.add(1, ordering: .relaxed)
        case .other: member.connectOther.add(1, ordering: .relaxed)
        }
        failed(member, now: now, why: "connect \(failure.rawValue)")
    }

    /// An active check's result.
    func checked(_ member: UpstreamMember, passed: Bool, now: UInt64) {
        if passed {
            member.checksPassed.add(1, ordering: .relaxed)
            member.failures.store(0, ordering: .relaxed)
            if !member.isUp {
                let passes = member.passes.add(1, ordering: .relaxed).newValue
                if passes >= rise { markUp(member, why: "\(passes) checks passed") }
            }
        } else {
            member.checksFailed.add(1, ordering: .relaxed)
            member.passes.store(0, ordering: .relaxed)
            failed(member, now: now, why: "check failed")
        }
    }

    private func failed(_ member: UpstreamMember, now: UInt64, why: String) {
        let failures = member.failures.add(1, ordering: .relaxed).newValue
        if member.isUp && failures >= fall {
            if member.up.compareExchange(expected: true, desired: false, ordering: .relaxed).exchanged {
                member.downSince.store(now, ordering: .relaxed)
                member.passes.store(0, ordering: .relaxed)
                member.wentDown.add(1, ordering: .relaxed)
                logger.warning("upstream \(member.address) is down: \(failures) consecutive failures (last: \(why))")
            }
        } else if !member.isUp {
            member.downSince.store(now, ordering: .relaxed)  // a failed retry waits again
        }
    }

    private func markUp(_ member: UpstreamMember, why: String) {
        if member.up.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged {
            member.failures.store(0, ordering: .relaxed)
            member.passes.store(0, ordering: .relaxed)
            member.cameUp.add(1, ordering: .relaxed)
            logger.notice("upstream \(member.address) is up again (\(why))")
        }
    }
}

/// A small, fast pseudo-random generator (SplitMix64), one per worker: the `random` balancer's
/// draws, with no system call and no lock.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        return UpstreamPool.mix(state &- 0x9e37_79b9_7f4a_7c15)
    }
}
