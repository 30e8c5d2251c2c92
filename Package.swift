// swift-tools-version:6.2
// StreamVM: publish VM appliances as content-addressed chunk catalogues and stream-boot them on KVM.
import PackageDescription

/// Strict Swift 6 everywhere; the upcoming features keep imports and existentials explicit.
let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "StreamVM",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "streamvm", targets: ["streamvm"]),
        .library(name: "Catalog", targets: ["Catalog"]),
        .library(name: "StreamServer", targets: ["StreamServer"]),
        .library(name: "StreamClient", targets: ["StreamClient"]),
        .library(name: "Hypervisor", targets: ["Hypervisor"]),
        .library(name: "Dedup", targets: ["Dedup"]),
        .library(name: "Dilation", targets: ["Dilation"]),
        .library(name: "HostNetwork", targets: ["HostNetwork"]),
        .library(name: "Migration", targets: ["Migration"]),
        // For the fuzz package (Fuzz/), which drives the control API's request parsing.
        .library(name: "ControlAPI", targets: ["ControlAPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        // HTTP/2 frames and HTTP types for the event-loop fast path; the versions Hummingbird needs.
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.45.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        // TLS for the same pipeline (Hummingbird's TLS module exports only its configuration types).
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
    ],
    targets: [
        // C shims: constants and typed wrappers only, no logic.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .target(name: "CCurl", linkerSettings: [.linkedLibrary("curl")]),
        .target(name: "CKVM"),

        .target(
            name: "Catalog",
            dependencies: ["CZstd", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strictSettings),
        .target(
            name: "StreamServer",
            dependencies: [
                "Catalog",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // Server side (StreamServer): connection handling and push client.
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOHPACK", package: "swift-nio-http2"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP2", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings),
        .target(
            name: "StreamClient",
            dependencies: [
                "Catalog", "CCurl",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings),
        .target(
            name: "Hypervisor",
            dependencies: ["CKVM", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings),
        // Run many: identical-page sharing (Difference Engine) and dilated clocks (DieCast).
        .target(name: "Dedup", dependencies: ["Hypervisor", "CZstd"], swiftSettings: strictSettings),
        .target(name: "Dilation", dependencies: ["Hypervisor"], swiftSettings: strictSettings),
        // Host networking for appliances: the learning switch between them and the tap backend, both
        // behind Hypervisor's NetworkBackend seam (the virtio-net device never sees them).
        .target(
            name: "HostNetwork",
            dependencies: ["Hypervisor", "CKVM", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings),
        // Stream-boot glue: LazyImage as a virtio-blk backend, prefetch and traces around a Machine.
        // Its own target because Hypervisor must not import StreamClient (docs/DESIGN.md module rule).
        .target(
            name: "StreamBoot",
            dependencies: ["Catalog", "StreamClient", "Hypervisor", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings),
        // The control API of a running machine: Hummingbird over a Unix socket (Firecracker's shapes).
        .target(
            name: "ControlAPI",
            dependencies: [
                "Hypervisor",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings),
        // Live migration: the source's page server and the destination's listener (Hummingbird,
        // cleartext HTTP/2), pages fetched with StreamClient's libcurl fetcher, the machine through
        // the Hypervisor's public API (pause, captured state, restore with a page source).
        .target(
            name: "Migration",
            dependencies: [
                "Hypervisor", "StreamClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings),
        // Every `streamvm bench` implementation and its helpers (peers, shaping proxy, statistics):
        // only the CLI and tests depend on it, so no library carries benchmark code.
        .target(
            name: "Benchmarks",
            dependencies: [
                "Catalog", "StreamServer", "StreamClient", "Hypervisor", "StreamBoot", "HostNetwork", "Dedup", "Dilation", "Migration", "CCurl", "CKVM",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings),
        .executableTarget(
            name: "streamvm",
            dependencies: [
                "Catalog", "StreamServer", "StreamClient", "Hypervisor", "StreamBoot", "HostNetwork", "Benchmarks", "ControlAPI", "Dedup", "Dilation", "Migration",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings),

        // Helpers shared by the test targets (temporary directories, off-pool execution, peers on
        // this host); it lives under Tests/ and only test targets depend on it.
        .target(
            name: "TestSupport",
            dependencies: ["Catalog", .product(name: "Logging", package: "swift-log")],
            path: "Tests/TestSupport"),
        .testTarget(name: "CatalogTests", dependencies: ["Catalog", "TestSupport"]),
        .testTarget(
            name: "StreamServerTests",
            dependencies: [
                "StreamServer", "Catalog", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .testTarget(name: "HypervisorTests", dependencies: ["Hypervisor", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "DedupTests", dependencies: ["Dedup", "Hypervisor", "TestSupport"]),
        .testTarget(name: "DilationTests", dependencies: ["Dilation", "Hypervisor", "Benchmarks", "TestSupport"]),
        .testTarget(name: "MigrationTests", dependencies: ["Migration", "Hypervisor", "StreamClient", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(name: "HostNetworkTests", dependencies: ["HostNetwork", "Hypervisor", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "StreamClientTests",
            dependencies: ["StreamClient", "StreamServer", "Benchmarks", "Catalog", "CCurl", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "StreamBootTests",
            dependencies: ["StreamBoot", "StreamClient", "StreamServer", "Benchmarks", "Hypervisor", "Catalog", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        .testTarget(
            name: "ControlAPITests",
            dependencies: ["ControlAPI", "Hypervisor", "TestSupport", .product(name: "Logging", package: "swift-log")]),
        // The built command line as a user runs it (a child process; depends on the executable so it is built).
        .testTarget(name: "streamvmTests", dependencies: ["streamvm", "TestSupport"]),
        .testTarget(name: "BenchmarksTests", dependencies: ["Benchmarks", "StreamBoot", "Catalog", "TestSupport"]),
    ]
)
