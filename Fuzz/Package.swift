// swift-tools-version:6.1
// The fuzzers (libFuzzer), in their own package so that a normal `swift build` of the root
// package never links them. Build and run with `make fuzz` (see Fuzz/run.sh):
//   swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
import PackageDescription

/// Harness code (FuzzSupport, fuzz-pools) keeps edge coverage but not comparison tracing
/// (-sanitize=fuzzer's default adds trace-cmp): the code under test keeps all of it. The
/// harness's comparisons are its checks, which must never fail, and the model's bookkeeping;
/// tracing them took about a fifth of fuzz-pools' time (perf) and only fed libFuzzer's
/// comparison table with values no mutation needs. run.sh's optimised build only (the flag needs a sanitizer;
/// a debug build goes without it). Not for fuzz-config, whose target compiles LoadConfig's
/// sources, which are under test.
let harnessCoverage: [SwiftSetting] = [
    .unsafeFlags(["-sanitize-coverage=edge,inline-8bit-counters,pc-table"], .when(configuration: .release)),
]

let package = Package(
    name: "Fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "FastAlloc", path: ".."),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "FuzzSupport", dependencies: [.product(name: "Threads", package: "FastAlloc")], swiftSettings: harnessCoverage),
        .executableTarget(name: "fuzz-config", dependencies: [
            "FuzzSupport", .product(name: "ServerCore", package: "FastAlloc"), .product(name: "Options", package: "FastAlloc"),
        ]),
        .executableTarget(name: "fuzz-http", dependencies: [
            "FuzzSupport", .product(name: "ServerCore", package: "FastAlloc"), .product(name: "StatsEndpoint", package: "FastAlloc"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The same request handling without a socket: HTTPRequestHandler fed in pieces, in-process.
        .executableTarget(name: "fuzz-http-handler", dependencies: [
            "FuzzSupport", .product(name: "StatsEndpoint", package: "FastAlloc"),
        ]),
        // The PROXY protocol header parser, fed a connection's first bytes (whole and by every
        // prefix), with the encoder and inet_pton as oracles. All its code under test is in the
        // ProxyProtocol library; its own comparisons are the checks, so harness coverage.
        .executableTarget(name: "fuzz-proxy-header", dependencies: [
            "FuzzSupport", .product(name: "ProxyProtocol", package: "FastAlloc"),
        ], swiftSettings: harnessCoverage),
        .executableTarget(name: "fuzz-pools", dependencies: [
            "FuzzSupport", .product(name: "FastAlloc", package: "FastAlloc"), .product(name: "PacketBuffers", package: "FastAlloc"),
        ], swiftSettings: harnessCoverage),
    ],
    swiftLanguageModes: [.v6]
)
