import CLibUV
import FastAlloc
#if canImport(Glibc)
import Glibc
#endif

/// What a `TCPStream` tells its owner: subclass it and override what you need. All calls come
/// on the loop's thread.
///
/// A class, not a protocol: the stream calls its delegate twice per read without retaining it
/// (`Unmanaged`, see `TCPStream.delegate`), and only a class reference can be held that way. A
/// protocol existential loaded from the stream's property cost a retain and a release per call.
open class TCPStreamDelegate {
    public init() {}

    /// The memory the next read goes into (libuv's `alloc_cb`). Return an empty buffer to read
    /// nothing now: libuv then reports `UV_ENOBUFS` to `didRead`. The default lends nothing.
    open func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        unsafe UnsafeMutableRawBufferPointer(start: nil, count: 0)  // Safe: empty, points nowhere.
    }
    /// A read finished (libuv's `read_cb`): `count > 0` bytes arrived at the start of `buffer`;
    /// `count == 0` nothing did; `count < 0` is a libuv error code (`UVError.endOfFile` at the
    /// end of the stream). On every path `buffer` is the one `readBuffer` gave, back to its owner,
    /// or an empty one (nil base address) that nobody lent: libuv reports the end of a stream it
    /// saw in a hang-up after a partial read (`UVError.endOfFile`) without asking for memory.
    open func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {}
    /// A queued write finished (or failed, with a negative status).
    open func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {}
    /// `connect(to:)` finished: 0, or a negative libuv status.
    open func stream(_ stream: TCPStream, didConnect status: Int32) {}
    /// `shutdown()` finished.
    open func stream(_ stream: TCPStream, didShutdown status: Int32) {}
    /// The handle is closed; its memory is gone.
    open func streamDidClose(_ stream: TCPStream) {}
}

/// A pooled write request: `req` must stay the first field, so that the request libuv hands to
/// the write callback is also the address of the whole record.
///
/// `@safe`: a plain record. `uv_write_t` holds C pointers, so every use of `req` is marked; libuv
/// fills it in `uv_write` and is done with it when the write callback runs.
@safe
struct _WriteRequest {
    // Safe: all zeroes (its pointers nil) until uv_write fills it in.
    var req = unsafe uv_write_t()
    var token: UInt = 0
}

/// A TCP connection on a loop.
///
/// Memory safety: `@safe` on `Handle`'s invariant (its `rawHandle` is this `uv_tcp_t`), and on
/// these: `connectRequest` and `shutdownRequest`, once made, belong to the stream until its
/// deinit, which cannot come while one is pending (libuv holds the open stream, and cancels its
/// requests before the close callback); libuv refuses a second connect or shutdown while one is
/// pending (`UV_EALREADY`, `UV_ENOTCONN`) before it touches the request, so one of each is enough.
@safe
public final class TCPStream: Handle {
    // These two first: they fill the bytes after `Handle`'s flags, which a word-sized field
    // would skip (a subclass's stored properties start where its superclass's end, each at its
    // own alignment), so a stream takes 80 bytes, not 89: a smaller allocation per connection.
    /// A connect is under way (`connect(to:)` until its callback): not yet a stream to shut down.
    private var connecting = false
    /// How deep the delegate calls in progress are nested (see `delegate`).
    @exclusivity(unchecked) private var callbackDepth: Int32 = 0

    /// Strong, so the owner lives while the stream does; dropped when the stream closes.
    ///
    /// Callbacks reach it through `delegateReference`, unretained (`callDelegate`). A delegate
    /// replaced while one of its own calls runs (a PROXY header reader handing the stream to
    /// its session) is kept in `retiredDelegates` until that call has returned, so the
    /// reference a running call uses stays valid.
    ///
    /// Unchecked exclusivity (these four): touched in every read callback, where a dynamic
    /// check costs a runtime call and a thread-local lookup. Safe (every `unsafe` on them): the
    /// stream belongs to its loop's thread, and no access to them spans a call.
    @exclusivity(unchecked) public var delegate: TCPStreamDelegate? {
        willSet {
            if unsafe callbackDepth > 0, let current = unsafe delegate { unsafe retiredDelegates.append(current) }
        }
        didSet {
            unsafe delegateReference = unsafe delegate.map { unsafe Unmanaged.passUnretained($0) }
        }
    }
    @exclusivity(unchecked) private var delegateReference: Unmanaged<TCPStreamDelegate>?
    @exclusivity(unchecked) private var retiredDelegates: [TCPStreamDelegate] = []

    /// Calls the delegate (`otherwise` when there is none) without retaining it.
    @inline(__always)
    func callDelegate<R>(otherwise: R, _ body: (TCPStreamDelegate) -> R) -> R {
        guard let reference = unsafe delegateReference else { return otherwise }
        unsafe callbackDepth += 1
        // Safe: `delegate` holds the object strongly, and if the call replaces it, the willSet
        // above keeps the old one in `retiredDelegates` until the outermost call has returned.
        let result = unsafe reference._withUnsafeGuaranteedRef(body)
        unsafe callbackDepth -= 1
        if unsafe callbackDepth == 0 && !retiredDelegates.isEmpty {
            unsafe retiredDelegates.removeAll(keepingCapacity: true)
        }
        return result
    }

    /// The connect and shutdown requests, made on first use and kept with the stream (at most
    /// one of each is pending at a time), so a reused stream allocates nothing.
    private var connectRequest: UnsafeMutablePointer<uv_connect_t>?
    private var shutdownRequest: UnsafeMutablePointer<uv_shutdown_t>?

    // Safe (both): rawHandle was allocated for this uv_tcp_t, which begins with uv_stream_t's
    // fields (libuv's documented layout).
    var tcp: UnsafeMutablePointer<uv_tcp_t> { unsafe rawHandle.assumingMemoryBound(to: uv_tcp_t.self) }
    var stream: UnsafeMutablePointer<uv_stream_t> { unsafe rawHandle.assumingMemoryBound(to: uv_stream_t.self) }

    public init(loop: EventLoop) throws(UVError) {
        super.init(loop: loop, type: UV_TCP)
        // Safe: rawHandle holds uv_handle_size(UV_TCP) bytes, allocated for this uv_tcp_t.
        let status = unsafe uv_tcp_init(loop.raw, rawHandle.assumingMemoryBound(to: uv_tcp_t.self))
        if status < 0 {
            throw UVError(status, "uv_tcp_init")
        }
        retainForCallbacks()
    }

    deinit {
        // Safe: no request is pending (type invariant), and nothing else points to them.
        unsafe connectRequest?.deallocate()
        unsafe shutdownRequest?.deallocate()
    }

    /// Makes a closed stream a new, unconnected TCP handle on the same loop, reusing the object,
    /// its handle memory and its requests (a server keeps closed streams for its next accepts).
    public func reopen() throws(UVError) {
        resetAfterClose()
        connecting = false
        // Safe: the handle is closed (checked above): libuv holds nothing of it, and its
        // memory may be initialised again.
        let status = unsafe uv_tcp_init(loop.raw, tcp)
        if status < 0 {
            // Not initialised: nothing for libuv to close; mark it closed again for the pool.
            markClosedWithoutInit()
            throw UVError(status, "uv_tcp_init")
        }
        retainForCallbacks()
    }

    override func didClose() {
        let delegate = unsafe self.delegate
        unsafe self.delegate = nil
        delegate?.streamDidClose(self)
    }

    /// Connects to `address`; the result goes to `stream(_:didConnect:)`.
    public func connect(to address: SocketAddress) throws(UVError) {
        // Safe: the request is the stream's own (type invariant); libuv fills it in.
        let request = unsafe connectRequest ?? .allocate(capacity: 1)  // kept with the stream
        unsafe connectRequest = request
        let status = try unsafe address.withSockaddr { (sockaddr) throws(UVError) -> Int32 in
            // Safe: libuv copies the address during the call.
            unsafe uv_tcp_connect(request, tcp, sockaddr, { request, status in
                // Safe: libuv calls this once per request with the stream it was made for, before
                // that stream's close callback; the request memory belongs to the stream.
                let stream = unsafe Handle.from(UnsafeMutableRawPointer(request!.pointee.handle!), as: TCPStream.self)
                stream.connecting = false
                stream.callDelegate(otherwise: ()) { $0.stream(stream, didConnect: status) }
            })
        }
        if status < 0 {
            throw UVError(status, "connect \(address)")
        }
        connecting = true
    }

    /// Starts reading: each read asks the delegate for memory, then reports what arrived. On a
    /// stream that is already reading it does nothing (libuv's `UV_EALREADY`), so an owner may
    /// start reading early, with the connect (`Worker.connectUpstream`), and again where it
    /// would have started.
    ///
    /// Allowed while a connect is pending: libuv registers the socket for both directions in one
    /// epoll_ctl, and no read comes before the connect callback (libuv completes a pending
    /// connect first, and an unconnected socket has nothing to read).
    public func startReading() throws(UVError) {
        let status = unsafe uv_read_start(stream, { handle, suggested, buffer in
            // Safe: libuv passes back this stream (`Handle.from`) and a uv_buf_t to fill in; the
            // delegate lends the memory until the read callback hands it back.
            let memory = unsafe Handle.with(UnsafeMutableRawPointer(handle!), as: TCPStream.self) { stream in
                unsafe stream.callDelegate(otherwise: UnsafeMutableRawBufferPointer(start: nil, count: 0)) {
                    unsafe $0.readBuffer(for: stream, suggestedSize: Int(suggested))
                }
            }
            unsafe buffer!.pointee = uv_buf_init(memory.baseAddress?.assumingMemoryBound(to: CChar.self), UInt32(memory.count))
        }, { handle, count, buffer in
            // Safe: `buffer` is what the alloc callback above filled in for this read, or {NULL, 0}
            // (libuv's end of stream after a hang-up); either makes a valid buffer pointer.
            let memory = unsafe UnsafeMutableRawBufferPointer(start: buffer!.pointee.base, count: Int(buffer!.pointee.len))
            unsafe Handle.with(UnsafeMutableRawPointer(handle!), as: TCPStream.self) { stream in
                stream.callDelegate(otherwise: ()) { unsafe $0.stream(stream, didRead: count, into: memory) }
            }
        })
        if status == Int32(UV_EALREADY.rawValue) { return }
        try UVError.check(status, "uv_read_start")
    }

    /// Copies up to `buffer.count` bytes the socket holds into `buffer` without taking them
    /// (recv with MSG_PEEK), outside libuv's reading: for a protocol header whose length is
    /// known only from its bytes. Returns the count, 0 at the end of the stream, or a negative
    /// UV error (`UV_EAGAIN`: nothing there now).
    public func peek(into buffer: inout [UInt8]) -> Int {
        receive(into: &buffer, upTo: buffer.count, flags: Int32(MSG_PEEK))
    }

    /// Takes up to `buffer.count` bytes from the socket into `buffer` (recv), outside libuv's
    /// reading: only what `peek` showed to be a header's, so that nothing after it is taken.
    /// At most `limit` bytes (at most `buffer.count`) when given. Returns as `peek`.
    public func receive(into buffer: inout [UInt8], upTo limit: Int? = nil) -> Int {
        receive(into: &buffer, upTo: min(limit ?? buffer.count, buffer.count), flags: 0)
    }

    private func receive(into buffer: inout [UInt8], upTo count: Int, flags: Int32) -> Int {
        var fd = uv_os_fd_t()
        // Safe: the handle is open (uv_fileno fails on a closed one); `fd` is read during the call.
        guard unsafe uv_fileno(uvHandle, &fd) == 0 else { return Int(UV_EBADF.rawValue) }
        precondition(count >= 0 && count <= buffer.count)
        let got = buffer.withUnsafeMutableBytes { bytes in
            // Safe: recv writes at most `count` bytes, at most the array's length (checked
            // above), into the array's own storage, which the closure holds for the call.
            unsafe recv(fd, bytes.baseAddress, count, flags | Int32(MSG_DONTWAIT))
        }
        if got >= 0 { return got }
        return Int(uv_translate_sys_error(errno))
    }

    /// Stops reading (backpressure); `startReading()` resumes.
    public func stopReading() {
        // Safe: the handle memory is live (Handle's invariant); a stream not reading is left as is.
        unsafe uv_read_stop(stream)
    }

    /// Writes `bytes`: as much as the socket takes now (`uv_try_write`), the rest queued
    /// (`uv_write`). Returns how many bytes were queued: 0 when everything went out now;
    /// otherwise a queued write will report to `stream(_:didFinishWrite:status:)` with `token`.
    /// When it throws, nothing was queued and no completion will come.
    ///
    /// Unsafe: the bytes must stay valid and unchanged until that completion.
    public func write(unsafeBytes bytes: UnsafeRawBufferPointer, token: UInt) throws(UVError) -> Int {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return 0 }
        // Safe: libuv only reads the bytes (uv_buf_t's base is not const), and the caller keeps
        // them valid until the completion (the rule above); `buffer` is read during the call.
        var buffer = unsafe uv_buf_init(UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: CChar.self)), UInt32(bytes.count))
        let written = unsafe uv_try_write(stream, &buffer, 1)
        if written == Int32(bytes.count) { return 0 }
        if written < 0 && written != Int32(UV_EAGAIN.rawValue) {
            throw UVError(written, "write")
        }
        let done = Int(max(written, 0))
        // Safe: the slot is released once, by the write callback or below if uv_write fails.
        guard let request = unsafe loop.writeRequests.unsafeAcquire(_WriteRequest(token: token)) else {
            throw UVError(Int32(UV_ENOMEM.rawValue), "write request pool exhausted")
        }
        var rest = unsafe uv_buf_init(UnsafeMutablePointer(mutating: (base + done).assumingMemoryBound(to: CChar.self)), UInt32(bytes.count - done))
        // Safe: `req` is the first field of the pooled record (checked once below), so the
        // record's address is the request's, and the callback can turn the request back into
        // the record. libuv copies `rest` during the call and keeps `req` until the callback;
        // so `req` is taken from the record itself, not from `withUnsafeMutablePointer(to:
        // &request.pointee.req)`, whose pointer is valid only inside its closure.
        let req = unsafe UnsafeMutableRawPointer(request).assumingMemoryBound(to: uv_write_t.self)
        let status = unsafe uv_write(req, stream, &rest, 1, { req, status in
            // Safe: libuv calls this once per request, with the stream it was made for, before
            // that stream's close callback; the record is a live slot of the loop's pool until
            // it is released here, once, after its token is read.
            let record = unsafe UnsafeMutableRawPointer(req!).assumingMemoryBound(to: _WriteRequest.self)
            let stream = unsafe Handle.from(UnsafeMutableRawPointer(req!.pointee.handle!), as: TCPStream.self)
            let token = unsafe record.pointee.token
            unsafe stream.loop.writeRequests.unsafeRelease(record)
            stream.callDelegate(otherwise: ()) { $0.stream(stream, didFinishWrite: token, status: status) }
        })
        if status < 0 {
            // Safe: libuv did not take the request, so no callback will release it.
            unsafe loop.writeRequests.unsafeRelease(request)
            throw UVError(status, "uv_write")
        }
        return bytes.count - done
    }

    /// Bytes queued for writing and not yet sent.
    // Safe: reads a field of the live handle (Handle's invariant).
    public var queuedWriteBytes: Int { unsafe uv_stream_get_write_queue_size(stream) }

    /// Closes the write side once queued writes are done; reports to `stream(_:didShutdown:)`.
    public func shutdown() throws(UVError) {
        // Safe: the request is the stream's own (type invariant); libuv fills it in.
        let request = unsafe shutdownRequest ?? .allocate(capacity: 1)  // kept with the stream
        unsafe shutdownRequest = request
        let status = unsafe uv_shutdown(request, stream, { request, status in
            // Safe: called once per request, with the stream it was made for, before that
            // stream's close callback; the request memory belongs to the stream.
            let stream = unsafe Handle.from(UnsafeMutableRawPointer(request!.pointee.handle!), as: TCPStream.self)
            stream.callDelegate(otherwise: ()) { $0.stream(stream, didShutdown: status) }
        })
        if status < 0 {
            throw UVError(status, "uv_shutdown")
        }
    }

    /// Sends the FIN now (shutdown(2) of the write side) when nothing is queued for writing, and
    /// returns true: no `stream(_:didShutdown:)` comes for it. With writes queued it does nothing
    /// and returns false; `shutdown()` then sends the FIN after them.
    ///
    /// Why: libuv's `uv_shutdown` always waits for a writable event before it calls shutdown(2),
    /// even with nothing queued, which costs a loop turn and two epoll_ctl (writable on, then off
    /// again) per shut-down connection. With nothing queued every byte written is already in the
    /// kernel, which sends the FIN after them, so the order on the wire is the same.
    ///
    /// The caller must not write to the stream afterwards (libuv does not know it is shut; a
    /// write would fail with EPIPE) nor call `shutdown()`.
    public func shutdownIfNothingQueued() throws(UVError) -> Bool {
        guard !isClosing, !connecting, queuedWriteBytes == 0 else { return false }
        var fd = uv_os_fd_t()
        // Safe: the handle is open (not closing; uv_fileno fails on a closed one); `fd` is read
        // during the call.
        guard unsafe uv_fileno(uvHandle, &fd) == 0 else { return false }
        if Glibc.shutdown(fd, Int32(SHUT_WR)) != 0 {
            throw UVError(uv_translate_sys_error(errno), "shutdown")
        }
        return true
    }

    /// Closes with a reset instead of a FIN: SO_LINGER with a zero timeout, then `close()`. The
    /// peer's next read fails with ECONNRESET, so a connection cut short is never mistaken for
    /// a complete stream. Queued writes and a pending shutdown are cancelled (ECANCELED), as
    /// with `close()`. (libuv's uv_tcp_close_reset refuses while a shutdown is pending; this
    /// does not.)
    public func reset() {
        guard !isClosing else { return }
        var fd = uv_os_fd_t()
        // Safe: the handle is open (not closing); `fd` and `linger` are read during the calls.
        if unsafe uv_fileno(uvHandle, &fd) == 0 {
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            unsafe setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        }
        close()
    }

    /// Sets `options` on the socket (see `TCPSocketOptions`), in one setsockopt per setting.
    public func apply(_ options: TCPSocketOptions) throws(UVError) {
        try applySocketOptions(options)
    }

    /// Sends small writes at once (TCP_NODELAY).
    public func setNoDelay(_ on: Bool) {
        // Safe: the handle memory is live (Handle's invariant); on a closed handle (no socket)
        // libuv only records the setting.
        unsafe uv_tcp_nodelay(tcp, on ? 1 : 0)
    }

    static let requestLayoutChecked: Bool = {
        // `unsafe` for naming `req`, whose type is unsafe: nothing is accessed.
        unsafe precondition(MemoryLayout<_WriteRequest>.offset(of: \_WriteRequest.req) == 0, "uv_write_t must come first")
        return true
    }()
}

/// Socket options of a TCP connection.
public struct TCPSocketOptions: Sendable, Equatable {
    /// Small writes go out at once (TCP_NODELAY).
    public var noDelay: Bool
    /// TCP keepalive: probes start after `keepAliveSeconds` of silence (0: off), then one every
    /// `keepAliveInterval` seconds, and after `keepAliveProbes` unanswered ones the connection
    /// fails (ETIMEDOUT), so a peer that vanished without a FIN or reset is found even while
    /// nothing is queued to it.
    public var keepAliveSeconds: UInt32
    public var keepAliveInterval: Int32
    public var keepAliveProbes: Int32

    /// Nothing set: the system's defaults (Nagle on, keepalive off).
    public init(noDelay: Bool = false, keepAliveSeconds: UInt32 = 0, keepAliveInterval: Int32 = 10, keepAliveProbes: Int32 = 6) {
        self.noDelay = noDelay
        self.keepAliveSeconds = keepAliveSeconds
        self.keepAliveInterval = keepAliveInterval
        self.keepAliveProbes = keepAliveProbes
    }

    var isDefault: Bool { !noDelay && keepAliveSeconds == 0 }

    /// The earliest keepalive can end a connection whose peer vanished, in milliseconds after
    /// the socket fell silent: the idle time, then every probe unanswered. nil when it is off.
    public var detectionMilliseconds: UInt64? {
        guard keepAliveSeconds > 0 else { return nil }
        let probing = UInt64(max(0, keepAliveInterval)) * UInt64(max(0, keepAliveProbes))
        return (UInt64(keepAliveSeconds) + probing) * 1000
    }
}

extension Handle {
    /// Sets `options` on this TCP handle's socket (a stream or a listener). Must be a TCP
    /// handle with a socket (open, connected, connecting or bound).
    func applySocketOptions(_ options: TCPSocketOptions) throws(UVError) {
        guard !options.isDefault else { return }
        // Safe: the handle memory is live (Handle's invariant) and is a uv_tcp_t (both callers
        // are TCP handles); the shim reads the socket with uv_fileno and fails on a handle
        // without one.
        let status = unsafe fastalloc_uv_tcp_options(rawHandle.assumingMemoryBound(to: uv_tcp_t.self),
                                                     options.noDelay ? 1 : 0, Int32(clamping: options.keepAliveSeconds),
                                                     options.keepAliveInterval, options.keepAliveProbes)
        try UVError.check(status, "setsockopt")
    }
}

/// What a `TCPListener` tells its owner.
public protocol TCPListenerDelegate: AnyObject {
    /// A new connection, already accepted; set its delegate and start reading.
    func listener(_ listener: TCPListener, didAccept stream: TCPStream)
    /// Accepting failed (for example out of file descriptors); the listener keeps listening.
    func listener(_ listener: TCPListener, acceptFailed error: UVError)
    /// The stream the next accepted connection goes into: by default a new one; a server may
    /// hand back a closed stream it kept (`reopen()`ed), so accepting allocates nothing.
    func streamForAccept(_ listener: TCPListener) throws(UVError) -> TCPStream
}

extension TCPListenerDelegate {
    public func streamForAccept(_ listener: TCPListener) throws(UVError) -> TCPStream {
        try TCPStream(loop: listener.loop)
    }
}

/// A listening TCP socket.
public final class TCPListener: Handle {
    /// Unchecked exclusivity: read several times per accepted connection; the listener belongs
    /// to its loop's thread, and no access spans a call (each read copies the reference).
    @exclusivity(unchecked) public var delegate: (any TCPListenerDelegate)?

    /// Binds `address` and listens. With `reusePort`, several listeners (one per worker loop)
    /// may bind the same address and the kernel spreads connections across them.
    ///
    /// `acceptedOptions` are set once, on the listening socket: Linux copies TCP_NODELAY and
    /// the keepalive settings into every socket it accepts, so accepting costs no setsockopt.
    /// With `acceptNow` false the socket is bound but not listening until `startAccepting()`.
    public init(loop: EventLoop, address: SocketAddress, reusePort: Bool = false, backlog: Int32 = 1024,
                acceptedOptions: TCPSocketOptions = TCPSocketOptions(), acceptNow: Bool = true) throws(UVError) {
        super.init(loop: loop, type: UV_TCP)
        // Safe: rawHandle holds uv_handle_size(UV_TCP) bytes, allocated for this uv_tcp_t (and
        // so in every use of it below); libuv copies the address during uv_tcp_bind.
        let tcp = unsafe rawHandle.assumingMemoryBound(to: uv_tcp_t.self)
        let status = unsafe uv_tcp_init_ex(loop.raw, tcp, UInt32(address.family.cValue))
        if status < 0 {
            throw UVError(status, "uv_tcp_init_ex")
        }
        retainForCallbacks()
        do {
            if reusePort {
                try unsafe UVError.check(fastalloc_uv_tcp_reuseport(tcp), "SO_REUSEPORT on \(address)")
            }
            try applySocketOptions(acceptedOptions)
            try unsafe address.withSockaddr { (sockaddr) throws(UVError) in
                try unsafe UVError.check(uv_tcp_bind(tcp, sockaddr, 0), "bind \(address)")
            }
            pendingBacklog = backlog
            if acceptNow { try startAccepting() }
        } catch {
            close()
            throw error
        }
    }

    /// Takes over `descriptor`, a socket already bound and listening (inherited from the process
    /// this one replaces), and accepts on it: the socket is never closed and reopened, so
    /// connections queued on it, and SYNs arriving meanwhile, stay. The descriptor becomes the
    /// listener's (close-on-exec again, closed with it). `acceptedOptions` are set on it again,
    /// since the new process may have other settings.
    ///
    /// With `acceptNow` false nothing is accepted until `startAccepting()`: the kernel goes on
    /// queueing connections on the socket meanwhile (a process taking over accepts only once
    /// everything else it needs has started, so that a failure then cuts no connection).
    public init(loop: EventLoop, adopting descriptor: Int32, backlog: Int32 = 1024,
                acceptedOptions: TCPSocketOptions = TCPSocketOptions(), acceptNow: Bool = true) throws(UVError) {
        super.init(loop: loop, type: UV_TCP)
        // Safe: rawHandle holds uv_handle_size(UV_TCP) bytes, allocated for this uv_tcp_t.
        let tcp = unsafe rawHandle.assumingMemoryBound(to: uv_tcp_t.self)
        let status = unsafe uv_tcp_init(loop.raw, tcp)
        if status < 0 {
            throw UVError(status, "uv_tcp_init")
        }
        retainForCallbacks()
        do {
            // An inherited descriptor came without FD_CLOEXEC: it must not leak into a later exec.
            _ = fcntl(descriptor, F_SETFD, fcntl(descriptor, F_GETFD) | FD_CLOEXEC)
            // Safe: `descriptor` is a socket this process owns (checked by the caller); libuv
            // makes it non-blocking and closes it when the handle closes.
            try unsafe UVError.check(uv_tcp_open(tcp, uv_os_sock_t(descriptor)), "adopt listening descriptor \(descriptor)")
            try applySocketOptions(acceptedOptions)
            pendingBacklog = backlog
            if acceptNow { try startAccepting() }
        } catch {
            close()
            throw error
        }
    }

    /// The backlog of a listener that does not accept yet (nil once it does).
    private var pendingBacklog: Int32?

    /// A listener made with `acceptNow: false` starts accepting (once; later calls do nothing).
    public func startAccepting() throws(UVError) {
        guard let backlog = pendingBacklog, !isClosing else { return }
        pendingBacklog = nil
        // On an adopted socket, listen() again only updates its backlog.
        try listen(backlog: backlog, what: "listen on \(localAddress)")
    }

    private func listen(backlog: Int32, what: String) throws(UVError) {
        let status = unsafe uv_listen(rawHandle.assumingMemoryBound(to: uv_stream_t.self), backlog, { server, status in
            // Safe: libuv passes back this listener, opened by this class (`Handle.from`).
            let listener = unsafe Handle.from(UnsafeMutableRawPointer(server!), as: TCPListener.self)
            listener.accept(status: status)
        })
        try UVError.check(status, what)
    }

    /// The listening socket's descriptor (to hand to the process that replaces this one), or nil
    /// once closing.
    public var descriptor: Int32? {
        guard !isClosing else { return nil }
        var fd: uv_os_fd_t = -1
        // Safe: the handle is open (uv_fileno fails on a closed one); uv_fileno writes `fd`, a
        // local, during the call.
        guard unsafe uv_fileno(rawHandle.assumingMemoryBound(to: uv_handle_t.self), &fd) == 0 else { return nil }
        return fd
    }

    private func accept(status: Int32) {
        let delegate = unsafe self.delegate  // one read, kept for the whole accept
        guard status >= 0 else {
            delegate?.listener(self, acceptFailed: UVError(status, "accept"))
            return
        }
        do throws(UVError) {
            let client: TCPStream
            if let delegate { client = try delegate.streamForAccept(self) } else { client = try TCPStream(loop: loop) }
            // Safe: both handles are TCP handles of this loop, and `client` is open and not yet
            // connected (a new stream, or a closed one `reopen()`ed: checked here, since libuv
            // would otherwise attach the socket to a closed handle or another loop's).
            precondition(client.loop === loop && !client.isClosing, "streamForAccept must return an open, unconnected stream of the listener's loop")
            let accepted = unsafe uv_accept(rawHandle.assumingMemoryBound(to: uv_stream_t.self),
                                            client.rawHandle.assumingMemoryBound(to: uv_stream_t.self))
            if accepted < 0 {
                client.close()
                delegate?.listener(self, acceptFailed: UVError(accepted, "accept"))
                return
            }
            delegate?.listener(self, didAccept: client)
        } catch {
            delegate?.listener(self, acceptFailed: error)
        }
    }

    /// The bound address (the real port when bound to port 0).
    public var localAddress: SocketAddress {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        return unsafe withUnsafeMutablePointer(to: &storage) { pointer in
            // Safe: sockaddr_storage is large enough and aligned for any address getsockname
            // writes, and SocketAddress copies it out before the storage goes.
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                guard unsafe uv_tcp_getsockname(rawHandle.assumingMemoryBound(to: uv_tcp_t.self), address, &length) == 0 else {
                    return SocketAddress(host: "0.0.0.0", port: 0)
                }
                return unsafe SocketAddress(address) ?? SocketAddress(host: "0.0.0.0", port: 0)
            }
        }
    }

    override func didClose() { unsafe delegate = nil }
}
