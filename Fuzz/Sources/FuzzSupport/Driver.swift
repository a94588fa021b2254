// What every fuzzer here shares: libFuzzer's driver, a check that names what broke, and a way
// to run a closure on a new thread and wait for it.
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

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Runs `body` on a new thread and waits for it to finish.
public func onAnotherThread(_ body: @escaping () -> Void) {
    var thread = pthread_t()
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    let status = pthread_create(&thread, nil, { context in
        // Safe: `context` is the retained ThreadBody passed below; taken back exactly once.
        let box = Unmanaged<ThreadBody>.fromOpaque(context!).takeRetainedValue()
        box.body()
        return nil
    }, context)
    check(status == 0, "pthread_create: \(status)")
    pthread_join(thread, nil)
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
