import Synchronization
import TestSupport
import Testing
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// `AsyncWake.send()` from any thread at any time: after `close()` it does nothing (libuv's
/// uv_async_send on a closing or closed handle is undefined behaviour).
@Suite struct AsyncWakeTests {
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// The regression test: without the lock and flag in AsyncWake, the first send after close
    /// still reaches uv_async_send, which writes the loop's wake-up descriptor, and the loop's
    /// next wait ends at once instead of at its timer.
    @Test func sendAfterClose_fromAnotherThread_doesNothing() throws {
        let loop = try EventLoop()
        var runs = 0
        let wake = try AsyncWake(loop: loop) { _ in runs += 1 }
        wake.close()
        loop.runOnce(wait: false)  // runs the close callback
        #expect(wake.isClosed)
        let sender = ThreadHandle.start {
            for _ in 0..<10_000 { wake.send() }
        }
        sender.join()
        // Only a timer keeps the loop waiting now: nothing may wake it before the timer fires.
        var timerFired = false
        let timer = try Timer(loop: loop)
        timer.start(after: 50) { _ in timerFired = true }
        loop.runOnce(wait: true)
        #expect(timerFired, "the loop woke up before its timer: a send after close reached libuv")
        #expect(runs == 0)
        timer.close()
        loop.run()
    }

    /// One thread sends as fast as it can while the loop closes the handle on the first wake-up,
    /// and goes on sending after the close callback has run. Run under ThreadSanitizer and
    /// AddressSanitizer: no report.
    @Test func sendsRacingAClose_fromAnotherThread() throws {
        for _ in 0..<20 {
            let loop = try EventLoop()
            var runs = 0
            let wake = try AsyncWake(loop: loop) { wake in
                runs += 1
                wake.close()
            }
            let sent = Counter()
            let stop = Counter()
            let sender = ThreadHandle.start {
                while stop.value.load(ordering: .relaxed) == 0 {
                    wake.send()
                    sent.value.add(1, ordering: .relaxed)
                }
            }
            loop.run()  // returns once the first wake-up closed the handle and its callback ran
            #expect(wake.isClosed)
            // Let the sender go on against the closed handle for a while (bounded).
            let atClose = sent.value.load(ordering: .relaxed)
            let deadline = EventLoop.hrtime() + 10_000_000_000
            while sent.value.load(ordering: .relaxed) < atClose + 1000 && EventLoop.hrtime() < deadline {
                sched_yield()
            }
            stop.value.store(1, ordering: .relaxed)
            sender.join()
            #expect(sent.value.load(ordering: .relaxed) >= atClose + 1000)
            #expect(runs == 1)
            #expect(!loop.runOnce(wait: false))  // nothing left on the loop: the wake-up is gone
        }
    }

    /// Many threads send while the loop thread counts wake-ups, then closes; senders that
    /// started before the close and go on after it are all fine.
    @Test func sendsFromManyThreads_beforeAndAfterClose() throws {
        let loop = try EventLoop()
        let wakeUps = Counter()
        let wake = try AsyncWake(loop: loop) { wake in
            if wakeUps.value.add(1, ordering: .relaxed).newValue == 3 { wake.close() }
        }
        let stop = Counter()
        let senders = (0..<4).map { _ in
            ThreadHandle.start {
                while stop.value.load(ordering: .relaxed) == 0 {
                    wake.send()
                    sched_yield()
                }
                for _ in 0..<1000 { wake.send() }  // after the close: nothing happens
            }
        }
        loop.run()  // until the third wake-up closed the handle
        stop.value.store(1, ordering: .relaxed)
        for sender in senders { sender.join() }
        #expect(wakeUps.value.load(ordering: .relaxed) == 3)
        #expect(wake.isClosed)
    }
}
