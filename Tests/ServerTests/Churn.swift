import Dispatch
import Foundation
import Synchronization
import UVLoop

// The load that reload and upgrade tests keep running: a churn of short exchanges and long
// verified streams (ReloadTests, UpgradeTests).

/// Exchanges to let the churn complete around each step. Under the sanitizers (`make test-tsan`,
/// `test-asan` set FASTALLOC_SANITIZER) fewer: there the upgrade suite's churn runs about 130 a
/// second beside three instrumented server processes, and at 1,000 a step it starved a suite
/// running beside it (DrainTests' 8 MiB stream outlived its 60 s drain timeout in CI).
let churnStep = ProcessInfo.processInfo.environment["FASTALLOC_SANITIZER"] != nil ? 150 : 1000

/// Short connections one after another on `threads` threads, each a 200-byte exchange checked
/// byte for byte; every failure (refused, reset, wrong bytes, early end) is kept.
final class Churn: @unchecked Sendable {
    private let stopping = Atomic<Bool>(false)
    private let done = Atomic<Int>(0)
    private let failures = Mutex<[String]>([])
    private let group = DispatchGroup()

    init(address: SocketAddress, threads: Int) {
        for thread in 0..<threads {
            group.enter()
            Thread { [self] in
                var index = thread * 1_000_000
                while !stopping.load(ordering: .relaxed) {
                    index += 1
                    let message = pattern(200, seed: index)  // not patternStream: that makes 64 KiB per call
                    do {
                        let client = try TestSocket(connectingTo: address, timeout: 10)
                        try client.sendAll(message)
                        let echo = try client.receive(exactly: 200)
                        client.close()
                        if echo != message { failures.withLock { $0.append("exchange \(index): wrong bytes") } }
                        done.add(1, ordering: .relaxed)
                    } catch {
                        failures.withLock { $0.append("exchange \(index): \(error)") }
                    }
                }
                group.leave()
            }.start()
        }
    }

    /// Waits (bounded) until `count` more exchanges have completed.
    func waitForMore(_ count: Int) throws {
        let target = done.load(ordering: .relaxed) + count
        guard eventually(timeout: 30, { done.load(ordering: .relaxed) >= target }) else {
            let failed = failures.withLock { $0 }
            throw ChurnStalled(done: done.load(ordering: .relaxed), failures: failed.count, first: failed.first ?? "none")
        }
    }

    /// Stops the threads; the exchanges completed and the failures.
    func stop() -> (done: Int, failures: [String]) {
        stopping.store(true, ordering: .relaxed)
        group.wait()
        return (done.load(ordering: .relaxed), failures.withLock { $0 })
    }
}

struct ChurnStalled: Error, CustomStringConvertible {
    let done: Int
    let failures: Int
    let first: String
    var description: String { "churn stalled at \(done) exchanges, \(failures) failed (first: \(first))" }
}

/// A connection that sends 4 KiB every 10 ms and checks each echo, until `finish()`: then it
/// ends its side and must get a clean end after the last byte.
final class LongStream: @unchecked Sendable {
    private let socket: TestSocket
    private let stopping = Atomic<Bool>(false)
    private let verified = Atomic<Int>(0)
    private let failed = Mutex<String?>(nil)
    private let group = DispatchGroup()

    var failure: String? { failed.withLock { $0 } }

    init(address: SocketAddress, seed: Int) throws {
        socket = try TestSocket(connectingTo: address, timeout: 10)
        group.enter()
        Thread { [self] in
            var chunkSeed = seed * 10_000
            while !stopping.load(ordering: .relaxed) {
                chunkSeed += 1
                let chunk = pattern(4096, seed: chunkSeed)
                do {
                    try socket.sendAll(chunk)
                    guard try socket.receive(exactly: chunk.count) == chunk else {
                        failed.withLock { $0 = "wrong bytes after \(verified.load(ordering: .relaxed))" }
                        break
                    }
                    verified.add(chunk.count, ordering: .relaxed)
                    usleep(10_000)
                } catch {
                    failed.withLock { $0 = "\(error) after \(verified.load(ordering: .relaxed)) bytes" }
                    break
                }
            }
            group.leave()
        }.start()
    }

    /// Waits (bounded) until `count` more bytes have come back.
    func waitForMore(_ count: Int) throws {
        let target = verified.load(ordering: .relaxed) + count
        guard eventually(timeout: 30, { verified.load(ordering: .relaxed) >= target || failure != nil }), failure == nil else {
            throw SocketError.failed("stream stalled at \(verified.load(ordering: .relaxed)) bytes: \(failure ?? "")", 0)
        }
    }

    /// Stops sending, ends this side, and expects the server's clean end: true if every byte
    /// came back and the end was clean.
    func finish() -> Bool {
        stopping.store(true, ordering: .relaxed)
        group.wait()
        guard failure == nil else { return false }
        socket.shutdownWrite()
        do {
            let rest = try socket.receiveUntilEOF()
            if !rest.isEmpty { failed.withLock { $0 = "\(rest.count) bytes after the end" } }
        } catch {
            failed.withLock { $0 = "at the end: \(error)" }
        }
        socket.close()
        return failure == nil
    }
}
