// Stateless model checking (as CHESS and loom do it): run the scenario from scratch once per
// schedule, each thread a real pthread that runs only while it holds the baton, and enumerate
// the schedules depth first over the choice points (which thread takes the next atomic step).
import Synchronization
import Threads
#if canImport(Glibc)
import Glibc
#endif

/// Bounds of an exploration.
package struct ExplorationLimits: Sendable {
    /// At most this many preemptions per execution (CHESS's bound: a switch away from a thread
    /// that could go on); nil explores every interleaving.
    package var preemptionBound: Int?
    /// Stop (incomplete) after this many executions.
    package var maxExecutions: Int
    /// Atomic steps and plain accesses per execution before the execution counts as a loop
    /// that never ends (a violation).
    package var maxStepsPerExecution: Int

    package init(preemptionBound: Int? = nil, maxExecutions: Int = 2_000_000, maxStepsPerExecution: Int = 10_000) {
        self.preemptionBound = preemptionBound
        self.maxExecutions = maxExecutions
        self.maxStepsPerExecution = maxStepsPerExecution
    }
}

/// The first violation an exploration found, with the schedule that led to it.
package struct ExplorationFailure: Sendable, CustomStringConvertible {
    package let message: String
    /// 1 for the first execution explored.
    package let execution: Int
    /// The thread chosen at each choice point.
    package let schedule: [Int]
    /// Every step of the failing execution, in order.
    package let trace: [String]

    package var description: String {
        "\(message)\n  in execution \(execution), schedule \(schedule):\n    " + trace.joined(separator: "\n    ")
    }
}

/// What an exploration covered.
package struct ExplorationReport: Sendable, CustomStringConvertible {
    /// Executions run (schedules explored), the failing one included.
    package var executions = 0
    /// Every schedule within the bounds was explored (false when stopped by a failure or by
    /// `maxExecutions`).
    package var complete = false
    package var failure: ExplorationFailure?
    /// Scheduling points in the longest execution.
    package var longestExecution = 0
    package var seconds = 0.0

    package var description: String {
        let outcome = failure.map { "FAILED: \($0)" } ?? (complete ? "complete" : "incomplete")
        return "\(executions) executions (longest \(longestExecution) steps) in \((seconds * 100).rounded() / 100) s, \(outcome)"
    }
}

/// Explores every schedule of `threads` threads running `body` on a fresh world from `setup`,
/// calling `check` after each execution that did not already fail. Deterministic: the same
/// scenario explores the same schedules in the same order.
///
/// The world is the scenario's shared state; the thread bodies reach it only through the
/// `ModelSteps` they are given (atomic steps and plain words) and through the world's own plain
/// fields, which they may touch between steps (only one thread runs at a time).
package func explore<World: AnyObject>(
    threads: Int, limits: ExplorationLimits = ExplorationLimits(),
    setup: @escaping (Execution) -> World,
    body: @escaping @Sendable (World, ModelSteps) -> Void,
    check: @escaping (World, Execution) -> Void = { _, _ in }
) -> ExplorationReport {
    precondition((1...3).contains(threads), "explore: 1 to 3 threads")
    let scheduler = Scheduler(threadCount: threads, limits: limits)
    return scheduler.run(
        makeExecution: { execution in
            let world = setup(execution)
            let box = UncheckedBox(world)
            return (
                run: { thread in body(box.value, ModelSteps(execution: execution, thread: thread)) },
                check: { check(world, execution) })
        })
}

/// `@unchecked Sendable`: carries a world to the worker threads, which use it one at a time
/// under the baton.
final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The baton: which thread may run (a worker, or the controller at index `threadCount`),
/// handed over under one mutex with a condition variable per thread.
final class Baton: @unchecked Sendable {
    // @unchecked: `holder` and `shuttingDown` are touched with `mutex` held only; the pthread
    // objects live in their own allocations from init to deinit.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let conditions: UnsafeMutablePointer<pthread_cond_t>
    private let count: Int
    private var holder: Int
    private var shuttingDown = false

    init(parties: Int, holder: Int) {
        count = parties
        self.holder = holder
        conditions = .allocate(capacity: parties)
        pthread_mutex_init(mutex, nil)
        for index in 0..<parties { pthread_cond_init(conditions + index, nil) }
    }

    deinit {
        for index in 0..<count { pthread_cond_destroy(conditions + index) }
        conditions.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Hands the baton from `me` to `next`; if `wait`, returns once it comes back to `me`.
    func pass(from me: Int, to next: Int, wait: Bool) {
        pthread_mutex_lock(mutex)
        holder = next
        pthread_cond_signal(conditions + next)
        if wait {
            while holder != me && !shuttingDown { pthread_cond_wait(conditions + me, mutex) }
        }
        pthread_mutex_unlock(mutex)
    }

    /// Waits for the baton; false when the exploration is over.
    func await(_ me: Int) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while holder != me && !shuttingDown { pthread_cond_wait(conditions + me, mutex) }
        return !shuttingDown
    }

    /// Waits on a condition nobody signals (a thread in a loop that never ends, left behind).
    func parkForever() -> Never {
        var condition = pthread_cond_t()
        pthread_cond_init(&condition, nil)
        pthread_mutex_lock(mutex)
        while true { pthread_cond_wait(&condition, mutex) }
    }

    func shutDown() {
        pthread_mutex_lock(mutex)
        shuttingDown = true
        for index in 0..<count { pthread_cond_signal(conditions + index) }
        pthread_mutex_unlock(mutex)
    }
}

/// Runs the executions: the controller (the caller's thread) sets each one up, hands the baton
/// to the threads, checks the outcome and picks the next schedule.
///
/// `@unchecked Sendable`: its state is touched only by the baton's holder.
package final class Scheduler: @unchecked Sendable {
    private enum ThreadState {
        case notStarted, ready, running, finished
        /// In a spin-wait: runnable once the cell at this address no longer holds the value.
        case blocked(cell: UInt, value: UInt)
    }

    private let threadCount: Int
    private let limits: ExplorationLimits
    private let baton: Baton
    private var controller: Int { threadCount }

    /// The schedule being explored: at each choice point, the option taken and how many there
    /// were. Options are ordered: the thread that just ran first (no preemption), then the
    /// others by index.
    private var trail: [(chosen: Int, options: Int)] = []
    private var position = 0
    private var preemptions = 0
    /// True until the first choice of an execution: no thread is running then, so whoever
    /// goes first preempts nobody.
    private var starting = true
    private var schedule: [Int] = []
    private var states: [ThreadState]
    private var execution: Execution?
    private var runBody: (@Sendable (Int) -> Void)?

    init(threadCount: Int, limits: ExplorationLimits) {
        self.threadCount = threadCount
        self.limits = limits
        baton = Baton(parties: threadCount + 1, holder: threadCount)
        states = Array(repeating: .notStarted, count: threadCount)
    }

    func run(makeExecution: (Execution) -> (run: @Sendable (Int) -> Void, check: () -> Void)) -> ExplorationReport {
        var report = ExplorationReport()
        let start = _monotonicSeconds()
        let workers = (0..<threadCount).map { index in
            ThreadHandle.start { [self] in
                while baton.await(index) {
                    runBody!(index)
                    threadFinished(index)
                }
            }
        }
        while true {
            let execution = Execution(threadCount: threadCount, maxSteps: limits.maxStepsPerExecution, scheduler: self)
            self.execution = execution
            // The world lives in `scenario`'s closures until the end of this iteration.
            let scenario = makeExecution(execution)
            runBody = scenario.run
            states = Array(repeating: .notStarted, count: threadCount)
            position = 0
            preemptions = 0
            starting = true
            schedule = []
            baton.pass(from: controller, to: 0, wait: true)  // back when every thread finished
            report.executions += 1
            report.longestExecution = max(report.longestExecution, execution.steps)
            if !execution.isAbandoned { scenario.check() }
            if let message = execution.failure {
                report.failure = ExplorationFailure(message: message, execution: report.executions,
                                                    schedule: schedule, trace: execution.traceLines)
                break
            }
            runBody = nil
            self.execution = nil
            if !advance() { report.complete = true; break }
            if report.executions >= limits.maxExecutions { break }
        }
        runBody = nil
        execution = nil
        baton.shutDown()
        for (index, worker) in workers.enumerated() where !parked.contains(index) { worker.join() }
        report.seconds = _monotonicSeconds() - start
        return report
    }

    /// The next schedule: the deepest choice point with an option left takes its next option;
    /// false when every schedule was explored.
    private func advance() -> Bool {
        while let last = trail.last {
            if last.chosen + 1 < last.options {
                trail[trail.count - 1].chosen += 1
                return true
            }
            trail.removeLast()
        }
        return false
    }

    /// Called by `thread` before an atomic step: picks who takes the next step, and returns
    /// when it is this thread's turn.
    func schedulePoint(_ thread: Int, blockedOn: (cell: UInt, value: UInt)?) {
        states[thread] = blockedOn.map { .blocked(cell: $0.cell, value: $0.value) } ?? .ready
        let next = choose(after: thread)
        if next != thread { baton.pass(from: thread, to: next, wait: true) }
        states[thread] = .running
    }

    /// Threads parked for good: never joined.
    private var parked: Set<Int> = []

    /// Takes `thread` out of the execution as if it finished, and never returns.
    func parkForever(_ thread: Int) -> Never {
        parked.insert(thread)
        threadFinished(thread)
        baton.parkForever()
    }

    private func threadFinished(_ thread: Int) {
        states[thread] = .finished
        baton.pass(from: thread, to: choose(after: thread), wait: false)
    }

    private func isRunnable(_ thread: Int) -> Bool {
        switch states[thread] {
        case .ready: return true
        case .blocked(let cell, let value):
            if execution!.isAbandoned { return true }
            // Safe: the cell belongs to the world, alive for the whole execution, and no other
            // thread runs while the baton holder looks.
            return UnsafePointer<Atomic<UInt>>(bitPattern: cell)!.pointee.load(ordering: .relaxed) != value
        case .notStarted, .running, .finished: return false
        }
    }

    /// Who takes the next step after `current` reached a scheduling point or finished.
    private func choose(after current: Int) -> Int {
        // Every thread runs up to its first atomic step before any choice is made (the code
        // before it touches no shared memory: nothing to interleave).
        if let waiting = states.firstIndex(where: { if case .notStarted = $0 { true } else { false } }) {
            return waiting
        }
        var options = (0..<threadCount).filter(isRunnable)
        if options.isEmpty {
            let unfinished = (0..<threadCount).filter { if case .finished = states[$0] { false } else { true } }
            if unfinished.isEmpty { return controller }
            execution!.fail("deadlock: " + unfinished.map { "t\($0)" }.joined(separator: ", ")
                            + " wait in a spin-wait that nothing will end")
            return unfinished[0]  // abandoned: its steps now return at once
        }
        if execution!.isAbandoned { return options[0] }
        let currentRunnable = !starting && current < threadCount && isRunnable(current)
        starting = false
        if currentRunnable {
            options.removeAll { $0 == current }
            options.insert(current, at: 0)
            if let bound = limits.preemptionBound, preemptions >= bound { options = [current] }
        }
        guard options.count > 1 else { return options[0] }
        let chosen: Int
        if position < trail.count {
            if trail[position].options != options.count {
                execution!.fail("the scenario is not deterministic: \(options.count) runnable threads at choice point \(position), \(trail[position].options) before")
                return options[0]
            }
            chosen = trail[position].chosen
        } else {
            trail.append((0, options.count))
            chosen = 0
        }
        position += 1
        if currentRunnable && chosen != 0 { preemptions += 1 }
        schedule.append(options[chosen])
        return options[chosen]
    }
}

private func _monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
