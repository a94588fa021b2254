import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// What a process upgrading itself (SIGUSR2) hands the process it starts: the listening sockets,
/// already bound and listening, and the end of a pipe to say "ready" on. The descriptors are
/// inherited across exec (posix_spawn); their numbers travel in one environment variable,
/// `FASTALLOC_UPGRADE_HANDOVER`, as `listen=5,6 stats=7 ready=8 from=1234`.
///
/// The sockets are never closed during the hand-over: both processes hold them until the new one
/// accepts on them, then the old one closes its copies and drains. No SYN meets a closed port,
/// and the connections waiting in an accept queue stay in it for the new process.
public struct HandOver: Sendable, Equatable {
    /// The environment variable that carries the descriptors' numbers.
    public static let variable = "FASTALLOC_UPGRADE_HANDOVER"

    /// The workers' listening sockets, in the old process's worker order.
    public var listeners: [Int32]
    /// The stats endpoint's listening socket, if it had one.
    public var stats: Int32?
    /// The write end of the pipe the new process says "ready <pid>" on.
    public var ready: Int32
    /// The process handing over.
    public var from: Int32

    public init(listeners: [Int32], stats: Int32?, ready: Int32, from: Int32) {
        self.listeners = listeners
        self.stats = stats
        self.ready = ready
        self.from = from
    }

    /// Every descriptor the new process inherits.
    public var descriptors: [Int32] { listeners + (stats.map { [$0] } ?? []) + [ready] }

    /// The variable's value.
    public var encoded: String {
        var parts = ["listen=" + listeners.map(String.init).joined(separator: ",")]
        if let stats { parts.append("stats=\(stats)") }
        parts.append("ready=\(ready)")
        parts.append("from=\(from)")
        return parts.joined(separator: " ")
    }

    /// Reads the variable's value; nil with the reason when it is not one `encoded` wrote.
    public static func parse(_ text: String) -> Result<HandOver, HandOverError> {
        var listeners: [Int32]?
        var stats: Int32?
        var ready: Int32?
        var from: Int32?
        func descriptor(_ value: Substring) -> Int32? {
            guard let number = Int32(value), number > 2 else { return nil }  // never stdin/out/err
            return number
        }
        for part in text.split(separator: " ") {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2 else { return .failure(HandOverError("'\(part)' is not key=value")) }
            switch pair[0] {
            case "listen":
                let numbers = pair[1].split(separator: ",").map(descriptor)
                guard !numbers.isEmpty, numbers.allSatisfy({ $0 != nil }) else {
                    return .failure(HandOverError("listen=\(pair[1]): expected descriptors above 2, separated by commas"))
                }
                listeners = numbers.compactMap { $0 }
            case "stats":
                guard let number = descriptor(pair[1]) else { return .failure(HandOverError("stats=\(pair[1]): expected a descriptor above 2")) }
                stats = number
            case "ready":
                guard let number = descriptor(pair[1]) else { return .failure(HandOverError("ready=\(pair[1]): expected a descriptor above 2")) }
                ready = number
            case "from":
                guard let number = Int32(pair[1]), number > 0 else { return .failure(HandOverError("from=\(pair[1]): expected a process ID")) }
                from = number
            default:
                return .failure(HandOverError("unknown key '\(pair[0])'"))
            }
        }
        guard let listeners, let ready, let from else {
            return .failure(HandOverError("'\(text)' lacks listen=, ready= or from="))
        }
        let all = listeners + (stats.map { [$0] } ?? []) + [ready]
        guard Set(all).count == all.count else { return .failure(HandOverError("a descriptor appears twice in '\(text)'")) }
        return .success(HandOver(listeners: listeners, stats: stats, ready: ready, from: from))
    }

    /// The hand-over this process was started with (its variable), if any.
    public static func inherited(environment: [String: String]) -> Result<HandOver, HandOverError>? {
        environment[variable].map(parse)
    }
}

public struct HandOverError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// What an inherited descriptor turned out to be.
public enum InheritedSocket: Sendable, Equatable {
    /// A listening TCP socket bound to this address.
    case listening(SocketAddress)
    /// Not a listening TCP socket (closed, a file, a connected socket...).
    case unusable(String)

    /// Looks at `descriptor` without changing it.
    public static func inspect(_ descriptor: Int32) -> InheritedSocket {
        var type: Int32 = 0
        var accepting: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        // Safe: each getsockopt writes one Int32 into a local of that size (`length` says so).
        guard unsafe getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &type, &length) == 0 else {
            return .unusable("descriptor \(descriptor): \(systemError(errno))")
        }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard unsafe getsockopt(descriptor, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &length) == 0,
              type == Int32(SOCK_STREAM.rawValue), accepting == 1 else {
            return .unusable("descriptor \(descriptor) is not a listening TCP socket")
        }
        guard let address = SocketAddress.local(of: descriptor) else {
            return .unusable("descriptor \(descriptor): no local address")
        }
        return .listening(address)
    }
}

extension SocketAddress {
    /// Whether a socket bound to `bound` serves what `self` (a configured address, whose port
    /// may be 0: any port) asks for.
    public func isServed(by bound: SocketAddress) -> Bool {
        let mine = RawSocketAddress(self)
        let theirs = RawSocketAddress(bound)
        return mine.kind == theirs.kind && mine.bytes == theirs.bytes && (port == 0 || port == bound.port)
    }
}
