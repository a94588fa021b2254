// The integers the server's timers, sweeps, sockets and queues use, computed from the
// configuration in this one place. Each clamps: it never traps, whatever the fields hold
// (validate() keeps them sensible; these stay safe even for a configuration never validated,
// which the fuzzer checks).

import UVLoop

extension ServerConfig {
    /// Whole milliseconds for a time in seconds, as libuv's timers take them: rounded to the
    /// nearest millisecond, and a positive time is at least 1 ms (so a tiny timeout still times
    /// out instead of reading as 0, "none"). NaN, negative times and -inf give 0; +inf and any
    /// time of 2^64 ms or more give `UInt64.max`. Never traps.
    public static func milliseconds(_ seconds: Double) -> UInt64 {
        clampedMilliseconds(seconds)  // UVLoop's, which the load client's timers share
    }

    /// The idle timeout in ms; 0: none.
    public var idleTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(idleTimeout) }
    /// The relay's connect timeout in ms (always > 0 in a valid configuration).
    public var connectTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(connectTimeout) }
    /// The time a connection has to send its PROXY header, in ms (> 0 in a valid configuration).
    public var proxyProtocolTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(proxyProtocolTimeout) }
    /// The drain timeout in ms; 0: close what is left at once.
    public var drainTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(drainTimeout) }
    /// The write timeout in ms; 0: none.
    public var writeTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(writeTimeout) }
    /// The linger timeout in ms (always > 0 in a valid configuration).
    public var lingerTimeoutMilliseconds: UInt64 { ServerConfig.milliseconds(lingerTimeout) }

    /// The period of a worker's timeout sweep in ms, or nil when no timeout needs one: a
    /// quarter of the shortest enabled timeout among idle, connect (relay mode only), write
    /// and linger, clamped to 10...1000 ms. A timeout fires at most a quarter of its length
    /// (and never more than a second) late; a sweep runs at most 100 times a second.
    public var sweepIntervalMilliseconds: UInt64? {
        let timeouts = [idleTimeoutMilliseconds, mode == .relay ? connectTimeoutMilliseconds : 0,
                        writeTimeoutMilliseconds, lingerTimeoutMilliseconds, acceptProxy ? proxyProtocolTimeoutMilliseconds : 0]
        guard let shortest = timeouts.filter({ $0 > 0 }).min() else { return nil }
        return min(max(shortest / 4, 10), 1000)
    }

    /// TCP keepalive's idle time in whole seconds for `uv_tcp_keepalive` (an unsigned int):
    /// 0 when off, otherwise the nearest second and at least 1, at most `UInt32.max` (validate()
    /// keeps it to Linux's 32,767). NaN and negatives are off.
    public var tcpKeepaliveSeconds: UInt32 {
        guard tcpKeepalive > 0 else { return 0 }  // NaN, 0, negatives
        let seconds = tcpKeepalive.rounded()
        if seconds >= 4_294_967_295.0 { return .max }  // +inf included
        return max(1, UInt32(seconds))
    }

    /// The high watermark in whole buffers, as the server counts a write queue:
    /// ceil(highWatermark / bufferSize), at least 1. Never traps (a buffer size below 1 counts
    /// as 1 byte; the division cannot overflow).
    public var highWatermarkBuffers: Int {
        let size = max(1, buffers.bufferSize)
        guard highWatermark > 0 else { return 1 }
        let (quotient, remainder) = highWatermark.quotientAndRemainder(dividingBy: size)
        return remainder == 0 ? max(1, quotient) : quotient + 1  // quotient < Int.max: size >= 1, remainder > 0
    }

    /// The low watermark in whole buffers: floor(lowWatermark / bufferSize), at least 0.
    /// Reading resumes when a queue holds this many buffers or fewer. Below
    /// `highWatermarkBuffers` whenever lowWatermark < highWatermark (as validate() requires).
    public var lowWatermarkBuffers: Int {
        max(0, lowWatermark) / max(1, buffers.bufferSize)
    }
}
