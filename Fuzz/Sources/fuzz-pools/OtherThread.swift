// "Another thread" for the cross-thread operations: one long-lived thread that runs what it is
// handed while the caller waits. Starting a thread per operation (pthread_create + join: a
// stack mapped and unmapped, AddressSanitizer's per-thread setup, a wait for the scheduler)
// cost more than everything else the fuzzer did; a hand-off to a thread that is already there
// costs two futex wake-ups. No spinning: the loops here are instrumented for coverage like
// the rest, and a spin count that varies from run to run would read as new coverage.
import FuzzSupport
#if canImport(Glibc)
import Glibc
#endif

final class OtherThread: @unchecked Sendable {
    // @unchecked: `job`, `posted` and `completed` are only touched with `mutex` held.
    private var job: (() -> Void)?
    /// Jobs handed over and jobs finished: the thread runs the job when `posted` passes
    /// `completed`; the caller waits until `completed` catches up.
    private var posted = 0
    private var completed = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workReady = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let workDone = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    /// The one thread every fuzz input shares (started on first use, never stopped: it ends
    /// with the process).
    static let shared = OtherThread()

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(workReady, nil)
        pthread_cond_init(workDone, nil)
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { context in
            // Safe: `context` is the `shared` instance, unretained: it lives as long as the process.
            Unmanaged<OtherThread>.fromOpaque(context!).takeUnretainedValue().loop()
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
        if status != 0 { fail("pthread_create: \(status)") }
        pthread_detach(thread)
    }

    /// Runs `body` on the other thread and waits until it has returned.
    func run(_ body: @escaping () -> Void) {
        pthread_mutex_lock(mutex)
        job = body
        posted += 1
        pthread_cond_signal(workReady)
        while completed != posted { pthread_cond_wait(workDone, mutex) }
        job = nil
        pthread_mutex_unlock(mutex)
    }

    private func loop() {
        pthread_mutex_lock(mutex)
        while true {
            while posted == completed { pthread_cond_wait(workReady, mutex) }
            let body = job!
            pthread_mutex_unlock(mutex)
            body()
            pthread_mutex_lock(mutex)
            completed += 1
            pthread_cond_signal(workDone)
        }
    }
}

/// Carries a handle to the other thread.
final class Carrier<Handle: ~Copyable>: @unchecked Sendable {
    // @unchecked: handed to the other thread while this one waits for it (OtherThread.run).
    var handle: Handle?
    init(_ handle: consuming Handle?) { self.handle = handle }
}

/// Runs `body` on the fuzzer's other thread and waits for it.
func onOtherThread(_ body: @escaping () -> Void) {
    OtherThread.shared.run(body)
}
