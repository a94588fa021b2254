// swift-tools-version:6.1
import PackageDescription

// The microbenchmarks of the pools, run with `swift package benchmark` from this folder
// (or `make bench-pools` from the top). Its own package so the library carries no benchmark
// dependencies; it depends on the root package by path.
let package = Package(
    name: "FastAllocBenchmarks",
    dependencies: [
        .package(name: "FastAlloc", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .target(
            name: "BenchmarkSupport",
            dependencies: [.product(name: "Benchmark", package: "benchmark")],
            path: "Benchmarks/BenchmarkSupport"
        ),
        .executableTarget(
            name: "PoolBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "FastAlloc", package: "FastAlloc"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/PoolBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "PacketBufferBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "PacketBuffers", package: "FastAlloc"),
                .product(name: "FastAlloc", package: "FastAlloc"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/PacketBufferBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
