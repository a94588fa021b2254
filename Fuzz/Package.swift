// swift-tools-version:6.1
// The fuzzers (libFuzzer), in their own package so that a normal `swift build` of the root
// package never links them. Build and run with `make fuzz` (see Fuzz/run.sh):
//   swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld
import PackageDescription

let package = Package(
    name: "Fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "FastAlloc", path: ".."),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "FuzzSupport"),
        .executableTarget(name: "fuzz-config", dependencies: ["FuzzSupport", .product(name: "ServerCore", package: "FastAlloc")]),
        .executableTarget(name: "fuzz-http", dependencies: [
            "FuzzSupport", .product(name: "ServerCore", package: "FastAlloc"), .product(name: "StatsEndpoint", package: "FastAlloc"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The same request handling without a socket: HTTPRequestHandler fed in pieces, in-process.
        .executableTarget(name: "fuzz-http-handler", dependencies: [
            "FuzzSupport", .product(name: "StatsEndpoint", package: "FastAlloc"),
        ]),
        .executableTarget(name: "fuzz-pools", dependencies: [
            "FuzzSupport", .product(name: "FastAlloc", package: "FastAlloc"), .product(name: "PacketBuffers", package: "FastAlloc"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
