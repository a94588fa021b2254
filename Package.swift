// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "FastAlloc",
    products: [
        .library(name: "FastAlloc", targets: ["FastAlloc"]),
        .executable(name: "fastalloc-demo", targets: ["fastalloc-demo"]),
    ],
    targets: [
        // The pool library: standard library, Synchronization and the platform C library only.
        .target(name: "FastAlloc"),
        // Until the server exists, `make run` runs this demo of the pools.
        .executableTarget(name: "fastalloc-demo", dependencies: ["FastAlloc"]),
        .testTarget(name: "FastAllocTests", dependencies: ["FastAlloc"]),
    ],
    swiftLanguageModes: [.v6]
)
