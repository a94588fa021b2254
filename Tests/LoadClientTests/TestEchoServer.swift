import TestSupport
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// An echo server on 127.0.0.1, port 0, on its own thread and loop, that can misbehave on
/// purpose. `stop()` ends it and joins its thread.
final class TestEchoServer: @unchecked Sendable {
    // @unchecked: after start, the server's state is touched only on its loop thread; other
    // threads use `port` (set before start returns) and `stop()` (an AsyncWake).
    enum Behaviour: Sendable {
        case echo
        /// Flips the byte at this stream offset of every connection.
        case corrupt(offset: Int)
        /// Closes each connection once it has received this many bytes.
        case closeAfter(bytes: Int)
        /// Writes back one byte per write.
        case oneByteWrites
        /// Holds what arrives until it has at least this many bytes, then writes it in one go;
        /// a 2 ms timer flushes what is held, so the end of a run cannot wait forever.
        case coalesce(atLeast: Int)
    }

    let behaviour: Behaviour
    private(set) var port = 0
    
    private var wake: AsyncWake?
    private var thread: ThreadHandle?

    init(_ behaviour: Behaviour = .echo) throws {
        self.behaviour = behaviour
        let ready = Latch<Result<(Int, AsyncWake), UVError>>()
        thread = ThreadHandle.start {
            do {
                let loop = try EventLoop()
                let listener = try TCPListener(loop: loop, address: SocketAddress(host: "127.0.0.1", port: 0))
                let acceptor = Acceptor(behaviour: behaviour)
                listener.delegate = acceptor
                let flush = try Timer(loop: loop)
                flush.start(after: 2, repeat: 2) { _ in acceptor.flushAll() }
                let wake = try AsyncWake(loop: loop) { wake in
                    listener.close()
                    acceptor.closeAll()
                    flush.close()
                    wake.close()
                }
                ready.set(.success((listener.localAddress.port, wake)))
                loop.run()
            } catch let error as UVError {
                ready.set(.failure(error))
            } catch {
                ready.set(.failure(UVError(-1, "\(error)")))
            }
        }
        let (port, wake) = try ready.wait().get()
        self.port = port
        self.wake = wake
    }

    var address: SocketAddress { SocketAddress(host: "127.0.0.1", port: port) }

    func stop() {
        wake?.send()
        thread?.join()
        wake = nil
    }
}

private final class Acceptor: TCPListenerDelegate {
    let behaviour: TestEchoServer.Behaviour
    var sessions: [ObjectIdentifier: Session] = [:]

    init(behaviour: TestEchoServer.Behaviour) { self.behaviour = behaviour }

    func listener(_ listener: TCPListener, didAccept stream: TCPStream) {
        let session = Session(behaviour: behaviour, acceptor: self)
        sessions[ObjectIdentifier(stream)] = session
        session.stream = stream
        stream.delegate = session
        try? stream.startReading()
    }

    func listener(_ listener: TCPListener, acceptFailed error: UVError) {}

    func closeAll() {
        for session in sessions.values { session.stream?.close() }
    }

    func flushAll() {
        for session in sessions.values { session.flush() }
    }
}

/// One connection of the test server. Test code: it allocates freely.
private final class Session: TCPStreamDelegate {
    let behaviour: TestEchoServer.Behaviour
    unowned let acceptor: Acceptor
    weak var stream: TCPStream?
    var received = 0
    var held: [UInt8] = []
    var pending: [UInt: UnsafeMutableRawBufferPointer] = [:]
    var nextToken: UInt = 0
    let readMemory = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 16)

    init(behaviour: TestEchoServer.Behaviour, acceptor: Acceptor) {
        self.behaviour = behaviour
        self.acceptor = acceptor
    }

    deinit {
        readMemory.deallocate()
        for memory in pending.values { memory.deallocate() }
    }

    override func readBuffer(for stream: TCPStream, suggestedSize: Int) -> UnsafeMutableRawBufferPointer {
        readMemory
    }

    override func stream(_ stream: TCPStream, didRead count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard count > 0 else {
            if count < 0 { stream.close() }
            return
        }
        var bytes = Array(buffer[0..<count])
        let start = received
        received += count
        switch behaviour {
        case .echo:
            send(bytes, on: stream)
        case .corrupt(let offset):
            if offset >= start && offset < received { bytes[offset - start] ^= 0xFF }
            send(bytes, on: stream)
        case .closeAfter(let limit):
            if received >= limit {
                stream.close()
            } else {
                send(bytes, on: stream)
            }
        case .oneByteWrites:
            for byte in bytes { send([byte], on: stream) }
        case .coalesce(let atLeast):
            held += bytes
            if held.count >= atLeast {
                send(held, on: stream)
                held = []
            }
        }
    }

    func flush() {
        guard !held.isEmpty, let stream, !stream.isClosing else { return }
        send(held, on: stream)
        held = []
    }

    private func send(_ bytes: [UInt8], on stream: TCPStream) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        memory.copyBytes(from: bytes)
        nextToken += 1
        do {
            if try stream.write(unsafeBytes: UnsafeRawBufferPointer(memory), token: nextToken) == 0 {
                memory.deallocate()
            } else {
                pending[nextToken] = memory
            }
        } catch {
            memory.deallocate()
            stream.close()
        }
    }

    override func stream(_ stream: TCPStream, didFinishWrite token: UInt, status: Int32) {
        pending.removeValue(forKey: token)?.deallocate()
    }

    override func streamDidClose(_ stream: TCPStream) {
        acceptor.sessions.removeValue(forKey: ObjectIdentifier(stream))
    }
}
