// The checker itself: it enumerates exactly the interleavings there are, each once; it bounds
// preemptions as CHESS does; it reports plain accesses without happens-before, deadlocks and
// loops that never end.
import FastAlloc
import Interleavings
import Synchronization
import Testing

/// Every thread takes `steps[thread]` relaxed increments of its own cell.
private final class IndependentSteps {
    let cell0 = Atomic<UInt>(0)
    let cell1 = Atomic<UInt>(0)
    let cell2 = Atomic<UInt>(0)
    /// The thread of each step, in the order they ran.
    var order: [Int] = []
}

private func increments(_ world: IndependentSteps, _ steps: ModelSteps, count: Int) {
    for _ in 0..<count {
        switch steps.thread {
        case 0: _ = steps.wrappingAdd(1, to: world.cell0, ordering: .relaxed)
        case 1: _ = steps.wrappingAdd(1, to: world.cell1, ordering: .relaxed)
        default: _ = steps.wrappingAdd(1, to: world.cell2, ordering: .relaxed)
        }
        world.order.append(steps.thread)
    }
}

/// The schedules of threads with these step counts that preempt at most `bound` times, counted
/// by brute force the way the scheduler defines them: the first thread to run preempts nobody;
/// switching away from a thread that has steps left is a preemption.
private func referenceCount(_ remaining: [Int], current: Int? = nil, preemptionsLeft: Int?) -> Int {
    if remaining.allSatisfy({ $0 == 0 }) { return 1 }
    let currentCanGoOn = current.map { remaining[$0] > 0 } ?? false
    var options = remaining.indices.filter { remaining[$0] > 0 }
    if currentCanGoOn, preemptionsLeft == 0 { options = [current!] }
    return options.reduce(0) { total, next in
        var left = remaining
        left[next] -= 1
        let preempts = currentCanGoOn && next != current
        return total + referenceCount(left, current: next, preemptionsLeft: preemptionsLeft.map { preempts ? $0 - 1 : $0 })
    }
}

private final class Orders {
    var seen: [[Int]] = []
}

@Suite("Interleavings: the explorer")
struct ExplorerTests {
    @Test("2 threads of 3 steps: all C(6,3) = 20 interleavings, each once")
    func twoThreadsOfThreeSteps_exploreAll20InterleavingsOnce() {
        let orders = Orders()
        let report = explore(threads: 2, setup: { _ in IndependentSteps() },
                             body: { world, steps in increments(world, steps, count: 3) },
                             check: { world, execution in
                                 orders.seen.append(world.order)
                                 execution.expect(world.cell0.load(ordering: .relaxed) == 3, "thread 0's steps all ran")
                                 execution.expect(world.cell1.load(ordering: .relaxed) == 3, "thread 1's steps all ran")
                             })
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        #expect(report.executions == 20)
        #expect(Set(orders.seen).count == 20, "every interleaving is a different order of steps")
        #expect(orders.seen.allSatisfy { $0.count == 6 })
    }

    @Test("3 threads of 2 steps: all 6!/(2!2!2!) = 90 interleavings, each once")
    func threeThreadsOfTwoSteps_exploreAll90InterleavingsOnce() {
        let orders = Orders()
        let report = explore(threads: 3, setup: { _ in IndependentSteps() },
                             body: { world, steps in increments(world, steps, count: 2) },
                             check: { world, _ in orders.seen.append(world.order) })
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        #expect(report.executions == 90)
        #expect(report.executions == referenceCount([2, 2, 2], preemptionsLeft: nil))
        #expect(Set(orders.seen).count == 90)
    }

    @Test("a preemption bound keeps the schedules with at most that many preemptions",
          arguments: [0, 1, 2])
    func preemptionBound_keepsSchedulesWithThatManyPreemptions(bound: Int) {
        let orders = Orders()
        let report = explore(threads: 3, limits: ExplorationLimits(preemptionBound: bound),
                             setup: { _ in IndependentSteps() },
                             body: { world, steps in increments(world, steps, count: 3) },
                             check: { world, _ in orders.seen.append(world.order) })
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        #expect(report.executions == referenceCount([3, 3, 3], preemptionsLeft: bound))
        #expect(Set(orders.seen).count == report.executions)
        if bound == 0 { #expect(report.executions == 6, "no preemption: the 3! orders of whole threads") }
    }

    @Test("maxExecutions stops an exploration early, reported incomplete")
    func maxExecutions_stopsEarly() {
        let report = explore(threads: 2, limits: ExplorationLimits(maxExecutions: 5),
                             setup: { _ in IndependentSteps() },
                             body: { world, steps in increments(world, steps, count: 3) })
        #expect(report.executions == 5)
        #expect(!report.complete)
        #expect(report.failure == nil)
    }

    // MARK: What it reports

    /// Thread 0 writes a word, then raises a flag; thread 1 reads the word once it sees the flag.
    private final class MessagePassing {
        let flag = Atomic<UInt>(0)
        let word = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)
        init(_ execution: Execution) {
            word.storeBytes(of: 0, as: UInt.self)
            execution.name(word, "message")
            execution.name(cell: flag, "flag")
        }
        deinit { word.deallocate() }
    }

    private func messagePassing(store: _StoreOrdering, load: _LoadOrdering) -> ExplorationReport {
        explore(threads: 2, setup: MessagePassing.init, body: { world, steps in
            if steps.thread == 0 {
                steps.storeWord(42, at: world.word)
                steps.store(1, to: world.flag, ordering: store)
            } else if steps.load(world.flag, ordering: load) == 1 {
                steps.execution.expect(steps.loadWord(at: world.word) == 42, "the message arrived")
            }
        })
    }

    @Test("a releasing store and an acquiring load pass a plain word: no violation")
    func releaseAcquire_passesThePlainWord() {
        let report = messagePassing(store: .releasing, load: .acquiring)
        #expect(report.failure == nil, "\(report)")
        #expect(report.complete)
        #expect(report.executions == 2, "one atomic step each: plain accesses are not scheduling points")
    }

    @Test("a relaxed store (or load) does not pass the plain word: reported", arguments: [false, true])
    func relaxed_doesNotPassThePlainWord(relaxedStore: Bool) {
        let report = messagePassing(store: relaxedStore ? .relaxed : .releasing, load: relaxedStore ? .acquiring : .relaxed)
        let failure = report.failure
        #expect(failure?.message.contains("plain access to a word the thread does not own: t1 reads message") == true, "\(report)")
        #expect(failure?.trace.last == "t1 load word message -> 42")
    }

    private final class TwoFlags {
        let flag0 = Atomic<UInt>(0)
        let flag1 = Atomic<UInt>(0)
    }

    @Test("threads that wait for each other forever: a deadlock, reported")
    func spinWaitsThatNeverEnd_areADeadlock() {
        let report = explore(threads: 2, setup: { _ in TwoFlags() }, body: { world, steps in
            var looks = 0
            if steps.thread == 0 {
                steps.spinWhile(world.flag1, equals: 0, looks: &looks)
                steps.store(1, to: world.flag0, ordering: .releasing)
            } else {
                steps.spinWhile(world.flag0, equals: 0, looks: &looks)
                steps.store(1, to: world.flag1, ordering: .releasing)
            }
        })
        #expect(report.failure?.message == "deadlock: t0, t1 wait in a spin-wait that nothing will end", "\(report)")
        #expect(report.executions == 1)
    }

    @Test("a spin-wait is one blocking step: the waiter runs only once the cell changed")
    func spinWait_isOneBlockingStep() {
        let report = explore(threads: 2, setup: { _ in TwoFlags() }, body: { world, steps in
            var looks = 0
            if steps.thread == 0 {
                steps.spinWhile(world.flag0, equals: 0, looks: &looks)
                steps.execution.expect(looks == 1, "one look")
            } else {
                steps.store(1, to: world.flag0, ordering: .releasing)
            }
        })
        #expect(report.failure == nil, "\(report)")
        #expect(report.executions == 1, "only one order is possible")
    }

    @Test("a loop that never ends is reported at the step bound")
    func endlessLoop_isReported() {
        let report = explore(threads: 1, limits: ExplorationLimits(maxStepsPerExecution: 100),
                             setup: MessagePassing.init, body: { world, steps in
            while steps.loadWord(at: world.word) == 0 {}
        })
        #expect(report.failure?.message == "more than 100 steps in one execution: a loop that never ends?", "\(report)")
    }
}
