// Fuzzes the server's configuration parsing: `ServerConfig(mode:values:environment:)`, the
// code behind every command-line flag and FASTALLOC_* variable, with arbitrary option values.
// The input is lines of `K=VALUE`: K's low bits pick the option, its top bit whether the value
// comes from the command line or the environment; the first byte picks the mode.
// Properties: it never crashes; an error names an option of the table (with its variable when
// the value came from there) and a rule; an accepted configuration validates again.
// --upstream is left out: a name in it is resolved (getaddrinfo), and a fuzzer must not send
// random names to a DNS server. It gets a fixed valid address in relay mode.
import FuzzSupport
import ServerCore
#if canImport(Glibc)
import Glibc
#endif

let options = ServerConfig.options.filter { $0.name != "upstream" }

func fuzzOne(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    guard let start, count > 0 else { return 0 }
    let bytes = UnsafeBufferPointer(start: start, count: count)  // valid for the call (libFuzzer)
    let mode: ServerMode = bytes[0] & 1 == 0 ? .echo : .relay
    var values: [String: String] = mode == .relay ? ["upstream": "127.0.0.1:7001"] : [:]
    var environment: [String: String] = [:]
    for line in bytes.dropFirst().split(separator: UInt8(ascii: "\n")) where line.count >= 2 {
        let key = line[line.startIndex]
        let option = options[Int(key & 0x7F) % options.count]
        let value = String(decoding: line.dropFirst(2), as: UTF8.self)
        if key & 0x80 == 0 { values[option.name] = value } else { environment[option.environment] = value }
    }
    do {
        let config = try ServerConfig(mode: mode, values: values, environment: environment)
        do {
            try config.validate()
        } catch {
            fatalError("accepted, then invalid: \(error)")
        }
    } catch {
        let named = ServerConfig.options.contains { error.field == "--\($0.name)" || error.field == "--\($0.name) (from \($0.environment))" }
        if !named { fatalError("an error that names no option: \(error)") }
        if error.expected.isEmpty { fatalError("an error without its rule: \(error)") }
    }
    _ = ServerConfig.parseByteCount(String(decoding: bytes, as: UTF8.self))
    _ = ServerConfig.parseGrowth(String(decoding: bytes, as: UTF8.self))
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 { fuzzOne(start, count) }

runFuzzer(LLVMFuzzerTestOneInput)
