// swift-tools-version:6.2
import PackageDescription

let package = Package(
    name: "FastAlloc",
    products: [
        .executable(name: "fastalloc-server", targets: ["fastalloc-server"]),
        .executable(name: "fastalloc-load", targets: ["fastalloc-load"]),
        .library(name: "FastAlloc", targets: ["FastAlloc"]),
        .library(name: "PacketBuffers", targets: ["PacketBuffers"]),
        // For the fuzzers' package (Fuzz/): the server's configuration parsing and its stats
        // endpoint's request handling.
        .library(name: "ServerCore", targets: ["ServerCore"]),
        .library(name: "StatsEndpoint", targets: ["StatsEndpoint"]),
        .library(name: "Threads", targets: ["Threads"]),
        .library(name: "Options", targets: ["Options"]),
        // The PROXY protocol header, for the server and for the fuzzers' package.
        .library(name: "ProxyProtocol", targets: ["ProxyProtocol"]),
        .executable(name: "fastalloc-demo", targets: ["fastalloc-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        // The pool library: standard library, Synchronization, the platform C library and its own
        // C thread-local (CFastAllocShims: a thread's magazine lookup) only.
        // Both it and PacketBuffers build with strict memory safety checking (SE-0458, which
        // needs tools 6.2): every unsafe operation is marked `unsafe`, with its invariant.
        .target(name: "FastAlloc", dependencies: ["CFastAllocShims"], swiftSettings: [.strictMemorySafety()]),
        .target(name: "CFastAllocShims"),
        // Fixed-size byte buffers for the server: a local pool per worker, a shared overflow pool.
        .target(name: "PacketBuffers", dependencies: ["FastAlloc", "CPacketBuffersShims"], swiftSettings: [.strictMemorySafety()]),
        // A thread identity that costs no call: one thread-local byte's address.
        .target(name: "CPacketBuffersShims"),
        // Debian's libuv1-dev, as a module.
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        // Thread start-up, written once: ThreadHandle (start, idempotent join) and OneShot.
        .target(name: "Threads"),
        // Options declared once (name, variable, parser, rule, help) and what reads them: the
        // command line, the environment, a config file's values, validation, --help; the value
        // syntaxes they share.
        .target(name: "Options", dependencies: ["FastAlloc"]),
        // Debian's libyaml-dev (libyaml 0.2), as a module: the config file's parser.
        .systemLibrary(name: "CYAML", pkgConfig: "yaml-0.1", providers: [.apt(["libyaml-dev"])]),
        // The config file: YAML read with libyaml's event parser into a tree whose every node
        // knows its line, for Options. Not Yams nor swift-configuration: both bring Foundation,
        // 8.7 MB to 73-79 MB for a static binary and 3-12 ms more per start (docs/ARCHITECTURE.md).
        .target(name: "ConfigYAML", dependencies: ["CYAML", "Options", "FastAlloc"]),
        // The few libuv pieces the server and the load client need, in Swift; strict memory
        // safety checking too: libuv's C structs and pointers behind small safe classes.
        .target(name: "UVLoop", dependencies: ["CLibUV", "FastAlloc"], swiftSettings: [.strictMemorySafety()]),
        // The PROXY protocol (haproxy's doc/proxy-protocol.txt), v1 and v2: a header parsed
        // from a connection's first bytes and written before an upstream's, without allocating.
        // UVLoop for RawSocketAddress only.
        .target(name: "ProxyProtocol", dependencies: ["UVLoop"], swiftSettings: [.strictMemorySafety()]),
        // The server: workers, sessions (echo and relay), backpressure, timeouts, limits, drain.
        .target(name: "ServerCore", dependencies: [
            "UVLoop", "PacketBuffers", "FastAlloc", "Options", "Threads", "ProxyProtocol", .product(name: "Logging", package: "swift-log"),
        ]),
        // Debian's libhttp-parser-dev (nodejs/http-parser), as a module: the stats endpoint's parser.
        .systemLibrary(name: "CHTTPParser", providers: [.apt(["libhttp-parser-dev"])]),
        // The stats HTTP endpoint: /metrics, /stats, /healthz, /readyz and the dashboard.
        .target(name: "StatsEndpoint", dependencies: [
            "ServerCore", "UVLoop", "PacketBuffers", "Threads", "CHTTPParser", .product(name: "Logging", package: "swift-log"),
        ]),
        // The binary upgrade (SIGUSR2): the listening sockets handed to a new process by
        // inheritance, its "ready" over a pipe, and systemd's notify socket (MAINPID).
        .target(name: "Upgrade", dependencies: ["UVLoop", "CLibUV"], swiftSettings: [.strictMemorySafety()]),
        .executableTarget(name: "fastalloc-server", dependencies: [
            "ServerCore", "StatsEndpoint", "UVLoop", "FastAlloc", "Options", "ConfigYAML", "Upgrade", .product(name: "Logging", package: "swift-log"),
        ]),
        // The load client's engine: connections, pattern, verification, histograms, report.
        .target(name: "LoadClient", dependencies: ["UVLoop", "FastAlloc", "Options", "Threads", .product(name: "Histogram", package: "hdrhistogram-swift")]),
        .executableTarget(name: "fastalloc-load", dependencies: ["LoadClient", "Options"]),
        // A tour of the pools, printed (`make demo`).
        .executableTarget(name: "fastalloc-demo", dependencies: ["FastAlloc", "PacketBuffers", "Threads"]),
        .target(name: "TestSupport", dependencies: ["Threads"], path: "Tests/TestSupport"),
        // The interleaving checker: the model of `_AtomicSteps` and the scheduler that enumerates
        // every interleaving of a few threads (docs/INTERLEAVINGS.md); and its scenarios.
        .target(name: "Interleavings", dependencies: ["FastAlloc", "Threads"], path: "Tests/Interleavings"),
        .testTarget(name: "InterleavingTests", dependencies: ["Interleavings", "FastAlloc"]),
        .testTarget(name: "FastAllocTests", dependencies: ["FastAlloc", "TestSupport", "Threads"]),
        .testTarget(name: "PacketBuffersTests", dependencies: ["PacketBuffers", "FastAlloc", "TestSupport", "Threads"]),
        .testTarget(name: "LoadClientTests", dependencies: ["LoadClient", "UVLoop", "Options", "TestSupport"]),
        .testTarget(name: "OptionsTests", dependencies: ["Options", "ConfigYAML", "FastAlloc"]),
        .testTarget(name: "ThreadsTests", dependencies: ["Threads", "TestSupport"]),
        .testTarget(name: "UVLoopTests", dependencies: ["UVLoop", "TestSupport"]),
        .testTarget(name: "ProxyProtocolTests", dependencies: ["ProxyProtocol", "UVLoop"]),
        // End to end: in-process servers and the real fastalloc-server process on 127.0.0.1.
        .testTarget(name: "ServerTests", dependencies: [
            "ServerCore", "StatsEndpoint", "LoadClient", "UVLoop", "PacketBuffers", "Options", "ConfigYAML", "TestSupport", "fastalloc-server", "Upgrade",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
