// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "FastAlloc",
    products: [
        .library(name: "FastAlloc", targets: ["FastAlloc"]),
        .library(name: "PacketBuffers", targets: ["PacketBuffers"]),
        .executable(name: "fastalloc-demo", targets: ["fastalloc-demo"]),
    ],
    targets: [
        // The pool library: standard library, Synchronization and the platform C library only.
        .target(name: "FastAlloc"),
        // Fixed-size byte buffers for the server: a local pool per worker, a shared overflow pool.
        .target(name: "PacketBuffers", dependencies: ["FastAlloc", "CPacketBuffersShims"]),
        // A thread identity that costs no call: one thread-local byte's address.
        .target(name: "CPacketBuffersShims"),
        // Until the server exists, `make run` runs this demo of the pools.
        .executableTarget(name: "fastalloc-demo", dependencies: ["FastAlloc", "PacketBuffers"]),
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "FastAllocTests", dependencies: ["FastAlloc", "TestSupport"]),
        .testTarget(name: "PacketBuffersTests", dependencies: ["PacketBuffers", "FastAlloc", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
