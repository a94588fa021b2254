// The pools' lock (`_ContentionLock`): mutual exclusion, writes under the lock visible to the
// next holder, counters that add up, every interleaving; and broken locks the checker catches.
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// A lock guarding one plain word (a counter every critical section increments), and the
/// bookkeeping the invariants need.
final class LockWorld {
    let lock = _ContentionLock()
    let guarded = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
    /// Threads inside a critical section right now.
    var inside = 0
    var sections = 0

    init(_ execution: Execution) {
        guarded.storeBytes(of: 0, as: UInt.self)
        execution.name(guarded, "guarded")
        execution.name(cell: lock.held.pointee, "held")
        execution.name(cell: lock.counters.pointee.acquisitions, "acquisitions")
        execution.name(cell: lock.counters.pointee.contended, "contended")
        execution.name(cell: lock.counters.pointee.waitNanoseconds, "waitNanoseconds")
    }

    deinit {
        guarded.deallocate()
        unsafe lock.destroy()
    }

    /// The production lock, with the model's steps.
    func lock(_ steps: ModelSteps) {
        lock.lock(steps: steps, contended: { lock.waitContended(steps: steps) })
    }

    func unlock(_ steps: ModelSteps) {
        lock.unlock(steps: steps)
    }

    /// A critical section: a read-modify-write of the guarded word with a scheduling point in
    /// the middle, so that other threads may run (and show whether they get in).
    func criticalSection(_ steps: ModelSteps, writeAfter: (() -> Void)? = nil) {
        inside += 1
        steps.execution.expect(inside == 1, "mutual exclusion: \(inside) threads inside the critical section")
        let value = steps.loadWord(at: guarded)
        steps.yieldPoint()
        sections += 1
        inside -= 1
        steps.storeWord(value + 1, at: guarded)
    }

    func checkCounts(_ execution: Execution, sections expected: Int) {
        let statistics = lock.statistics
        execution.expect(sections == expected, "\(sections) critical sections of \(expected)")
        execution.expect(guarded.load(as: UInt.self) == UInt(expected), "the guarded counter reads \(guarded.load(as: UInt.self)) after \(expected) increments")
        execution.expect(statistics.acquisitions == UInt64(expected), "lock acquisitions \(statistics.acquisitions), critical sections \(expected)")
        execution.expect(statistics.contended <= statistics.acquisitions, "more contended acquisitions than acquisitions")
        execution.expect(lock.held.pointee.load(ordering: .relaxed) == 0, "the lock is still held")
    }
}

private func lockScenario(
    threads: Int, sections: Int, reader: Bool = false, limits: ExplorationLimits = ExplorationLimits(),
    body: @escaping @Sendable (LockWorld, ModelSteps) -> Void = { world, steps in
        world.lock(steps)
        world.criticalSection(steps)
        world.unlock(steps)
    }
) -> ExplorationReport {
    let workers = threads - (reader ? 1 : 0)
    return explore(threads: threads, limits: limits, setup: LockWorld.init, body: { world, steps in
        if steps.thread < workers {
            for _ in 0..<sections { body(world, steps) }
        } else {
            // Statistics without the lock: never more acquisitions than sections begun, never
            // more contended than acquisitions counted before.
            let statistics = world.lock.statistics(steps: steps)
            steps.execution.expect(statistics.acquisitions <= UInt64(workers * sections), "more acquisitions than sections")
        }
    }, check: { world, execution in world.checkCounts(execution, sections: workers * sections) })
}

@Suite("Interleavings: the lock")
struct LockInterleavingTests {
    @Test("2 threads, 2 critical sections each: mutual exclusion, every write seen, counters add up")
    func twoThreadsTwoSections_everyInterleaving() {
        let report = lockScenario(threads: 2, sections: 2)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("lock, 2 threads x 2 sections: \(report)")
    }

    @Test("3 threads, 1 critical section each")
    func threeThreadsOneSection_everyInterleaving() {
        let report = lockScenario(threads: 3, sections: 1)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("lock, 3 threads x 1 section: \(report)")
    }

    @Test("2 threads, 1 critical section each, and a statistics reader")
    func twoThreadsAndReader_everyInterleaving() {
        let report = lockScenario(threads: 3, sections: 1, reader: true)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("lock, 2 threads x 1 section + reader: \(report)")
    }

    @Test("3 threads, 2 critical sections each (at most 2 preemptions)")
    func threeThreadsTwoSections_boundedPreemptions() {
        let report = lockScenario(threads: 3, sections: 2, limits: ExplorationLimits(preemptionBound: 2))
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        print("lock, 3 threads x 2 sections, <= 2 preemptions: \(report)")
    }

    // MARK: Broken locks: each must be reported

    @Test("unlocking before the critical section's last write: reported")
    func unlockBeforeLastWrite_isReported() {
        let report = lockScenario(threads: 2, sections: 1) { world, steps in
            world.lock(steps)
            let value = steps.loadWord(at: world.guarded)
            world.unlock(steps)
            steps.storeWord(value + 1, at: world.guarded)  // outside the lock
            world.sections += 1
        }
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
    }

    @Test("a relaxed unlock (no release): reported")
    func relaxedUnlock_isReported() {
        let report = lockScenario(threads: 2, sections: 1) { world, steps in
            world.lock(steps)
            world.criticalSection(steps)
            steps.store(0, to: world.lock.held.pointee, ordering: .relaxed)
        }
        #expect(report.failure?.message.contains("plain access to a word the thread does not own: t1 reads guarded") == true, "\(report)")
    }

    @Test("a relaxed acquiring exchange (no acquire): reported")
    func relaxedLock_isReported() {
        let report = lockScenario(threads: 2, sections: 1) { world, steps in
            var looks = 0
            while steps.exchange(world.lock.held.pointee, with: 1, ordering: .relaxed) != 0 {
                steps.spinWhile(world.lock.held.pointee, equals: 1, looks: &looks)
            }
            steps.addSingleWriter(1, to: world.lock.counters.pointee.acquisitions)
            world.criticalSection(steps)
            world.unlock(steps)
        }
        #expect(report.failure?.message.contains("plain access to a word the thread does not own") == true, "\(report)")
    }

    @Test("a test-and-set made of a load and a store (not one exchange): reported")
    func loadThenStoreLock_breaksMutualExclusion() {
        let report = lockScenario(threads: 2, sections: 1) { world, steps in
            var looks = 0
            repeat {
                steps.spinWhile(world.lock.held.pointee, equals: 1, looks: &looks)
            } while steps.load(world.lock.held.pointee, ordering: .acquiring) != 0
            steps.store(1, to: world.lock.held.pointee, ordering: .relaxed)  // another thread may have got here too
            steps.addSingleWriter(1, to: world.lock.counters.pointee.acquisitions)
            world.criticalSection(steps)
            world.unlock(steps)
        }
        // Found either way: two threads inside at once, or (often first) the second one reading
        // the guarded word that the first wrote with no release/acquire between them.
        let message = report.failure?.message ?? ""
        #expect(message.hasPrefix("mutual exclusion: 2 threads inside")
                || message.hasPrefix("plain access to a word the thread does not own"), "\(report)")
    }
}
