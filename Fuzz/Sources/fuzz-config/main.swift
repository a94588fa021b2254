// Fuzzes the configurations of the server and the load client: `ServerConfig(mode:values:
// environment:)`, the code behind every fastalloc-server flag and FASTALLOC_* variable, and
// LoadConfig as fastalloc-load builds it from its flags, `LoadConfig(values:)` through
// LoadConfig.table; then every integer conversion the server's timers, sweeps, sockets and
// queues and the load client's schedule perform.
//
// The input is lines of `K=VALUE`. The first byte picks what is fuzzed: bit 1 clear, the server
// (bit 0: echo or relay), K's low bits pick the option and its top bit whether the value comes
// from the command line or the environment; bit 1 set, the load client, K's low bits pick the
// flag of LoadConfig.table. Properties: it never crashes; an error names an option of its
// table (with its variable when the value came from there) and a rule; an accepted
// configuration validates again and every conversion of it lies within the documented bounds
// (issue 14: no accepted value may crash the server, e.g. --idle-timeout 1e300 used to pass and
// then trap at the first sweep).
// The conversions also run on fields set straight from the input's bytes, unvalidated, and
// must not trap there either.
//
// --upstream is left out: a name in it is resolved (getaddrinfo), and a fuzzer must not send
// random names to a DNS server. It gets a fixed valid address in relay mode.
//
// LoadConfig's four files are symbolic links to Sources/LoadClient (LoadClient is not a
// library product of the root package, which this package could depend on).
import FuzzSupport
import Options
import PacketBuffers
import ServerCore
import UVLoop
#if canImport(Glibc)
import Glibc
#endif

let options = ServerConfig.options.filter { $0.name != "upstream" }

/// What an error's field may be: an option of the table, or one with the variable its value came
/// from. Made once: an error is the common outcome, and building both spellings for every option
/// on every error cost more than the parse.
let optionFields = Set(ServerConfig.options.flatMap { ["--\($0.name)", "--\($0.name) (from \($0.environment!))"] })

// MARK: The server

/// The bounds every accepted server configuration's conversions keep (ServerConfig+Bounds.swift).
func checkServerBounds(_ config: ServerConfig) {
    let week: UInt64 = 7 * 86_400_000
    check(ServerConfig.workersRange.contains(config.workers), "workers \(config.workers)")
    check(config.bufferMemory <= ServerConfig.bufferMemoryCeiling, "buffer memory \(config.bufferMemory)")
    check(config.idleTimeoutMilliseconds <= week, "idle \(config.idleTimeoutMilliseconds) ms from \(config.idleTimeout) s")
    check((1...3_600_000).contains(config.connectTimeoutMilliseconds), "connect \(config.connectTimeoutMilliseconds) ms")
    check(config.drainTimeoutMilliseconds <= week, "drain \(config.drainTimeoutMilliseconds) ms")
    check(config.writeTimeoutMilliseconds <= week, "write \(config.writeTimeoutMilliseconds) ms")
    check((1...week).contains(config.lingerTimeoutMilliseconds), "linger \(config.lingerTimeoutMilliseconds) ms")
    check((config.idleTimeoutMilliseconds == 0) == (config.idleTimeout == 0), "idle \(config.idleTimeout) s became none")
    check((config.writeTimeoutMilliseconds == 0) == (config.writeTimeout == 0), "write \(config.writeTimeout) s became none")
    check(config.tcpKeepaliveSeconds <= 32_767, "keepalive \(config.tcpKeepaliveSeconds) s")
    check((config.tcpKeepaliveSeconds == 0) == (config.tcpKeepalive == 0), "keepalive \(config.tcpKeepalive) s became off")
    check((10...1000).contains(config.sweepIntervalMilliseconds ?? 0), "sweep \(String(describing: config.sweepIntervalMilliseconds))")
    let high = config.highWatermarkBuffers
    let low = config.lowWatermarkBuffers
    check(high >= 1 && high <= (1 << 30) / 64, "high watermark \(high) buffers")
    check(low >= 0 && low < high, "low watermark \(low) buffers, high \(high)")
}

/// Every conversion on a configuration nobody validated: none may trap.
func convertUnchecked(_ config: ServerConfig) {
    _ = ServerConfig.milliseconds(config.idleTimeout)
    _ = config.idleTimeoutMilliseconds
    _ = config.connectTimeoutMilliseconds
    _ = config.drainTimeoutMilliseconds
    _ = config.writeTimeoutMilliseconds
    _ = config.lingerTimeoutMilliseconds
    if let sweep = config.sweepIntervalMilliseconds { check((10...1000).contains(sweep), "sweep \(sweep) ms") }
    _ = config.tcpKeepaliveSeconds
    check(config.highWatermarkBuffers >= 1, "high watermark \(config.highWatermarkBuffers) buffers")
    check(config.lowWatermarkBuffers >= 0, "low watermark \(config.lowWatermarkBuffers) buffers")
    _ = config.bufferMemory
}

func fuzzServer(_ bytes: UnsafeBufferPointer<UInt8>) {
    let mode: ServerMode = bytes[0] & 1 == 0 ? .echo : .relay
    var values: [String: String] = mode == .relay ? ["upstream": "127.0.0.1:7001"] : [:]
    var environment: [String: String] = [:]
    for line in bytes.dropFirst().split(separator: UInt8(ascii: "\n")) where line.count >= 2 {
        let key = line[line.startIndex]
        let option = options[Int(key & 0x7F) % options.count]
        let value = String(decoding: line.dropFirst(2), as: UTF8.self)
        if key & 0x80 == 0 { values[option.name] = value } else { environment[option.environment!] = value }
    }
    do {
        let config = try ServerConfig(mode: mode, values: values, environment: environment)
        do {
            try config.validate()
        } catch {
            fatalError("accepted, then invalid: \(error)")
        }
        checkServerBounds(config)
    } catch {
        if !optionFields.contains(error.field) { fatalError("an error that names no option: \(error)") }
        if error.expected.isEmpty { fatalError("an error without its rule: \(error)") }
    }
}

// MARK: The load client

let loadOptions = LoadConfig.table.options
/// The fields a load error may name (made once, as `optionFields`).
let loadFields = Set(loadOptions.map { "--\($0.name)" })

/// The bounds every accepted load configuration's conversions keep (LoadConfig+Bounds.swift).
func checkLoadBounds(_ config: LoadConfig) {
    let week: UInt64 = 7 * 86_400 * 1_000_000_000
    check(config.warmupNanoseconds <= week, "warm-up \(config.warmupNanoseconds) ns")
    if let duration = config.durationNanoseconds { check((1...week).contains(duration), "duration \(duration) ns") }
    check((1...3_600_000).contains(config.connectTimeoutMilliseconds), "connect timeout \(config.connectTimeoutMilliseconds) ms")
    if config.rate != nil {
        check((1...1_000_000_000_000_000_000).contains(config.intervalNanoseconds), "interval \(config.intervalNanoseconds) ns")
    } else {
        check(config.intervalNanoseconds == 0, "closed loop with an interval")
    }
    if let bytes = config.bytesPerConnection { check(bytes < Int.max, "bytes per connection \(bytes)") }
    check((1...LoadConfig.maxThreads).contains(config.threads), "threads \(config.threads)")
    check(config.connections * config.depth <= LoadConfig.maxInFlight, "in flight \(config.connections) × \(config.depth)")
}

/// Builds a LoadConfig as fastalloc-load does, from flag values through LoadConfig.table (K's
/// low bits pick the flag); an accepted configuration must validate again and keep the bounds.
func fuzzLoad(_ bytes: UnsafeBufferPointer<UInt8>) {
    var values: [String: String] = [:]
    for line in bytes.dropFirst().split(separator: UInt8(ascii: "\n")) where line.count >= 2 {
        let option = loadOptions[Int(line[line.startIndex] & 0x7F) % loadOptions.count]
        values[option.name] = String(decoding: line.dropFirst(2), as: UTF8.self)
    }
    do {
        let config = try LoadConfig(values: values)
        do {
            try config.validate()
        } catch {
            fatalError("accepted, then invalid: \(error)")
        }
        checkLoadBounds(config)
    } catch {
        if !loadFields.contains(error.field) { fatalError("an error that names no flag: \(error)") }
        if error.expected.isEmpty { fatalError("an error without its rule: \(error)") }
    }
}

// MARK: Unvalidated fields, straight from the input's bytes

/// Reads the input as 8-byte words (zeros past its end).
struct Words {
    var reader: ByteReader
    mutating func next() -> UInt64 {
        var word: UInt64 = 0
        for _ in 0..<8 { word = word << 8 | UInt64(reader.next()) }
        return word
    }
    mutating func double() -> Double { Double(bitPattern: next()) }
    mutating func int() -> Int { Int(truncatingIfNeeded: next()) }
}

/// A default configuration of each mode, made once and copied: `ServerConfig(mode:)` asks
/// sysconf for the online cores (its default worker count), which reads
/// /sys/devices/system/cpu/online each time; fuzzServer's parse does that anyway, and every field
/// fuzzConversions converts is set from the input below.
let defaultConfigs = (echo: ServerConfig(mode: .echo), relay: ServerConfig(mode: .relay))

func fuzzConversions(_ bytes: UnsafeBufferPointer<UInt8>) {
    var words = Words(reader: ByteReader(bytes))
    var server = words.next() & 1 == 0 ? defaultConfigs.echo : defaultConfigs.relay
    server.workers = words.int()
    server.idleTimeout = words.double()
    server.connectTimeout = words.double()
    server.drainTimeout = words.double()
    server.writeTimeout = words.double()
    server.lingerTimeout = words.double()
    server.tcpKeepalive = words.double()
    server.highWatermark = words.int()
    server.lowWatermark = words.int()
    server.buffers.bufferSize = words.int()
    server.buffers.localBuffers = words.int()
    server.buffers.overflowMax = words.int()
    convertUnchecked(server)

    var load = LoadConfig(target: SocketAddress(host: "127.0.0.1", port: 7000))
    load.connections = words.int()
    load.size = words.int()
    load.warmup = words.double()
    load.duration = words.double()
    load.connectTimeout = words.double()
    load.rate = words.double()
    load.messagesPerConnection = words.next() & 1 == 0 ? nil : words.int()
    _ = load.warmupNanoseconds
    _ = load.durationNanoseconds
    _ = load.connectTimeoutMilliseconds
    _ = load.intervalNanoseconds
    _ = load.bytesPerConnection
    _ = clampedNanoseconds(words.double())
    _ = clampedMilliseconds(words.double())
}

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: start, count: count)  // Safe: valid for the call (libFuzzer)
    if bytes[0] & 2 == 0 { fuzzServer(bytes) } else { fuzzLoad(bytes) }
    fuzzConversions(bytes)
    let text = String(decoding: bytes, as: UTF8.self)
    _ = parseByteCount(text)
    _ = ServerConfig.parseGrowth(text)
    _ = parseDuration(text)
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

runFuzzer(LLVMFuzzerTestOneInput)
