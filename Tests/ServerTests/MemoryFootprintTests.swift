@testable import ServerCore
import Testing
import UVLoop

/// What every idle connection holds in this code's own types: a `Session` with its
/// `SessionStateMachine`, `SessionPeer` (two `RawSocketAddress`es) and `SessionTimeouts`.
/// Stored properties are laid out in declaration order, so a field added in the wrong place
/// costs padding on every connection (Benchmarks/ANALYSES.md, "Idle memory"; the whole is
/// measured by Benchmarks/idle-connections.py). These bounds are the sizes the fields are
/// packed to now: each fails if one grows.
@Suite struct MemoryFootprintTests {
    @Test func perConnectionValues_stayPacked() {
        #expect(MemoryLayout<RawSocketAddress>.size == 19)  // was 24: kind and port first
        #expect(MemoryLayout<SessionPeer>.size <= 52)  // was 57
        #expect(MemoryLayout<SessionTimeouts>.size == 16)  // was 32: four 64-bit words
        #expect(MemoryLayout<SessionStateMachine.SideState>.size <= 40)  // was 48
        #expect(MemoryLayout<SessionStateMachine>.size <= 129)  // was 172
    }

    /// 32 bits hold every timeout the options allow, and anything beyond is clamped, not wrapped.
    @Test func timeouts_holdTheLargestAllowed_andClampBeyond() throws {
        var config = ServerConfig(mode: .relay)
        config.idleTimeout = ServerConfig.maxTimeout
        config.writeTimeout = ServerConfig.maxTimeout
        config.lingerTimeout = ServerConfig.maxTimeout
        config.connectTimeout = ServerConfig.maxConnectTimeout
        let timeouts = SessionTimeouts(config)
        #expect(timeouts.idle == 604_800_000)
        #expect(timeouts.write == 604_800_000)
        #expect(timeouts.linger == 604_800_000)
        #expect(timeouts.connect == 3_600_000)
        #expect(timeouts == SessionTimeouts(idle: 604_800_000, connect: 3_600_000, write: 604_800_000, linger: 604_800_000))

        let beyond = SessionTimeouts(idle: UInt64(UInt32.max) + 1, connect: .max, write: 1, linger: 0)
        #expect(beyond.idle == UInt64(UInt32.max))
        #expect(beyond.connect == UInt64(UInt32.max))
        #expect(beyond.write == 1)
        #expect(beyond.linger == 0)
    }
}
