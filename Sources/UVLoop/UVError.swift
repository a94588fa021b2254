import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// A libuv error: its negative `UV_E*` code, its name (`ECONNREFUSED`) and its message.
public struct UVError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The negative libuv status code.
    public let code: Int32
    /// `uv_err_name(code)`, for example `ECONNREFUSED`.
    public let name: String
    /// `uv_strerror(code)`, for example `connection refused`.
    public let message: String
    /// What was being done, for example `connect 127.0.0.1:1`.
    public let operation: String

    public init(_ code: Int32, _ operation: String = "") {
        self.code = code
        self.operation = operation
        // Safe (both): libuv returns a NUL-terminated string that is never freed for every code
        // (a static one; for an unknown code, a copy it leaks), copied here.
        name = unsafe String(cString: uv_err_name(code))
        message = unsafe String(cString: uv_strerror(code))
    }

    public var description: String {
        operation.isEmpty ? "\(name): \(message)" : "\(operation): \(name) (\(message))"
    }

    /// The end of a stream, as libuv reports it to a read callback.
    public static let endOfFile = Int32(UV_EOF.rawValue)

    // Named codes (the negative libuv values), so callers need not import libuv.
    /// `UV_ECANCELED`: a request cancelled by closing its handle.
    public static let cancelled = Int32(UV_ECANCELED.rawValue)
    /// `UV_ECONNRESET`: the peer reset the connection.
    public static let connectionReset = Int32(UV_ECONNRESET.rawValue)
    /// `UV_EPIPE`: writing to a connection whose peer has gone.
    public static let brokenPipe = Int32(UV_EPIPE.rawValue)
    /// `UV_ENOBUFS`: a read callback's buffer was empty (no memory was lent for the read).
    public static let noBufferSpace = Int32(UV_ENOBUFS.rawValue)
    /// EAGAIN: nothing to read (or no room to write) now.
    public static let wouldBlock = Int32(UV_EAGAIN.rawValue)
    /// `UV_EMFILE`: the process is at its file descriptor limit.
    public static let processFileLimit = Int32(UV_EMFILE.rawValue)
    /// `UV_ENFILE`: the system is at its file limit.
    public static let systemFileLimit = Int32(UV_ENFILE.rawValue)
    /// `UV_ENOMEM`: out of memory.
    public static let outOfMemory = Int32(UV_ENOMEM.rawValue)
    /// `UV_ETIMEDOUT`.
    public static let timedOutCode = Int32(-ETIMEDOUT)
    /// `UV_ECONNREFUSED`: nothing listens at the address.
    public static let connectionRefused = Int32(UV_ECONNREFUSED.rawValue)

    /// A connect or read that took too long (`UV_ETIMEDOUT`).
    public static func timedOut(_ operation: String) -> UVError { UVError(Int32(-ETIMEDOUT), operation) }

    /// Throws when `status` is a libuv error (negative).
    @inlinable
    public static func check(_ status: Int32, _ operation: @autoclosure () -> String) throws(UVError) {
        if status < 0 { throw UVError(status, operation()) }
    }
}
