// The model of one execution: what the threads did (a trace), who happened before whom (vector
// clocks), and the first violation. Only the thread holding the baton touches it (Scheduler).
import Synchronization

/// One run of a scenario under one schedule. Scenario code (setup, thread bodies, check) calls
/// `fail` or `expect` to report a violated invariant, and `name` to make traces readable.
///
/// Happens-before is tracked with a vector clock per thread, as loom and ThreadSanitizer do: an
/// acquiring load or read-modify-write joins the clock the cell carries; a releasing store sets
/// it, a releasing read-modify-write joins into it (a release sequence), a relaxed store clears
/// it. Each plain word (`loadWord`, `storeWord`) remembers its last writer and its readers since;
/// an access that is not ordered after every conflicting one by another thread is a violation:
/// the thread touched a word it did not own (read after giving the slot away, or before
/// receiving it, or outside the lock).
///
/// `@unchecked Sendable`: used by one thread at a time, the one holding the scheduler's baton
/// (handed over under a pthread mutex, which orders every access).
package final class Execution: @unchecked Sendable {
    package let threadCount: Int
    let maxSteps: Int
    unowned let scheduler: Scheduler

    /// The first violation found, if any. From then on the execution is abandoned: every step
    /// returns at once with a value that ends the algorithms' loops, so the threads finish.
    package private(set) var failure: String?
    package var isAbandoned: Bool { failure != nil }
    /// Atomic steps (scheduling points) and plain accesses so far.
    package private(set) var steps = 0

    private var clocks: [[Int]]
    private var cellClocks: [UInt: [Int]] = [:]
    private struct WordState {
        var writer: (thread: Int, epoch: Int)?
        var readers: [Int]
    }
    private var words: [UInt: WordState] = [:]
    private var names: [UInt: String] = [:]

    /// A step as the trace keeps it: values only, formatted when a failure is reported.
    enum Step {
        case load(UInt, StaticString)
        case store(UInt, StaticString)
        case exchange(UInt, old: UInt, StaticString)
        case compareExchange(expected: UInt, desired: UInt, found: UInt, StaticString)
        case wrappingAdd(UInt, old: UInt, StaticString)
        case spinWhile(equals: UInt, saw: UInt)
        case yield
        case loadWord(UInt)
        case storeWord(UInt)
    }
    struct TraceEntry {
        let thread: Int
        let address: UInt
        let step: Step
    }
    private(set) var trace: [TraceEntry] = []

    init(threadCount: Int, maxSteps: Int, scheduler: Scheduler) {
        self.threadCount = threadCount
        self.maxSteps = maxSteps
        self.scheduler = scheduler
        clocks = (0..<threadCount).map { thread in
            var clock = [Int](repeating: 0, count: threadCount)
            clock[thread] = 1
            return clock
        }
    }

    // MARK: Scenario API

    /// Records a violated invariant (the first one counts) and abandons the execution.
    package func fail(_ message: String) {
        if failure == nil { failure = message }
    }

    /// `fail(message)` unless `condition` holds.
    package func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fail(message()) }
    }

    /// Names an address in traces and messages (a slot, a cell).
    package func name(_ address: UnsafeRawPointer, _ name: String) {
        names[UInt(bitPattern: address)] = name
    }

    /// The name of an address, as traces and messages show it.
    package func name(of address: UnsafeRawPointer) -> String {
        describe(UInt(bitPattern: address))
    }

    /// Names an atomic cell in traces and messages.
    package func name(cell: borrowing Atomic<UInt>, _ name: String) {
        names[Execution.address(of: cell)] = name
    }

    /// The trace so far, one line a step: "t1 exchange head ...".
    package var traceLines: [String] {
        trace.map { entry in
            let at = describe(entry.address)
            let text = switch entry.step {
            case .load(let value, let ordering): "load \(at) -> \(value) (\(ordering))"
            case .store(let value, let ordering): "store \(at) = \(value) (\(ordering))"
            case .exchange(let value, let old, let ordering): "exchange \(at) = \(value), was \(old) (\(ordering))"
            case .compareExchange(let expected, let desired, let found, let ordering):
                found == expected ? "compareExchange \(at) \(expected) -> \(desired): done (\(ordering))"
                    : "compareExchange \(at) \(expected) -> \(desired): found \(found) (\(ordering))"
            case .wrappingAdd(let amount, let old, let ordering): "wrappingAdd \(at) += \(amount), was \(old) (\(ordering))"
            case .spinWhile(let value, let saw): "spinWhile \(at) == \(value): ends, sees \(saw)"
            case .yield: "yield"
            case .loadWord(let value): "load word \(at) -> \(value)"
            case .storeWord(let value): "store word \(at) = \(value)"
            }
            return "t\(entry.thread) " + text
        }
    }

    func describe(_ address: UInt) -> String {
        if let name = names[address] { return name }
        // A link word inside a named slot: "slot A+8".
        if let (base, name) = names.filter({ $0.key < address && address - $0.key < 4096 }).max(by: { $0.key < $1.key }) {
            return "\(name)+\(address - base)"
        }
        return "0x" + String(address, radix: 16)
    }

    static func address(of cell: borrowing Atomic<UInt>) -> UInt {
        // Atomic has a stable address (it is never moved while borrowed): the address is its
        // identity in the model, compared and never dereferenced here.
        withUnsafePointer(to: cell) { UInt(bitPattern: $0) }
    }

    // MARK: Steps (ModelSteps)

    /// A scheduling point before an atomic step of `thread`; false once the execution is
    /// abandoned (the step must then return at once). `blockedOn`: a spin-wait, runnable only
    /// when the cell no longer holds the value.
    func beginAtomicStep(_ thread: Int, blockedOn: (cell: UInt, value: UInt)? = nil) -> Bool {
        if isAbandoned { return countStep(thread) }
        scheduler.schedulePoint(thread, blockedOn: blockedOn)
        return countStep(thread)
    }

    /// Counts a step; false once the execution is abandoned. A thread that still takes steps
    /// long after that is in a loop the abandoned steps cannot end: it is parked for good (it
    /// never returns, and the exploration, which stops at this failure, leaves it behind).
    private func countStep(_ thread: Int) -> Bool {
        steps += 1
        if isAbandoned {
            if steps > 2 * maxSteps { scheduler.parkForever(thread) }
            return false
        }
        if steps > maxSteps {
            fail("more than \(maxSteps) steps in one execution: a loop that never ends?")
            return false
        }
        return true
    }

    /// Happens-before bookkeeping of an atomic step that `thread` just took on `cell`.
    func atomicStep(_ thread: Int, cell: UInt, _ step: Step,
                    acquiring: Bool, releasing: Bool, writes: Bool, readModifyWrite: Bool) {
        if acquiring, let released = cellClocks[cell] {
            for index in 0..<threadCount { clocks[thread][index] = max(clocks[thread][index], released[index]) }
        }
        if writes {
            if releasing {
                if readModifyWrite, let released = cellClocks[cell] {
                    cellClocks[cell] = zip(released, clocks[thread]).map { max($0, $1) }
                } else {
                    cellClocks[cell] = clocks[thread]
                }
            } else if !readModifyWrite {
                cellClocks[cell] = nil  // a relaxed store ends every release sequence
            }
        }
        clocks[thread][thread] += 1
        trace.append(TraceEntry(thread: thread, address: cell, step: step))
    }

    /// Checks a plain access against happens-before and records it; false once the execution is
    /// abandoned (the access must then not touch memory).
    func plainAccess(_ thread: Int, word: UInt, write: Bool, value: UInt) -> Bool {
        if !countStep(thread) { return false }
        var state = words[word] ?? WordState(writer: nil, readers: [Int](repeating: 0, count: threadCount))
        let clock = clocks[thread]
        let what = write ? "writes" : "reads"
        trace.append(TraceEntry(thread: thread, address: word, step: write ? .storeWord(value) : .loadWord(value)))
        if let writer = state.writer, writer.thread != thread, writer.epoch > clock[writer.thread] {
            fail("plain access to a word the thread does not own: t\(thread) \(what) \(describe(word)), "
                 + "which t\(writer.thread) wrote without a release/acquire pair ordering it before")
            return false
        }
        if write {
            for reader in 0..<threadCount where reader != thread && state.readers[reader] > clock[reader] {
                fail("plain access to a word the thread does not own: t\(thread) writes \(describe(word)), "
                     + "which t\(reader) read without a release/acquire pair ordering it before")
                return false
            }
            state.writer = (thread, clock[thread])
            state.readers = [Int](repeating: 0, count: threadCount)
        } else {
            state.readers[thread] = clock[thread]
        }
        words[word] = state
        return true
    }

    /// The logical clock `nanoseconds()` returns: steps so far.
    var logicalTime: UInt64 { UInt64(steps) }
}
