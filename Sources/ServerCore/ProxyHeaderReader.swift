import ProxyProtocol
import UVLoop

/// A client connection's PROXY header (`--accept-proxy`), read before the connection gets its
/// session: the header's client address is then the one the session, the per-client limit,
/// the `hash` balancer, the access log and the upstream's own header use.
///
/// The header's length is known only from its bytes, and not one byte after it may be taken
/// (they are the client's data, forwarded once the upstream is connected). So the reader lets
/// libuv only say when the socket is readable (its read buffer is empty: libuv reports
/// UV_ENOBUFS without reading) and reads itself: it peeks at what is there (MSG_PEEK), parses
/// what it has so far, and takes exactly the bytes that belong to the header. A header split
/// across any number of segments is accepted: the bytes of an incomplete one are taken (they
/// are all header) and kept here, at most 108. A v2 header's TLVs are skipped by their declared
/// length. Nothing here allocates per connection: readers and their byte arrays are kept by
/// the worker and reused.
final class ProxyHeaderReader: TCPStreamDelegate {
    unowned(unsafe) let worker: Worker  // Safe: a worker outlives its readers (it ends after the last stream).
    private(set) var stream: TCPStream!
    /// The connection's real addresses (and accept time), then the header's.
    var peer = SessionPeer()
    /// When the whole header must have arrived (loop milliseconds).
    var deadline: UInt64 = 0
    /// Index in the worker's reader list (O(1) removal).
    var slot = 0
    /// The header's bytes taken so far, while it is incomplete (at most `decisionBytes`).
    private var received: [UInt8] = []
    /// What a peek copies; then the bytes taken.
    private var window: [UInt8] = []
    /// A v2 header's TLV bytes still to discard, once its addresses are known.
    private var skip = 0
    private var header: ProxyHeader?
    /// The reader has handed its stream on or is closing it: later events are ignored.
    private var finished = false

    init(worker: Worker) {
        self.worker = worker
        received.reserveCapacity(ProxyHeader.decisionBytes)
        window.reserveCapacity(ProxyHeader.decisionBytes)
    }

    /// Starts reading the header of `stream`, accepted from `peer`.
    func start(_ stream: TCPStream, peer: SessionPeer, now: UInt64) throws(UVError) {
        self.stream = stream
        self.peer = peer
        deadline = now &+ worker.config.proxyProtocolTimeoutMilliseconds
        received.removeAll(keepingCapacity: true)
        skip = 0
        header = nil
        finished = false
        stream.delegate = self
        try stream.startReading()
    }

    // MARK: libuv

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: nil, count: 0)  // libuv reads nothing: UV_ENOBUFS, readable
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard !finished else { return }
        if count == Int(UVError.noBufferSpace) {
            readAvailable()
        } else if count < 0 {
            fail(.closed)  // an error or the end of the stream libuv saw by itself
        }
    }

    override func streamDidClose(_ stream: TCPStream) {
        worker.headerReaderClosed(self)
    }

    // MARK: Reading the header

    /// The socket is readable: take what belongs to the header, until it is complete, or the
    /// socket has nothing more now.
    private func readAvailable() {
        while !finished {
            if skip > 0 {
                let got = worker.discard(from: stream, count: skip)
                if got == Int(UVError.wouldBlock) { return }
                guard got > 0 else { return fail(.closed) }
                skip -= got
                if skip == 0, let header { complete(header) }
                continue
            }
            window.removeAll(keepingCapacity: true)
            window.append(contentsOf: repeatElement(0, count: ProxyHeader.decisionBytes - received.count))
            let seen = stream.peek(into: &window)
            if seen == Int(UVError.wouldBlock) { return }
            guard seen > 0 else { return fail(.closed) }
            let before = received.count
            received.append(contentsOf: window[0..<seen])
            switch ProxyHeader.parse(received) {
            case .needMore:
                // Every byte seen is the header's: take them all (what arrives next continues it).
                guard take(seen) else { return }
                if received.count >= ProxyHeader.decisionBytes { return fail(.length) }  // parse never asks for more
                return
            case .failure(let error):
                return fail(ProxyProtocolFailure(error))
            case .header(let parsed):
                let rest = parsed.length - before  // the header's bytes not taken yet
                received.removeSubrange(before...)
                if rest <= seen {
                    guard take(rest) else { return }
                    complete(parsed)
                } else {
                    guard take(seen) else { return }
                    header = parsed
                    skip = rest - seen
                }
            }
        }
    }

    /// Takes `count` bytes that a peek showed (they are there: a peer cannot take back bytes).
    private func take(_ count: Int) -> Bool {
        window.removeAll(keepingCapacity: true)
        window.append(contentsOf: repeatElement(0, count: count))
        let got = stream.receive(into: &window)
        guard got == count else {
            fail(.closed)
            return false
        }
        return true
    }

    private func complete(_ header: ProxyHeader) {
        finished = true
        stream.stopReading()
        if case .proxy(let source, let destination) = header.command {
            peer.address = source.unmapped
            peer.local = destination.unmapped
        }
        worker.headerRead(by: self)
    }

    /// Closes the connection: counted by `reason`, logged (at most 10 lines a second), given its
    /// access log line; nothing of it was forwarded.
    func fail(_ reason: ProxyProtocolFailure?) {
        guard !finished else { return }
        finished = true
        worker.headerFailed(self, reason: reason)
    }
}

extension ProxyProtocolFailure {
    init(_ error: ProxyHeaderError) {
        switch error {
        case .notAHeader: self = .notAHeader
        case .signature: self = .signature
        case .version: self = .version
        case .command: self = .command
        case .family: self = .family
        case .length: self = .length
        case .text: self = .text
        }
    }
}
