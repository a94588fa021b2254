// What every fuzzer here shares: libFuzzer's driver, a check that names what broke, and a way
// to run a closure on a new thread and wait for it.
import Threads
#if canImport(Glibc)
import Glibc
#endif

@_silgen_name("LLVMFuzzerRunDriver")
func _runDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
                _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

/// Hands the process over to libFuzzer (SwiftPM links the executable's own `main`, which calls
/// this) and exits with its status.
public func runFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(_runDriver(&argc, &argv, callback))
}

/// A property the fuzzer checks: a violation stops the run with the message (libFuzzer then
/// saves the input in the artifacts directory).
@inline(__always)
public func check(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
                  file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError("property violated: \(message())", file: file, line: line) }
}

/// Runs `body` on a new thread and waits for it to finish. The body need not be Sendable: the
/// fuzzers hand a pool to another thread on purpose, and wait for that thread before they touch
/// the pool again (the join orders the two).
public func onAnotherThread(_ body: @escaping () -> Void) {
    final class Body: @unchecked Sendable {
        // @unchecked: run exactly once, on the new thread, while the caller waits in join().
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    let box = Body(body)
    ThreadHandle.start { box.run() }.join()
}

/// Reads the fuzzer's input a byte at a time; zeros once it runs out.
/// Inlinable: fuzz-pools calls it twice per operation.
public struct ByteReader {
    @usableFromInline let bytes: UnsafeBufferPointer<UInt8>
    @usableFromInline var position = 0
    public init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    @inlinable public var isAtEnd: Bool { position >= bytes.count }
    @inlinable public mutating func next() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }
    public mutating func rest() -> UnsafeBufferPointer<UInt8> {
        defer { position = bytes.count }
        return UnsafeBufferPointer(rebasing: bytes[min(position, bytes.count)...])
    }
}
