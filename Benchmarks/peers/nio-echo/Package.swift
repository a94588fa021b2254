// swift-tools-version:6.1
// A SwiftNIO echo server, the peer the benchmarks compare fastalloc-server with: NIO's own
// echo example's shape (an inbound handler that writes back what it reads), N event loops.
import PackageDescription

let package = Package(
    name: "nio-echo",
    dependencies: [.package(url: "https://github.com/apple/swift-nio", from: "2.101.2")],
    targets: [
        .executableTarget(name: "nio-echo", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
