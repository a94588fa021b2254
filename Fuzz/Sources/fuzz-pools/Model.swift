// What every driver shares: the payload, the model of a FastAlloc pool's statistics, the live
// handles' addresses and serials, and the operations a driver takes.
import FastAlloc
import FuzzSupport
import Synchronization

/// Places a handle can live in, per input.
let slotCount = 32

struct Payload: Sendable {
    var serial: UInt64
    var inverse: UInt64
    init(_ serial: UInt64) { self.serial = serial; inverse = ~serial }
    var intact: Bool { inverse == ~serial }
}

/// Hook calls, counted by the pools' onAcquire/onRelease closures (which may run on the other
/// thread, hence atomics).
let acquireHooks = Atomic<Int>(0)
let releaseHooks = Atomic<Int>(0)

/// What a FastAlloc pool must report, by the rules of its growth strategy.
struct PoolModel {
    var capacity: Int
    let maximum: Int
    let growth: GrowthStrategy
    var inUse = 0
    var highWater = 0
    var acquisitions: UInt64 = 0
    var releases: UInt64 = 0
    var failed: UInt64 = 0
    var growthEvents = 0

    /// One growth step, as documented: at least one slot more, capped at the maximum.
    func grown() -> Int {
        switch growth {
        case .none: return capacity
        case .linear(let step): return min(capacity + step, maximum)
        case .exponential(let factor):
            return min(max(Int((Double(capacity) * factor).rounded(.up)), capacity + 1), maximum)
        }
    }

    /// One slot taken, growing when every slot is in use; false (a failed acquisition) when full.
    mutating func take() -> Bool {
        if inUse == capacity {
            let next = grown()
            guard next > capacity else { failed += 1; return false }
            capacity = next
            growthEvents += 1
        }
        inUse += 1
        highWater = max(highWater, inUse)
        acquisitions += 1
        return true
    }

    /// A batch: all or nothing, against what growth can still reach.
    mutating func takeBatch(_ count: Int) -> Bool {
        guard maximum - inUse >= count else { failed += 1; return false }
        for _ in 0..<count { if !take() { fail("batch slot refused after the check") } }
        return true
    }

    mutating func put() {
        inUse -= 1
        releases += 1
    }

    /// With magazines: the figures that stay exact (`inUse` excludes cached slots; acquisitions
    /// and releases count those served by magazines), and bounds for the rest: a magazine's
    /// refill takes slots from the shared pool without handing them out, so capacity, growth and
    /// high water run ahead of the model's.
    func verifyWithMagazines(_ stats: PoolStatistics) {
        if stats.maxCapacity != maximum { fail("maxCapacity \(stats.maxCapacity), model \(maximum)") }
        if stats.inUse != inUse { fail("inUse \(stats.inUse), model \(inUse)") }
        if stats.acquisitions != acquisitions { fail("acquisitions \(stats.acquisitions), model \(acquisitions)") }
        if stats.releases != releases { fail("releases \(stats.releases), model \(releases)") }
        if stats.failedAcquisitions != failed { fail("failed \(stats.failedAcquisitions), model \(failed)") }
        // Both grow along the same chain of capacities, the pool's from a high water that
        // counts cached slots too, so never behind the model's.
        if stats.capacity > maximum || stats.capacity < capacity || stats.growthEvents < growthEvents {
            fail("capacity \(stats.capacity) (growth \(stats.growthEvents)), model \(capacity) (growth \(growthEvents)), maximum \(maximum)")
        }
        if stats.inUse + stats.cachedInMagazines > stats.capacity {
            fail("in use \(stats.inUse) + cached \(stats.cachedInMagazines) > capacity \(stats.capacity)")
        }
        if stats.highWater < highWater || stats.highWater > stats.capacity {
            fail("highWater \(stats.highWater), model \(highWater), capacity \(stats.capacity)")
        }
        if stats.magazineAcquisitions > stats.acquisitions { fail("magazine acquisitions \(stats.magazineAcquisitions) > \(stats.acquisitions)") }
        let acquired = acquireHooks.load(ordering: .relaxed)
        let released = releaseHooks.load(ordering: .relaxed)
        if acquired != Int(acquisitions) { fail("onAcquire ran \(acquired) times for \(acquisitions)") }
        if released != Int(releases) { fail("onRelease ran \(released) times for \(releases)") }
    }

    func verify(_ stats: PoolStatistics) {
        if stats.capacity != capacity { fail("capacity \(stats.capacity), model \(capacity)") }
        if stats.maxCapacity != maximum { fail("maxCapacity \(stats.maxCapacity), model \(maximum)") }
        if stats.inUse != inUse { fail("inUse \(stats.inUse), model \(inUse)") }
        if stats.highWater != highWater { fail("highWater \(stats.highWater), model \(highWater)") }
        if stats.acquisitions != acquisitions { fail("acquisitions \(stats.acquisitions), model \(acquisitions)") }
        if stats.releases != releases { fail("releases \(stats.releases), model \(releases)") }
        if stats.failedAcquisitions != failed { fail("failed \(stats.failedAcquisitions), model \(failed)") }
        if stats.growthEvents != growthEvents { fail("growth events \(stats.growthEvents), model \(growthEvents)") }
        let acquired = acquireHooks.load(ordering: .relaxed)
        let released = releaseHooks.load(ordering: .relaxed)
        if acquired != Int(acquisitions) { fail("onAcquire ran \(acquired) times for \(acquisitions)") }
        if released != Int(releases) { fail("onRelease ran \(released) times for \(releases)") }
    }
}

/// The operations, each against one of `slotCount` places a handle can live in.
protocol Driver: AnyObject {
    func acquire(_ slot: Int, serial: UInt64)
    /// Acquires `count` at once into slots `first`, `first + 7`, `first + 14`, ... (mod slotCount).
    func acquireBatch(first: Int, count: Int, serial: UInt64)
    func release(_ slot: Int)
    func releaseOnAnotherThread(_ slot: Int)
    func write(_ slot: Int, serial: UInt64)
    func verify()
    /// Releases everything, checks, and lets go of the input's pool (so that it is destroyed,
    /// with its own checks, before the next input starts).
    func finish()
}

/// The slot of a batch's `index`th handle.
@inline(__always)
func batchSlot(first: Int, index: Int) -> Int { (first + index * 7) % slotCount }

/// A violated property: stops the run with the message, as FuzzSupport's `check` does
/// (libFuzzer then saves the input). The per-operation checks are written
/// `if !condition { fail(...) }` rather than `check(condition, ...)`: in this debug build under
/// AddressSanitizer, each `check` call (two closures, a poisoned stack frame) cost more than
/// the comparison it guards, and the checks ran after every operation.
func fail(_ message: String, file: StaticString = #fileID, line: UInt = #line) -> Never {
    fatalError("property violated: \(message)", file: file, line: line)
}

/// Addresses and serials of the live handles, by slot: the checks every driver shares. Each
/// driver makes one Live for the whole run and resets it at the start of every input: fixed
/// blocks (never freed: the drivers live as long as the process) and a dense list of the held
/// slots, so that a check visits only the live handles and nothing is allocated per operation
/// or per input (under AddressSanitizer an allocation costs about a microsecond).
struct Live {
    let serials = UnsafeMutablePointer<UInt64>.allocate(capacity: slotCount)
    let addresses = UnsafeMutablePointer<UInt>.allocate(capacity: slotCount)
    let held = UnsafeMutablePointer<Bool>.allocate(capacity: slotCount)
    /// The held slots, densely: `list[0..<count]`; `position[slot]` is a held slot's index in it.
    let list = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
    private let position = UnsafeMutablePointer<Int>.allocate(capacity: slotCount)
    private(set) var count = 0

    init() {
        serials.initialize(repeating: 0, count: slotCount)
        addresses.initialize(repeating: 0, count: slotCount)
        held.initialize(repeating: false, count: slotCount)
        list.initialize(repeating: 0, count: slotCount)
        position.initialize(repeating: 0, count: slotCount)
    }

    /// Empties every slot, for the next input.
    mutating func reset() {
        while count > 0 { removed(list[count - 1]) }
    }

    mutating func added(_ slot: Int, address: UInt, serial: UInt64, alignment: Int) {
        for index in 0..<count where addresses[list[index]] == address { fail("address \(address) handed out twice") }
        if address % UInt(alignment) != 0 { fail("address \(address) not aligned to \(alignment)") }
        serials[slot] = serial
        addresses[slot] = address
        if !held[slot] {
            held[slot] = true
            position[slot] = count
            list[count] = slot
            count += 1
        }
    }

    mutating func removed(_ slot: Int) {
        guard held[slot] else { return }
        held[slot] = false
        serials[slot] = 0
        addresses[slot] = 0
        count -= 1
        let last = list[count]
        list[position[slot]] = last
        position[last] = position[slot]
    }

    /// The serial held in `slot`, nil when the slot is empty.
    func serial(_ slot: Int) -> UInt64? { held[slot] ? serials[slot] : nil }
}
