import CLibUV
import FastAlloc
#if canImport(Glibc)
import Glibc
#endif

/// A libuv loop owned by one thread: every handle made on it, and every call on those handles,
/// belongs to that thread (only `AsyncWake.send()` may be called from others).
///
/// Handles are classes that keep themselves alive while libuv holds them: from creation until
/// their close callback, which is also where their C memory is freed.
///
/// Memory safety: `@safe` on the invariant that `raw` points to an initialised `uv_loop_t` from
/// `init` until `deinit`, which frees it only once `uv_loop_close` succeeded (no handle or request
/// left in it). Every handle holds its loop strongly, and libuv holds every open handle (its
/// `data`), so the loop outlives every handle and request that points into it. Every `unsafe`
/// below relies on that; calls come on the loop's one thread.
@safe
public final class EventLoop {
    @usableFromInline let raw: UnsafeMutablePointer<uv_loop_t>
    /// Write requests, pooled: a queued write takes one and its completion returns it, so
    /// writing costs no heap allocation once the pool has grown to the peak of queued writes.
    let writeRequests: ThreadLocalPool<_WriteRequest>

    public init() throws(UVError) {
        _ = TCPStream.requestLayoutChecked
        // Safe: a new allocation for one uv_loop_t, initialised by uv_loop_init; freed here if
        // that fails (the loop was never initialised), otherwise in deinit.
        unsafe raw = .allocate(capacity: 1)
        let status = unsafe uv_loop_init(raw)
        if status < 0 {
            unsafe raw.deallocate()
            throw UVError(status, "uv_loop_init")
        }
        writeRequests = try! ThreadLocalPool(config: PoolConfig(
            capacity: 64, growth: .exponential(2), maxCapacity: 1 << 20, name: "uv-write-requests"))
    }

    deinit {
        // Every owner closes its handles and runs the loop once more (their close callbacks
        // free them) before it lets the loop go; a handle still open makes uv_loop_close fail.
        // Safe: the loop is initialised (type invariant); freed only when it closed.
        let status = unsafe uv_loop_close(raw)
        if status == 0 {
            unsafe raw.deallocate()
        }  // else: a handle is still open and points into the loop; leave the memory to it.
    }

    // Safe (run, runOnce, stop, nowMilliseconds): `raw` is a live, initialised loop (type
    // invariant), used on its own thread.

    /// Runs until nothing is left to do or `stop()` is called.
    public func run() {
        unsafe uv_run(raw, UV_RUN_DEFAULT)
    }

    /// Runs one iteration; with `wait`, blocks for I/O if there is nothing ready.
    @discardableResult
    public func runOnce(wait: Bool = true) -> Bool {
        unsafe uv_run(raw, wait ? UV_RUN_ONCE : UV_RUN_NOWAIT) != 0
    }

    /// Makes `run()` return after the current iteration.
    public func stop() {
        unsafe uv_stop(raw)
    }

    /// The loop's cached time in milliseconds. Inlinable: read on every message, where a call
    /// across modules also retained and released the loop around it.
    @inlinable
    public var nowMilliseconds: UInt64 { unsafe uv_now(raw) }

    /// A monotonic clock in nanoseconds (`uv_hrtime`).
    @inlinable
    public static func hrtime() -> UInt64 { uv_hrtime() }
}

@available(*, unavailable, message: "an EventLoop belongs to one thread")
extension EventLoop: Sendable {}
