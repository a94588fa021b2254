import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// The base of every libuv handle: owns the handle's C memory for as long as the object lives,
/// and keeps itself alive while libuv may call back into it, from `retainForCallbacks()` (after
/// a successful `uv_*_init`) until its close callback. Call `close()` once you are done; the C
/// memory is freed when the last reference goes (for a closed `TCPStream` kept for reuse, not
/// before it is reopened and closed again).
///
/// Memory safety: `@safe` on the invariant that `rawHandle` is this object's own allocation of
/// `uv_handle_size(type)` bytes (16-aligned) from `init` until `deinit`, and that libuv holds a
/// retained `self` in the handle's `data` field from `retainForCallbacks()` until the close
/// callback; so the memory outlives every use libuv makes of it, and `data` is a live reference
/// of the handle's class whenever libuv calls back. Calls come on the loop's thread (except
/// `AsyncWake.send()`). Every `unsafe` in this file and in TCPStream.swift relies on that.
@safe
public class Handle {
    /// The `uv_*_t` allocation; while open, its `data` field holds the retained `self`.
    let rawHandle: UnsafeMutableRawPointer
    public let loop: EventLoop
    public var isClosing: Bool { unsafe closing }
    /// The close callback has run: libuv holds nothing of this handle any more.
    public var isClosed: Bool { unsafe closed }
    /// Unchecked exclusivity (both): read and written a few times per connection (accept,
    /// reopen, close), where each dynamic check is a runtime call and a thread-local lookup.
    /// Safe (every `unsafe` on them): a handle belongs to its loop's thread, and no access spans
    /// a call.
    @exclusivity(unchecked) private var closing = false
    @exclusivity(unchecked) private var closed = false

    init(loop: EventLoop, type: uv_handle_type) {
        self.loop = loop
        // Safe: a new allocation of the size libuv gives for this handle type; uv_*_init
        // initialises it, and deinit frees it.
        unsafe rawHandle = .allocate(byteCount: uv_handle_size(type), alignment: 16)
    }

    deinit {
        // Safe: an object that libuv may still call back into is retained by its `data` field,
        // so deinit runs only before a successful uv_*_init or after the close callback.
        unsafe rawHandle.deallocate()
    }

    /// A reopen whose uv_*_init failed: the handle is as closed as before.
    func markClosedWithoutInit() {
        unsafe closing = true
        unsafe closed = true
    }

    /// For a closed handle that is initialised again (`TCPStream.reopen()`).
    func resetAfterClose() {
        precondition(isClosed, "only a closed handle can be reopened")
        unsafe closing = false
        unsafe closed = false
    }

    var uvHandle: UnsafeMutablePointer<uv_handle_t> {
        // Safe: every uv_*_t begins with the uv_handle_t fields (libuv's documented layout).
        unsafe rawHandle.assumingMemoryBound(to: uv_handle_t.self)
    }

    /// Called by subclasses once `uv_*_init` succeeded: from now on libuv holds a reference.
    func retainForCallbacks() {
        // Safe: the handle is initialised; the reference taken here is given back once, in the
        // close callback (`close()`).
        unsafe uvHandle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Closes the handle; its close callback frees the C memory and drops libuv's reference.
    public func close() {
        guard !isClosing else { return }
        unsafe closing = true
        // Safe: the handle is initialised and not closing yet (just checked), as uv_close needs.
        unsafe uv_close(uvHandle, { handle in
            // Safe: `data` holds the reference taken by retainForCallbacks(), released exactly
            // here, in the one close callback libuv makes per handle.
            let object = unsafe Unmanaged<Handle>.fromOpaque(handle!.pointee.data).takeRetainedValue()
            unsafe object.closed = true
            object.didClose()
        })
    }

    /// Overridden to tell delegates; runs once, in the close callback.
    func didClose() {}

    /// Keeps the loop from waiting for this handle (`uv_unref`).
    // Safe: the handle memory is live (type invariant); libuv only changes its flags.
    public func unref() { unsafe uv_unref(uvHandle) }

    /// Runs `body` with the `Handle` whose `data` a libuv callback received, without retaining
    /// it: for the per-message callbacks (a retain and a release are two atomic operations).
    @inline(__always)
    static func with<T: Handle, R>(_ handle: UnsafeMutableRawPointer, as type: T.Type, _ body: (T) -> R) -> R {
        // Safe: as `from`; and libuv's reference (retainForCallbacks) is given back only in the
        // close callback, which never runs inside another callback of the same handle (uv_close
        // defers it to the loop's closing phase), so the object outlives `body`.
        let data = unsafe handle.assumingMemoryBound(to: uv_handle_t.self).pointee.data!
        return unsafe Unmanaged<T>.fromOpaque(data)._withUnsafeGuaranteedRef(body)
    }

    /// The `Handle` whose `data` a libuv callback received.
    @inline(__always)
    static func from<T: Handle>(_ handle: UnsafeMutableRawPointer, as type: T.Type) -> T {
        // Safe: libuv passes back the handle whose `data` retainForCallbacks() set, and the
        // reference stays valid until the close callback; T is the class that made the handle.
        let data = unsafe handle.assumingMemoryBound(to: uv_handle_t.self).pointee.data!
        return unsafe Unmanaged<T>.fromOpaque(data).takeUnretainedValue()
    }
}

/// Runs a closure after a timeout, once or repeatedly.
public final class Timer: Handle {
    private var body: ((Timer) -> Void)?

    public init(loop: EventLoop) throws(UVError) {
        super.init(loop: loop, type: UV_TIMER)
        // Safe: rawHandle holds uv_handle_size(UV_TIMER) bytes, allocated for this uv_timer_t
        // (and so in every use of it below).
        let status = unsafe uv_timer_init(loop.raw, rawHandle.assumingMemoryBound(to: uv_timer_t.self))
        if status < 0 {
            throw UVError(status, "uv_timer_init")
        }
        retainForCallbacks()
    }

    /// Starts (or restarts) the timer: `body` runs after `milliseconds`, then every `repeat`
    /// milliseconds if that is not 0.
    public func start(after milliseconds: UInt64, repeat: UInt64 = 0, _ body: @escaping (Timer) -> Void) {
        self.body = body
        unsafe uv_timer_start(rawHandle.assumingMemoryBound(to: uv_timer_t.self), { timer in
            // Safe: libuv passes back this timer, opened by this class (`Handle.from`).
            let object = unsafe Handle.from(UnsafeMutableRawPointer(timer!), as: Timer.self)
            object.body?(object)
        }, milliseconds, `repeat`)
    }

    public func stop() {
        // Safe: as in init; stopping a closed timer does nothing.
        unsafe uv_timer_stop(rawHandle.assumingMemoryBound(to: uv_timer_t.self))
    }

    override func didClose() { body = nil }
}

/// Runs `body` once per loop iteration while started: an idle handle (`uv_idle_t`) before
/// the poll, and while one is active the poll does not block; a check handle (`uv_check_t`)
/// right after the poll has delivered every I/O event that was ready.
final class PhaseHandle: Handle {
    enum Phase { case idle, check }
    let phase: Phase
    /// Set once by the owner; cleared at close (it may capture the owner).
    var body: (() -> Void)?

    init(loop: EventLoop, phase: Phase) throws(UVError) {
        self.phase = phase
        super.init(loop: loop, type: phase == .idle ? UV_IDLE : UV_CHECK)
        // Safe (both): rawHandle holds uv_handle_size() bytes of the handle type chosen just
        // above, allocated for it; only that type's functions touch it, here and below.
        let status = switch phase {
        case .idle: unsafe uv_idle_init(loop.raw, rawHandle.assumingMemoryBound(to: uv_idle_t.self))
        case .check: unsafe uv_check_init(loop.raw, rawHandle.assumingMemoryBound(to: uv_check_t.self))
        }
        if status < 0 {
            throw UVError(status, phase == .idle ? "uv_idle_init" : "uv_check_init")
        }
        retainForCallbacks()
    }

    /// Starts running `body` every iteration (starting a started handle does nothing). Not on a
    /// closing handle: unlike `uv_timer_start`, libuv's idle and check starts do not refuse one,
    /// and would queue memory that the close callback is about to free.
    func start() {
        guard !isClosing else { return }
        switch phase {
        case .idle:
            // Safe: an open uv_idle_t of this object (type invariant and the guard above).
            unsafe uv_idle_start(rawHandle.assumingMemoryBound(to: uv_idle_t.self), { idle in
                // Safe: libuv passes back this handle, opened by this class (`Handle.from`).
                unsafe Handle.from(UnsafeMutableRawPointer(idle!), as: PhaseHandle.self).body?()
            })
        case .check:
            // Safe: as for the idle handle, a uv_check_t.
            unsafe uv_check_start(rawHandle.assumingMemoryBound(to: uv_check_t.self), { check in
                // Safe: libuv passes back this handle, opened by this class (`Handle.from`).
                unsafe Handle.from(UnsafeMutableRawPointer(check!), as: PhaseHandle.self).body?()
            })
        }
    }

    /// Stopping a stopped or closed handle does nothing.
    func stop() {
        switch phase {
        // Safe (both): the handle's memory is live (type invariant); libuv only unlinks it.
        case .idle: unsafe uv_idle_stop(rawHandle.assumingMemoryBound(to: uv_idle_t.self))
        case .check: unsafe uv_check_stop(rawHandle.assumingMemoryBound(to: uv_check_t.self))
        }
    }

    override func didClose() { body = nil }
}

/// A `Timer` whose body runs after the poll that follows its expiry, not before it: by then the
/// loop has handled every I/O event that was ready when the deadline came (nginx's order:
/// events first, then expired timers). libuv runs timers before it polls, so a loop that
/// stalled in a callback past a deadline (a slow or overloaded machine, a sanitizer, a
/// debugger) would otherwise judge the deadline before seeing a connect that completed, or
/// bytes that arrived, in time. For deadline sweeps, where that order decides a verdict.
///
/// Close it before the last reference goes (as every handle): its handles hold it weakly.
public final class PostPollTimer {
    private let timer: Timer
    /// Keeps the poll after an expiry from blocking (until the next timer, a whole period).
    private let idle: PhaseHandle
    /// Runs the body after that poll.
    private let check: PhaseHandle
    private var body: (() -> Void)?

    public init(loop: EventLoop) throws(UVError) {
        timer = try Timer(loop: loop)
        do {
            idle = try PhaseHandle(loop: loop, phase: .idle)
        } catch {
            timer.close()
            throw error
        }
        do {
            check = try PhaseHandle(loop: loop, phase: .check)
        } catch {
            timer.close()
            idle.close()
            throw error
        }
        idle.body = {}
        check.body = { [weak self] in self?.fire() }
    }

    /// As `Timer.start`: `body` runs once per expiry, in the check phase right after the poll
    /// that follows the timers' run that found it expired. A restart (from the body too) keeps
    /// an expiry already waiting for its check phase: that run takes the new body.
    public func start(after milliseconds: UInt64, repeat: UInt64 = 0, _ body: @escaping () -> Void) {
        self.body = body
        timer.start(after: milliseconds, repeat: `repeat`) { [weak self] _ in self?.expired() }
    }

    private func expired() {
        idle.start()
        check.start()
    }

    private func fire() {
        idle.stop()
        check.stop()
        body?()
    }

    /// No further run, including one whose expiry is waiting for its check phase.
    public func stop() {
        timer.stop()
        idle.stop()
        check.stop()
    }

    public func close() {
        timer.close()
        idle.close()
        check.close()
        body = nil
    }
}

/// Runs a closure at an instant on the `EventLoop.hrtime()` clock, to within microseconds:
/// a Linux timerfd (CLOCK_MONOTONIC, the clock `uv_hrtime` reads) watched by a `uv_poll_t`.
/// libuv's own timers count whole milliseconds, too coarse to pace an open-loop client whose
/// latencies are tens of microseconds. One-shot; `arm(at:)` again from the closure to go on.
public final class PreciseTimer: Handle {
    private var body: ((PreciseTimer) -> Void)?
    /// The timerfd; closed in the close callback, after libuv has stopped watching it.
    private let fd: Int32
    /// The instant it is armed for; 0 when disarmed or fired.
    public private(set) var deadline: UInt64 = 0

    public init(loop: EventLoop, _ body: @escaping (PreciseTimer) -> Void) throws(UVError) {
        let fd = fastalloc_timerfd_create()
        if fd < 0 {
            throw UVError(fd, "timerfd_create")
        }
        self.fd = fd
        self.body = body
        super.init(loop: loop, type: UV_POLL)
        // Safe: rawHandle holds uv_handle_size(UV_POLL) bytes, allocated for this uv_poll_t.
        let handle = unsafe rawHandle.assumingMemoryBound(to: uv_poll_t.self)
        var status = unsafe uv_poll_init(loop.raw, handle, fd)
        if status < 0 {
            Glibc.close(fd)  // libuv never saw the handle: nothing else closes the fd
            throw UVError(status, "uv_poll_init")
        }
        retainForCallbacks()
        status = unsafe uv_poll_start(handle, Int32(UV_READABLE.rawValue), { poll, _, _ in
            // Safe: libuv passes back this poll handle, opened by this class (`Handle.from`).
            let object = unsafe Handle.from(UnsafeMutableRawPointer(poll!), as: PreciseTimer.self)
            guard fastalloc_timerfd_consume(object.fd) > 0 else { return }  // re-armed before it ran
            object.deadline = 0
            object.body?(object)
        })
        if status < 0 {
            close()
            throw UVError(status, "uv_poll_start")
        }
    }

    /// Fires once at `deadline` (nanoseconds of `EventLoop.hrtime()`), replacing an earlier
    /// arming; a deadline already past fires on the loop's next turn.
    public func arm(at deadline: UInt64) {
        guard !isClosing else { return }
        let instant = max(deadline, 1)  // 0 would disarm
        if instant != self.deadline && fastalloc_timerfd_arm(fd, instant) == 0 { self.deadline = instant }
    }

    public func disarm() {
        guard !isClosing else { return }
        _ = fastalloc_timerfd_arm(fd, 0)
        deadline = 0
    }

    override func didClose() {
        body = nil
        Glibc.close(fd)
    }
}

/// Wakes its loop from another thread: `send()` is the one call that may come from anywhere, at
/// any time, also after `close()` (then it does nothing); the closure runs on the loop's thread
/// (several sends may coalesce into one run).
///
/// Why the lock: libuv's `uv_async_send` is thread-safe, but calling it on a handle that is
/// closing or closed is undefined behaviour by libuv's documentation (1.44 still writes the
/// loop's wake-up descriptor, waking the loop for nothing; a later libuv may do worse).
/// `close()` sets `sendsEnded` under the lock before `uv_close`, so a send either finished
/// before the close began or sees the flag and returns.
public final class AsyncWake: Handle, @unchecked Sendable {
    // @unchecked Sendable: other threads call only send(), which touches `sendsEnded` under
    // `sendLock` and then uv_async_send (thread-safe by libuv's documentation) on a handle that
    // is not closed yet; everything else happens on the loop's thread.
    private var body: ((AsyncWake) -> Void)?
    private let sendLock = _PThreadMutex()
    /// Set once, by close(), under `sendLock`: no send reaches libuv after it.
    private var sendsEnded = false

    public init(loop: EventLoop, _ body: @escaping (AsyncWake) -> Void) throws(UVError) {
        self.body = body
        super.init(loop: loop, type: UV_ASYNC)
        // Safe: rawHandle holds uv_handle_size(UV_ASYNC) bytes, allocated for this uv_async_t;
        // the callback gets back this handle, opened by this class (`Handle.from`).
        let status = unsafe uv_async_init(loop.raw, rawHandle.assumingMemoryBound(to: uv_async_t.self), { async in
            let object = unsafe Handle.from(UnsafeMutableRawPointer(async!), as: AsyncWake.self)
            object.body?(object)
        })
        if status < 0 {
            throw UVError(status, "uv_async_init")
        }
        retainForCallbacks()
    }

    deinit {
        // Safe: a sender holds a reference to this object for the whole of send(), so no send is
        // inside the lock when the last reference goes. Nothing uses the lock after this.
        unsafe sendLock.destroy()
    }

    /// Wakes the loop; any thread, any time. After `close()` it does nothing.
    public func send() {
        sendLock.lock()
        if !sendsEnded {
            // Safe: the handle is initialised and close() has not begun (it waits for this lock).
            unsafe uv_async_send(rawHandle.assumingMemoryBound(to: uv_async_t.self))
        }
        sendLock.unlock()
    }

    /// Closes the handle; loop thread. Sends from now on do nothing; one in progress on another
    /// thread finishes first.
    public override func close() {
        sendLock.lock()
        sendsEnded = true
        sendLock.unlock()
        super.close()
    }

    override func didClose() { body = nil }
}

/// A `pthread_mutex_t` in its own allocation (a pthread mutex must not move). Chosen over
/// `Synchronization.Mutex` for its cost (about 6 ns per lock+unlock measured here against about
/// 36 ns) and because ThreadSanitizer sees it (it does not see Mutex's futex on Linux).
/// Copies share the mutex; `destroy()` ends it.
///
/// Memory safety: `@safe` on the invariant that `mutex` points to an initialised mutex, at an
/// address that never changes, from `init` until `destroy()`, which is `@unsafe` and called
/// once, by the owner, after every use of every copy.
@safe
struct _PThreadMutex {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        unsafe mutex = .allocate(capacity: 1)
        // Safe: freshly allocated, initialised once here, destroyed once in destroy().
        unsafe pthread_mutex_init(mutex, nil)
    }

    /// Nobody may hold or wait for the mutex.
    ///
    /// `@unsafe`: every copy of the mutex dangles afterwards. Callers: once, as the last use.
    @unsafe
    func destroy() {
        // Safe: called once, with nobody holding or waiting (the caller's promise).
        unsafe pthread_mutex_destroy(mutex)
        unsafe mutex.deallocate()
    }

    // Safe (both): the mutex is live until destroy() (type invariant).
    func lock() { unsafe pthread_mutex_lock(mutex) }
    func unlock() { unsafe pthread_mutex_unlock(mutex) }
}

/// Runs a closure on the loop's thread when a signal arrives.
public final class SignalWatcher: Handle {
    private var body: ((SignalWatcher, Int32) -> Void)?

    public init(loop: EventLoop, signal: Int32, _ body: @escaping (SignalWatcher, Int32) -> Void) throws(UVError) {
        self.body = body
        super.init(loop: loop, type: UV_SIGNAL)
        // Safe: rawHandle holds uv_handle_size(UV_SIGNAL) bytes, allocated for this uv_signal_t.
        let handle = unsafe rawHandle.assumingMemoryBound(to: uv_signal_t.self)
        var status = unsafe uv_signal_init(loop.raw, handle)
        if status < 0 {
            throw UVError(status, "uv_signal_init")
        }
        retainForCallbacks()
        status = unsafe uv_signal_start(handle, { signal, number in
            // Safe: libuv passes back this signal handle, opened by this class (`Handle.from`).
            let object = unsafe Handle.from(UnsafeMutableRawPointer(signal!), as: SignalWatcher.self)
            object.body?(object, number)
        }, signal)
        if status < 0 {
            close()
            throw UVError(status, "uv_signal_start \(signal)")
        }
    }

    override func didClose() { body = nil }
}

/// Watches a directory for changes (libuv's fs event: inotify on Linux): `body` runs on the loop
/// with the name of the entry that changed, when the kernel gives one. A directory, not a file:
/// a file replaced by a rename (an editor's save, a Kubernetes ConfigMap's `..data` symlink
/// swap) is a new inode, which a watch on the old one never reports.
public final class DirectoryWatcher: Handle {
    private var body: ((DirectoryWatcher, String?) -> Void)?

    public init(loop: EventLoop, directory: String, _ body: @escaping (DirectoryWatcher, String?) -> Void) throws(UVError) {
        self.body = body
        super.init(loop: loop, type: UV_FS_EVENT)
        // Safe: rawHandle holds uv_handle_size(UV_FS_EVENT) bytes, allocated for this uv_fs_event_t.
        let handle = unsafe rawHandle.assumingMemoryBound(to: uv_fs_event_t.self)
        var status = unsafe uv_fs_event_init(loop.raw, handle)
        if status < 0 {
            throw UVError(status, "uv_fs_event_init")
        }
        retainForCallbacks()
        status = unsafe uv_fs_event_start(handle, { event, name, _, _ in
            // Safe: libuv passes back this handle, opened by this class (`Handle.from`); `name`,
            // when present, is a NUL-terminated string valid during the callback (copied here).
            let object = unsafe Handle.from(UnsafeMutableRawPointer(event!), as: DirectoryWatcher.self)
            let entry = unsafe name.map { unsafe String(cString: $0) }
            object.body?(object, entry)
        }, directory, 0)
        if status < 0 {
            close()
            throw UVError(status, "watch \(directory)")
        }
    }

    override func didClose() { body = nil }
}
