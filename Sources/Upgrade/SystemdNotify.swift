#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: one datagram to the Unix socket in `NOTIFY_SOCKET` (a path,
/// or an abstract name when it starts with '@'). The unit runs `Type=notify` with
/// `NotifyAccess=all`, so that after an upgrade the new process can say `MAINPID=` and systemd
/// follows it (deploy/systemd/fastalloc-server.service).
public enum SystemdNotify {
    /// Sends `state` (lines such as `READY=1`, `MAINPID=1234`, `RELOADING=1`, `STOPPING=1`,
    /// `STATUS=...`); false when there is no `NOTIFY_SOCKET` (not under systemd) or the send
    /// failed. Never blocks: a datagram socket, MSG_DONTWAIT.
    @discardableResult
    public static func send(_ state: String, environment: [String: String]) -> Bool {
        guard let path = environment["NOTIFY_SOCKET"], path.utf8.count >= 2 else { return false }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var pathBytes = Array(path.utf8)
        if pathBytes[0] == UInt8(ascii: "@") { pathBytes[0] = 0 }  // the abstract namespace
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard pathBytes.count < capacity else { return false }
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { sunPath in
            // Safe: pathBytes.count < the size of sun_path (checked above).
            for (index, byte) in pathBytes.enumerated() { unsafe sunPath[index] = byte }
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + pathBytes.count + (pathBytes[0] == 0 ? 0 : 1))
        let descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        let message = Array(state.utf8)
        let sent = unsafe withUnsafePointer(to: &address) { pointer in
            // Safe: a sockaddr_un is a sockaddr of `length` bytes (family, then the path);
            // sendto reads `message.count` bytes of the array for the call only.
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
                unsafe message.withUnsafeBytes { unsafe sendto(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT), socketAddress, length) }
            }
        }
        return sent == message.count
    }
}
