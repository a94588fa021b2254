import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `--max-connections-per-client`: the open connections of each client IP address (its port
/// left out), all workers together, in a table of fixed size made at start.
///
/// The table: `shardCount` shards, each a small open-addressing hash table (linear probing,
/// deletion by backward shift, so no tombstones) behind its own mutex; an address's shard and
/// slot come from a hash seeded at random per process (so that nobody can aim addresses at
/// one shard). An entry holds the full address (never just its hash: two clients never share
/// a count) and its count; it is removed when the count returns to 0. One lookup per accept
/// (`acquire`) and one per close (`release`), never per message.
///
/// Bounded memory: `2 × --max-connections` entries (each open connection holds at most one),
/// at most `maxEntries`, at least 8 a shard. When the shard an address falls in is full, the
/// connection is admitted untracked (fail open, as a full conntrack table should not lock
/// everybody out), counted as `client_limit_table_full`, and its close releases nothing.
///
/// Reload: the table is made at start, or by the first reload that sets a limit, and then kept
/// for the life of the server (its size depends on --max-connections only, which a reload
/// cannot change). A new limit applies to new connections (`acquire(_:limit:)`); a limit of 0
/// stops counting new ones while those counted still release.
final class ClientLimits: @unchecked Sendable {
    // @unchecked: each shard's entries and `used` count are read and written only with the
    // shard's mutex held.
    struct Entry {
        var high: UInt64 = 0
        var low: UInt64 = 0
        var kind: UInt8 = 0
        /// 0: a free slot.
        var count: UInt32 = 0
    }

    enum Admission: Equatable {
        /// Counted: release it when the connection ends.
        case admitted
        /// The address is at the limit: refuse the connection (nothing was counted).
        case refused
        /// The table had no room for the address: let the connection in, counted nowhere.
        case untracked
    }

    static let shardCount = 64
    static let maxEntries = 1 << 18

    let limit: Int
    let slotsPerShard: Int
    private let seed: UInt64
    private let entries: UnsafeMutablePointer<Entry>
    /// A mutex per shard, each on its own cache line.
    private let locks: UnsafeMutableRawPointer
    private let used: UnsafeMutablePointer<Int>
    private static let lockStride = max(64, MemoryLayout<pthread_mutex_t>.stride)

    /// A table for `limit` connections per address and at most `connections` open at once.
    init(limit: Int, connections: Int, seed: UInt64 = .random(in: .min ... .max)) {
        precondition(limit >= 1, "a per-client limit of at least 1 (0 is off: no table)")
        self.limit = limit
        let wanted = min(ClientLimits.maxEntries, max(1, connections) * 2) / ClientLimits.shardCount
        var slots = 8
        while slots < wanted { slots <<= 1 }
        slotsPerShard = slots
        var mixer = SplitMix64(seed: seed)
        self.seed = mixer.next()
        // Safe: the three allocations are owned by this object, sized here, initialised here
        // (the mutexes just below) and freed only in deinit; every access goes through a shard's
        // base (`withShard`) under that shard's mutex and stays below `slotsPerShard`.
        entries = .allocate(capacity: ClientLimits.shardCount * slots)
        entries.initialize(repeating: Entry(), count: ClientLimits.shardCount * slots)
        used = .allocate(capacity: ClientLimits.shardCount)
        used.initialize(repeating: 0, count: ClientLimits.shardCount)
        locks = .allocate(byteCount: ClientLimits.shardCount * ClientLimits.lockStride, alignment: 64)
        for shard in 0..<ClientLimits.shardCount { pthread_mutex_init(lock(shard), nil) }
    }

    deinit {
        for shard in 0..<ClientLimits.shardCount { pthread_mutex_destroy(lock(shard)) }
        locks.deallocate()
        used.deallocate()
        entries.deinitialize(count: ClientLimits.shardCount * slotsPerShard)
        entries.deallocate()
    }

    private func lock(_ shard: Int) -> UnsafeMutablePointer<pthread_mutex_t> {
        // Safe: shard < shardCount, so the address lies inside `locks`, on a 64-byte boundary
        // (lockStride >= the mutex's stride, the block aligned to 64); pthread_mutex_init bound it.
        (locks + shard * ClientLimits.lockStride).assumingMemoryBound(to: pthread_mutex_t.self)
    }

    /// The address's hash (seeded; a 64-bit finaliser over both words and the family).
    private func hash(_ address: RawSocketAddress) -> UInt64 {
        var x = address.high ^ seed
        x = (x ^ (x >> 33)) &* 0xff51_afd7_ed55_8ccd
        x ^= address.low &+ UInt64(address.kind.rawValue) &* 0x9e37_79b9_7f4a_7c15
        x = (x ^ (x >> 33)) &* 0xc4ce_b9fe_1a85_ec53
        return x ^ (x >> 33)
    }

    /// Counts a new connection from `address` in, unless the address is at the limit: `limit`
    /// when given (a reload may change it: the table stays, new connections meet the new
    /// limit, the counts go on), else the one the table was made with.
    func acquire(_ address: RawSocketAddress, limit: Int? = nil) -> Admission {
        guard address.kind != .none else { return .untracked }  // no address: nothing to key on (the worker never asks)
        let limit = max(1, limit ?? self.limit)
        return withShard(of: address) { base, used, start in
            var index = start
            for _ in 0..<slotsPerShard {
                let entry = base[index]
                if entry.count == 0 {
                    // Not in the table (linear probing keeps an address before the first free slot).
                    guard used.pointee < slotsPerShard - 1 else { return .untracked }  // keep one free: probes end
                    base[index] = Entry(high: address.high, low: address.low, kind: address.kind.rawValue, count: 1)
                    used.pointee += 1
                    return .admitted  // limit >= 1: a table exists only for a limit
                }
                if entry.high == address.high && entry.low == address.low && entry.kind == address.kind.rawValue {
                    guard Int(entry.count) < limit else { return .refused }
                    base[index].count += 1
                    return .admitted
                }
                index = (index + 1) & (slotsPerShard - 1)
            }
            return .untracked
        }
    }

    /// A connection `acquire` admitted has ended: its address has one fewer; at 0 the entry goes.
    func release(_ address: RawSocketAddress) {
        guard address.kind != .none else { return }
        withShard(of: address) { base, used, start in
            let mask = slotsPerShard - 1
            var index = start
            for _ in 0..<slotsPerShard {
                let entry = base[index]
                if entry.count == 0 { return }  // not there (cannot happen for an admitted address)
                if entry.high == address.high && entry.low == address.low && entry.kind == address.kind.rawValue {
                    if entry.count > 1 {
                        base[index].count -= 1
                        return
                    }
                    // Remove it, shifting back the entries after it that probed past this slot.
                    var hole = index
                    var next = (index + 1) & mask
                    while base[next].count != 0 {
                        let home = Int(truncatingIfNeeded: hash(RawSocketAddress(
                            kind: RawSocketAddress.Kind(rawValue: base[next].kind) ?? .none, port: 0,
                            high: base[next].high, low: base[next].low)) >> 6) & mask
                        // The entry at `next` may fill the hole if its home is not in (hole, next].
                        let distanceToHole = (hole - home) & mask
                        let distanceToNext = (next - home) & mask
                        if distanceToHole <= distanceToNext {
                            base[hole] = base[next]
                            hole = next
                        }
                        next = (next + 1) & mask
                    }
                    base[hole] = Entry()
                    used.pointee -= 1
                    return
                }
                index = (index + 1) & mask
            }
        }
    }

    /// The open connections counted for `address` (tests).
    func count(_ address: RawSocketAddress) -> Int {
        withShard(of: address) { base, _, start in
            var index = start
            for _ in 0..<slotsPerShard {
                let entry = base[index]
                if entry.count == 0 { return 0 }
                if entry.high == address.high && entry.low == address.low && entry.kind == address.kind.rawValue { return Int(entry.count) }
                index = (index + 1) & (slotsPerShard - 1)
            }
            return 0
        }
    }

    /// Addresses in the table now (tests).
    var entryCount: Int {
        (0..<ClientLimits.shardCount).reduce(0) { total, shard in
            pthread_mutex_lock(lock(shard))
            defer { pthread_mutex_unlock(lock(shard)) }
            return total + used[shard]
        }
    }

    /// Runs `body` with the address's shard locked: its entries, its used count, and the slot
    /// the address's probe starts at.
    private func withShard<R>(of address: RawSocketAddress, _ body: (UnsafeMutablePointer<Entry>, UnsafeMutablePointer<Int>, Int) -> R) -> R {
        let hash = hash(address)
        let shard = Int(truncatingIfNeeded: hash) & (ClientLimits.shardCount - 1)
        let start = Int(truncatingIfNeeded: hash >> 6) & (slotsPerShard - 1)
        pthread_mutex_lock(lock(shard))
        defer { pthread_mutex_unlock(lock(shard)) }
        return body(entries + shard * slotsPerShard, used + shard, start)
    }
}
