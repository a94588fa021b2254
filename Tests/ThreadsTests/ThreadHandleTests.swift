import Threads
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `ThreadHandle`: joining is idempotent and thread-safe (pthread_join twice on one thread is
/// undefined behaviour: with glibc it may wait on a reused thread or crash).
@Suite struct ThreadHandleTests {
    @Test func joinTwice_returnsBothTimes_afterTheThreadRan() {
        let ran = Locked(false)
        let thread = ThreadHandle.start { ran.withLock { $0 = true } }
        thread.join()
        #expect(ran.withLock { $0 })
        #expect(thread.isJoined)
        thread.join()  // again: returns at once
        let copy = thread  // a copy shares the join state
        copy.join()
        #expect(copy.isJoined)
    }

    @Test func twoThreadsJoiningAtOnce_bothWaitForTheEnd() {
        for _ in 0..<50 {
            let release = Latch<Bool>()
            let finished = Locked(false)
            let thread = ThreadHandle.start {
                _ = release.wait()
                finished.withLock { $0 = true }
            }
            // Two joiners start together while the thread is still blocked; the test thread lets
            // it go once both are running. Each records whether the thread had finished when its
            // join returned: both must say yes.
            let sawFinished = Locked<[Bool]>([])
            let joiners = (0..<2).map { _ in
                ThreadHandle.start {
                    thread.join()
                    let done = finished.withLock { $0 }
                    sawFinished.withLock { $0.append(done) }
                }
            }
            release.set(true)
            for joiner in joiners { joiner.join() }
            #expect(sawFinished.withLock { $0 } == [true, true])
            #expect(thread.isJoined)
        }
    }

    @Test func manyConcurrentJoins_ofAFinishedThread() {
        let thread = ThreadHandle.start {}
        onThreadsTogether(8) { _ in thread.join() }
        #expect(thread.isJoined)
    }
}
