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
    ],
    targets: [
        .executableTarget(name: "fuzz-config", dependencies: [.product(name: "ServerCore", package: "FastAlloc")]),
    ],
    swiftLanguageModes: [.v6]
)
