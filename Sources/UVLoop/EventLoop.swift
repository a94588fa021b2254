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
public final class EventLoop {
    let raw: UnsafeMutablePointer<uv_loop_t>
    /// Write requests, pooled: a queued write takes one and its completion returns it, so
    /// writing costs no heap allocation once the pool has grown to the peak of queued writes.
    let writeRequests: ThreadLocalPool<_WriteRequest>

    public init() throws(UVError) {
        _ = TCPStream.requestLayoutChecked
        raw = .allocate(capacity: 1)
        let status = uv_loop_init(raw)
        if status < 0 {
            raw.deallocate()
            throw UVError(status, "uv_loop_init")
        }
        writeRequests = try! ThreadLocalPool(config: PoolConfig(
            capacity: 64, growth: .exponential(2), maxCapacity: 1 << 20, name: "uv-write-requests"))
    }

    deinit {
        // Every owner closes its handles and runs the loop once more (their close callbacks
        // free them) before it lets the loop go; a handle still open makes uv_loop_close fail.
        let status = uv_loop_close(raw)
        if status == 0 {
            raw.deallocate()
        }  // else: a handle is still open and points into the loop; leave the memory to it.
    }

    /// Runs until nothing is left to do or `stop()` is called.
    public func run() {
        uv_run(raw, UV_RUN_DEFAULT)
    }

    /// Runs one iteration; with `wait`, blocks for I/O if there is nothing ready.
    @discardableResult
    public func runOnce(wait: Bool = true) -> Bool {
        uv_run(raw, wait ? UV_RUN_ONCE : UV_RUN_NOWAIT) != 0
    }

    /// Makes `run()` return after the current iteration.
    public func stop() {
        uv_stop(raw)
    }

    /// The loop's cached time in milliseconds.
    public var nowMilliseconds: UInt64 { uv_now(raw) }

    /// A monotonic clock in nanoseconds (`uv_hrtime`).
    @inlinable
    public static func hrtime() -> UInt64 { uv_hrtime() }
}

@available(*, unavailable, message: "an EventLoop belongs to one thread")
extension EventLoop: Sendable {}
