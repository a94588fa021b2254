import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An IP address (IPv4 or IPv6) and a port, as text: `127.0.0.1:7000`, `[::1]:7000`.
///
/// The host is always a numeric address (names are resolved by `resolve(_:allowing:)`, never
/// stored), so a SocketAddress converts to a C `sockaddr` without a lookup.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The numeric host, without brackets: `127.0.0.1`, `::1`, `fe80::1%lo`.
    public let host: String
    public let port: Int
    public let family: Family

    /// An address family.
    public enum Family: Sendable, Hashable, CustomStringConvertible {
        case ipv4, ipv6

        public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }
        var cValue: Int32 { self == .ipv4 ? AF_INET : AF_INET6 }
    }

    /// Which families a parser or a lookup accepts.
    public struct Families: OptionSet, Sendable, Hashable, CustomStringConvertible {
        public let rawValue: UInt8
        public init(rawValue: UInt8) { self.rawValue = rawValue }
        public static let ipv4 = Families(rawValue: 1)
        public static let ipv6 = Families(rawValue: 2)
        public static let all: Families = [.ipv4, .ipv6]

        public func allows(_ family: Family) -> Bool { contains(family == .ipv4 ? Families.ipv4 : Families.ipv6) }
        /// `IPv4`, `IPv6` or `IP`: for messages ("not an IPv4 address").
        public var description: String { self == .ipv4 ? "IPv4" : self == .ipv6 ? "IPv6" : "IP" }
    }

    /// An address from a numeric host: IPv6 when the host holds a colon. The host is not
    /// checked here (`init(parsing:)` checks); a bad one fails where the address is used.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
        family = host.contains(":") ? .ipv6 : .ipv4
        var storage = sockaddr_storage()
        cStatus = SocketAddress.fill(&storage, host: host, port: port, family: family)
        cAddress = storage
    }

    /// The C address, converted once here: a connect converts nothing (a conversion from the
    /// host text would allocate a C string per connect). `cStatus`: 0, or why the host is not
    /// an address of its family.
    private let cAddress: sockaddr_storage
    private let cStatus: Int32

    // Equal when host, port and family are: the C address follows from them.
    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        lhs.host == rhs.host && lhs.port == rhs.port && lhs.family == rhs.family
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(host)
        hasher.combine(port)
        hasher.combine(family)
    }

    /// Parses `HOST:PORT` with a numeric host: `127.0.0.1:7000`, or an IPv6 address in
    /// brackets, `[::1]:7000`, `[2001:db8::1]:443`. Port 0 is allowed (any free port, for a
    /// listener). `families` limits which hosts are taken; the error says what was wrong.
    public init(parsing text: String, allowing families: SocketAddress.Families = .all) throws(AddressError) {
        let (host, port) = try SocketAddress.split(text, families: families)
        var probe = sockaddr_storage()
        guard SocketAddress.fill(&probe, host: host, port: port, family: .ipv4) == 0 && families.contains(.ipv4)
            || SocketAddress.fill(&probe, host: host, port: port, family: .ipv6) == 0 && families.contains(.ipv6) else {
            throw AddressError(text: text, reason: .notAnAddress(host: host, families: families))
        }
        self.init(host: host, port: port)
    }

    /// Parses `HOST:PORT` where the host may also be a name, resolved now (`getaddrinfo`) to
    /// its first address in `families`, as nginx resolves a `proxy_pass` name at startup.
    public init(resolving text: String, allowing families: SocketAddress.Families = .all) throws(AddressError) {
        self = try SocketAddress.resolve(text, allowing: families)[0]
    }

    /// Every address `HOST:PORT` stands for: the one address for a numeric host; for a name,
    /// each of its A and AAAA records in `families`, in the resolver's order, without
    /// repeats. Blocks while the resolver works: call it off the data path. Never empty.
    public static func resolve(_ text: String, allowing families: SocketAddress.Families = .all) throws(AddressError) -> [SocketAddress] {
        do {
            return [try SocketAddress(parsing: text, allowing: families)]
        } catch {
            guard case .notAnAddress = error.reason else { throw error }
            // Not a numeric address of an allowed family: a name, looked up below.
        }
        let (host, port) = try split(text, families: families)
        // Safe: `hints` and `list` are getaddrinfo's in and out arguments for the call; the list
        // it returns is freed once, by the deferred freeaddrinfo, after its last use below.
        // (addrinfo holds C pointers: `hints` keeps them nil.)
        var hints = unsafe addrinfo()
        unsafe hints.ai_family = families == .ipv4 ? AF_INET : families == .ipv6 ? AF_INET6 : AF_UNSPEC
        unsafe hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = unsafe getaddrinfo(host, nil, &hints, &list)
        defer { if let list = unsafe list { unsafe freeaddrinfo(list) } }
        guard status == 0 else {
            // Safe: gai_strerror returns a static NUL-terminated message, copied here.
            throw unsafe AddressError(text: text, reason: .unresolved(host: host, families: families, detail: String(cString: gai_strerror(status))))
        }
        var found: [SocketAddress] = []
        var entry = unsafe list
        while let current = unsafe entry {
            // Safe: getaddrinfo's list and each ai_addr live until freeaddrinfo (deferred
            // above); `init(_:port:)` copies the address out before then.
            if let address = unsafe current.pointee.ai_addr, let resolved = unsafe SocketAddress(address, port: port),
               families.allows(resolved.family), !found.contains(resolved) {
                found.append(resolved)
            }
            unsafe entry = current.pointee.ai_next
        }
        guard !found.isEmpty else {
            throw AddressError(text: text, reason: .unresolved(host: host, families: families, detail: "no \(families) address"))
        }
        return found
    }

    /// `127.0.0.1:7000`, `[::1]:7000`.
    public var description: String { family == .ipv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Calls `body` with the C address.
    func withSockaddr<R>(_ body: (UnsafePointer<sockaddr>) throws(UVError) -> R) throws(UVError) -> R {
        try UVError.check(cStatus, "address \(self)")
        var storage = cAddress
        return try unsafe withUnsafePointer(to: &storage) { (pointer) throws(UVError) -> R in
            // Safe: sockaddr_storage is large enough and aligned for every address family, and
            // begins with the sockaddr header; libuv reads it for the call only.
            try unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sockaddrPointer) throws(UVError) -> R in
                try unsafe body(sockaddrPointer)
            }
        }
    }

    /// The local address of the socket `descriptor` (getsockname), or nil when it has none or is
    /// not an IPv4 or IPv6 socket.
    public static func local(of descriptor: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return unsafe withUnsafeMutablePointer(to: &storage) { pointer in
            // Safe: sockaddr_storage is large enough and aligned for any address getsockname
            // writes (`length` says how large), and SocketAddress copies it out before it goes.
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                guard unsafe getsockname(descriptor, address, &length) == 0 else { return nil }
                return unsafe SocketAddress(address)
            }
        }
    }

    /// The address a C `sockaddr` holds (AF_INET or AF_INET6), with its own port or `port`;
    /// nil for another family.
    init?(_ address: UnsafePointer<sockaddr>, port overridePort: Int? = nil) {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 16)
        let port: UInt16
        // Safe: the caller passes a live C address, which begins with its family; it is read
        // here, during the call, and copied out.
        switch unsafe Int32(address.pointee.sa_family) {
        case AF_INET:
            // Safe: sa_family AF_INET says the memory holds a whole sockaddr_in.
            let v4 = unsafe UnsafeRawPointer(address).load(as: sockaddr_in.self)
            var copy = v4
            guard unsafe uv_ip4_name(&copy, &text, text.count) == 0 else { return nil }
            port = UInt16(bigEndian: v4.sin_port)
        case AF_INET6:
            // Safe: sa_family AF_INET6 says the memory holds a whole sockaddr_in6.
            let v6 = unsafe UnsafeRawPointer(address).load(as: sockaddr_in6.self)
            var copy = v6
            guard unsafe uv_ip6_name(&copy, &text, text.count) == 0 else { return nil }
            port = UInt16(bigEndian: v6.sin6_port)
        default:
            return nil
        }
        let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        self.init(host: host, port: overridePort ?? Int(port))
    }

    /// Splits `HOST:PORT` or `[IPV6]:PORT` and checks the port; the host is not checked.
    private static func split(_ text: String, families: SocketAddress.Families) throws(AddressError) -> (host: String, port: Int) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw AddressError(text: text, reason: .missingPort) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw AddressError(text: text, reason: .missingPort) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if families.contains(.ipv6) && host.contains(":") { throw AddressError(text: text, reason: .unbracketedIPv6(host: String(host))) }
        }
        guard let port = Int(portText), (0...65535).contains(port) else { throw AddressError(text: text, reason: .badPort) }
        return (String(host), port)
    }

    /// Writes the C address for a numeric host into `storage`: 0, or libuv's error for a host
    /// that is not an address of `family`.
    private static func fill(_ storage: inout sockaddr_storage, host: String, port: Int, family: Family) -> Int32 {
        // `withCString`, not the implicit String-to-pointer conversion: that one allocates a
        // temporary copy of a small string (every numeric IPv4 host) on each call, and an address
        // converted per connect allocated per relayed connection (measured: 1 malloc, now 0).
        unsafe host.withCString { cHost in
            unsafe withUnsafeMutablePointer(to: &storage) { pointer in
                // Safe: sockaddr_storage is large enough and aligned for a sockaddr_in and a
                // sockaddr_in6; the pointers are used for this call only.
                switch family {
                case .ipv4: return unsafe pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { unsafe uv_ip4_addr(cHost, Int32(port), $0) }
                case .ipv6: return unsafe pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { unsafe uv_ip6_addr(cHost, Int32(port), $0) }
                }
            }
        }
    }
}

/// A `HOST:PORT` that could not be parsed or resolved: the text and why, as a case to match.
public struct AddressError: Error, Sendable, Hashable, CustomStringConvertible {
    public let text: String
    public let reason: Reason

    public enum Reason: Sendable, Hashable, CustomStringConvertible {
        /// No `:PORT`.
        case missingPort
        /// The port is not a number from 0 to 65535.
        case badPort
        /// The host is not a numeric address of an allowed family (it may be a name).
        case notAnAddress(host: String, families: SocketAddress.Families)
        /// An IPv6 address without brackets (`::1:7000` is ambiguous).
        case unbracketedIPv6(host: String)
        /// A name the resolver could not turn into an address of an allowed family.
        case unresolved(host: String, families: SocketAddress.Families, detail: String)

        public var description: String {
            switch self {
            case .missingPort: "expected HOST:PORT, like 127.0.0.1:7000"
            case .badPort: "the port must be a number from 0 to 65535"
            case .notAnAddress(let host, let families): "'\(host)' is not an \(families) address"
            case .unbracketedIPv6(let host): "an IPv6 address goes in brackets, like [\(host)]:7000"
            case .unresolved(let host, let families, let detail):
                "'\(host)' is neither an \(families) address nor a name that resolves to one (\(detail))"
            }
        }
    }

    public var description: String { "'\(text)': \(reason)" }
}
