import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An IP address and port as the kernel gives them (`getpeername`): fixed size, no String, so
/// a server can keep one per connection and copy it into a record without allocating. Text is
/// made only where it is printed (`SocketAddress(raw)`, or by the caller from the bytes).
public struct RawSocketAddress: Sendable, Hashable {
    /// `.none` when there is no address (no peer, or an unknown family).
    public enum Kind: UInt8, Sendable, Hashable { case none = 0, ipv4 = 4, ipv6 = 6 }

    // The words first: 19 bytes, where kind and port first took 24 (stored properties are laid
    // out in declaration order). A session keeps two of these.
    /// The address bytes in network order, read as two words in memory order: an IPv4 address
    /// in the first 4 bytes of `high` (the rest zero), an IPv6 address in all 16.
    public private(set) var high: UInt64 = 0
    public private(set) var low: UInt64 = 0
    /// The port, in host byte order.
    public private(set) var port: UInt16 = 0
    public private(set) var kind: Kind = .none

    /// No address.
    public init() {}

    /// An address from its parts (tests, and tables keyed by address).
    public init(kind: Kind, port: UInt16, high: UInt64, low: UInt64) {
        self.kind = kind
        self.port = port
        self.high = high
        self.low = low
    }

    /// The address `storage` holds (AF_INET or AF_INET6; anything else gives no address).
    init(_ storage: sockaddr_storage) {
        switch Int32(storage.ss_family) {
        case AF_INET:
            // Safe: ss_family AF_INET says the storage holds a sockaddr_in.
            let v4 = unsafe withUnsafeBytes(of: storage) { unsafe $0.load(as: sockaddr_in.self) }
            kind = .ipv4
            port = UInt16(bigEndian: v4.sin_port)
            high = unsafe withUnsafeBytes(of: v4.sin_addr) { bytes in
                var word: UInt64 = 0
                // Safe: 4 bytes copied into the first 4 of an 8-byte word on the stack.
                unsafe withUnsafeMutableBytes(of: &word) { unsafe $0.copyMemory(from: bytes) }
                return word
            }
        case AF_INET6:
            // Safe: ss_family AF_INET6 says the storage holds a sockaddr_in6.
            let v6 = unsafe withUnsafeBytes(of: storage) { unsafe $0.load(as: sockaddr_in6.self) }
            kind = .ipv6
            port = UInt16(bigEndian: v6.sin6_port)
            // Safe: in6_addr is 16 bytes; two 8-byte loads at offsets 0 and 8.
            (high, low) = unsafe withUnsafeBytes(of: v6.sin6_addr) { bytes in
                (unsafe bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self), unsafe bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
            }
        default:
            break
        }
    }

    /// The address a `SocketAddress` names (no address when its host does not parse).
    public init(_ address: SocketAddress) {
        var storage = sockaddr_storage()
        let size = address.family == .ipv4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size
        let copied: Void? = try? unsafe address.withSockaddr { (pointer) throws(UVError) -> Void in
            // Safe: withSockaddr's pointer is a whole sockaddr of the address's family, valid
            // for the call; `size` (that family's) fits in sockaddr_storage.
            unsafe withUnsafeMutableBytes(of: &storage) { unsafe $0.baseAddress!.copyMemory(from: UnsafeRawPointer(pointer), byteCount: size) }
        }
        guard copied != nil else {
            self.init()
            return
        }
        self.init(storage)
    }

    /// The 16 address bytes, in network order (an IPv4 address in the first 4).
    public var bytes: (UInt64, UInt64) { (high, low) }

    /// A hash of the host alone (family and address bytes, not the port): one client, one key;
    /// 0 for no address. Stable across runs (the `hash` balancer keeps a client's upstream).
    public var hostHash: UInt64 {
        guard kind != .none else { return 0 }
        func mix(_ value: UInt64) -> UInt64 {  // SplitMix64's finaliser
            var z = value &+ 0x9e37_79b9_7f4a_7c15
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        return mix(mix(high ^ UInt64(kind.rawValue)) ^ low)
    }

    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack listener or a TCP6
    /// PROXY header gives for an IPv4 client) as the IPv4 address it stands for; any other
    /// address as it is.
    public var unmapped: RawSocketAddress {
        guard kind == .ipv6, high == 0 else { return self }
        // `low` holds bytes 8-15 in memory order; read little-endian, byte i is bits 8i...8i+7.
        let bytes = low.littleEndian
        guard bytes & 0xffff_ffff == 0xffff_0000 else { return self }  // bytes 8-11: 00 00 ff ff
        let v4 = UInt64(littleEndian: bytes >> 32)  // bytes 12-15, back in memory order at 0-3
        return RawSocketAddress(kind: .ipv4, port: port, high: v4, low: 0)
    }
}

extension SocketAddress {
    /// The address of raw bytes, as text (allocates: for printing and tests, not per connection).
    public init?(_ raw: RawSocketAddress) {
        var storage = sockaddr_storage()
        switch raw.kind {
        case .none:
            return nil
        case .ipv4:
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = raw.port.bigEndian
            // Safe: the first 4 bytes of `high` are the address, copied into the 4-byte in_addr.
            unsafe withUnsafeBytes(of: raw.high) { bytes in
                unsafe withUnsafeMutableBytes(of: &v4.sin_addr) { unsafe $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<4])) }
            }
            // Safe: a sockaddr_in fits in (and is no more aligned than) sockaddr_storage.
            unsafe withUnsafeMutableBytes(of: &storage) { unsafe $0.storeBytes(of: v4, as: sockaddr_in.self) }
        case .ipv6:
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = raw.port.bigEndian
            // Safe: in6_addr is 16 bytes, filled by two 8-byte stores.
            unsafe withUnsafeMutableBytes(of: &v6.sin6_addr) { bytes in
                unsafe bytes.storeBytes(of: raw.high, toByteOffset: 0, as: UInt64.self)
                unsafe bytes.storeBytes(of: raw.low, toByteOffset: 8, as: UInt64.self)
            }
            // Safe: a sockaddr_in6 fits in (and is no more aligned than) sockaddr_storage.
            unsafe withUnsafeMutableBytes(of: &storage) { unsafe $0.storeBytes(of: v6, as: sockaddr_in6.self) }
        }
        // Safe: the storage holds a whole address of the family it names, live for the call.
        let address = unsafe withUnsafePointer(to: &storage) { pointer in
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe SocketAddress($0) }
        }
        guard let address else { return nil }
        self = address
    }
}

extension TCPStream {
    /// The peer's address and port (`getpeername`), or no address when the socket has no peer.
    /// Reads into the stack: no allocation.
    public var peerRawAddress: RawSocketAddress { rawAddress(uv_tcp_getpeername) }

    /// This end's address and port (`getsockname`): the address the peer connected to, for
    /// an accepted connection. No address when the socket has none. Reads into the stack.
    public var localRawAddress: RawSocketAddress { rawAddress(uv_tcp_getsockname) }

    private func rawAddress(
        _ read: (UnsafePointer<uv_tcp_t>?, UnsafeMutablePointer<sockaddr>?, UnsafeMutablePointer<Int32>?) -> Int32
    ) -> RawSocketAddress {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let status = unsafe withUnsafeMutablePointer(to: &storage) { pointer in
            // Safe: sockaddr_storage is large enough and aligned for any address the call
            // writes (it writes at most `length` bytes); the pointer is used for this call only.
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe read(tcp, $0, &length) }
        }
        guard status == 0 else { return RawSocketAddress() }
        return RawSocketAddress(storage)
    }
}
