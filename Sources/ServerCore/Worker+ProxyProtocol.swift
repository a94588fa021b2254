import UVLoop

/// `--accept-proxy`: each accepted connection first goes to a `ProxyHeaderReader`; its
/// session starts once the header is read, with the header's addresses.
extension Worker {
    /// A connection accepted (and admitted against --max-connections) from `peer`: from a
    /// trusted address its header is read; from any other it is closed and counted.
    func readProxyHeader(_ stream: TCPStream, peer: SessionPeer) {
        WorkerCounters.add(counters.accepted)
        guard config.trustedProxies.contains(where: { $0.contains(peer.address) }) else {
            // No address at all: the client left before getpeername (not an untrusted source).
            refuse(stream, peer: peer, reason: peer.address.kind == .none ? .closed : .untrusted)
            return
        }
        let reader = freeReaders.popLast() ?? ProxyHeaderReader(worker: self)
        reader.slot = headerReaders.count
        headerReaders.append(reader)
        updateActive()
        do {
            try reader.start(stream, peer: peer, now: loop.nowMilliseconds)
        } catch {
            reader.fail(.closed)  // the client is gone already
        }
    }

    /// The header is read: the connection goes on as any other, with the header's addresses.
    /// Until its session takes the stream, the reader stays its delegate: a connection refused
    /// here gives both back in `headerReaderClosed`, once closed.
    func headerRead(by reader: ProxyHeaderReader) {
        removeReader(reader)
        WorkerCounters.add(counters.proxyHeadersReceived)
        var peer = reader.peer
        let stream = reader.stream!
        guard shutdownPhase == .serving else {
            // A drain or stop began while the header was on its way (readers are closed then;
            // this is only the header that completed in the same turn).
            stream.close()
            shared.release()
            WorkerCounters.add(counters.closed)
            recordRefused(peer, reason: .stop)
            return
        }
        guard admitPerClient(&peer, stream: stream) else {
            WorkerCounters.add(counters.closed)  // accepted was counted when the reader began
            return
        }
        freeReaders.append(reader)
        stream.delegate = nil  // the session's connection becomes its delegate (or it is closed, unkept)
        startSession(stream, peer: peer)
    }

    /// The header failed (`reason`), or the reader is closed without one (nil: a drain or stop).
    func headerFailed(_ reader: ProxyHeaderReader, reason: ProxyProtocolFailure?) {
        removeReader(reader)
        let stream = reader.stream!
        stream.delegate = reader  // kept until the close callback hands the reader back
        stream.close()
        shared.release()
        WorkerCounters.add(counters.closed)
        if let reason {
            counters.add(reason)
            recordRefused(reader.peer, reason: .proxyHeader)
            let from = SocketAddress(reader.peer.address).map { "\($0)" } ?? "a client"
            logRateLimited(level: .warning, "connection from \(from) closed: PROXY header \(reason.explanation)")
        } else {
            recordRefused(reader.peer, reason: .stop)
        }
    }

    /// A connection refused before its header was read (an untrusted address).
    private func refuse(_ stream: TCPStream, peer: SessionPeer, reason: ProxyProtocolFailure) {
        stream.close()
        shared.release()
        WorkerCounters.add(counters.closed)
        counters.add(reason)
        recordRefused(peer, reason: .proxyHeader)
        let from = SocketAddress(peer.address).map { "\($0)" } ?? "a client"
        logRateLimited(level: .warning, "connection from \(from) closed: PROXY header \(reason.explanation)")
    }

    /// A failed reader's stream has closed: both are kept for later connections.
    func headerReaderClosed(_ reader: ProxyHeaderReader) {
        freeStreams.append(reader.stream)
        freeReaders.append(reader)
        if shutdownPhase != .serving && sessions.isEmpty && headerReaders.isEmpty { finish() }
    }

    private func removeReader(_ reader: ProxyHeaderReader) {
        let last = headerReaders.removeLast()
        if last !== reader {
            last.slot = reader.slot
            headerReaders[reader.slot] = last
        }
        updateActive()
    }

    /// The sweep's part: readers past their deadline fail.
    func sweepHeaderReaders(now: UInt64) {
        var index = 0
        while index < headerReaders.count {
            let reader = headerReaders[index]
            if now >= reader.deadline {
                reader.fail(.timeout)  // removes it: the same index holds another now
            } else {
                index += 1
            }
        }
    }

    /// A drain or stop: connections still sending their header are closed (nothing of them
    /// was forwarded; they are not counted as header errors).
    func closeHeaderReaders() {
        while let reader = headerReaders.last { reader.fail(nil) }
    }

    /// Discards up to `count` bytes of `stream` (a v2 header's TLVs) into the worker's scratch.
    func discard(from stream: TCPStream, count: Int) -> Int {
        if discardBuffer.isEmpty { discardBuffer = [UInt8](repeating: 0, count: 16 * 1024) }  // once per worker
        return stream.receive(into: &discardBuffer, upTo: count)
    }
}

extension ProxyProtocolFailure {
    /// What went wrong, for the log line.
    var explanation: String {
        switch self {
        case .timeout: "not complete within --proxy-protocol-timeout"
        case .closed: "not complete when the client closed"
        case .untrusted: "not accepted: the address is not in --trusted-proxies"
        case .notAHeader: "missing: the first bytes are not a PROXY header"
        case .signature: "malformed: bad signature"
        case .version: "malformed: unknown version"
        case .command: "malformed: unknown command"
        case .family: "malformed: unsupported family or transport"
        case .length: "malformed: bad length (a v1 line longer than 107 bytes, or v2 addresses cut short)"
        case .text: "malformed: bad v1 line"
        }
    }
}
