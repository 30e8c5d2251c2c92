// swift-tools-version:6.2
// StreamVM's fuzz targets: one libFuzzer executable per parser that faces hostile input. A package of
// its own (depending on the main one by path) so the main build and CI never see the sanitizer flags.
// Build with scripts/fuzz, which passes `--sanitize=fuzzer --sanitize=address`.
import PackageDescription

/// Each target defines `LLVMFuzzerTestOneInput` and leaves `main` to libFuzzer's runtime.
let fuzzSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .unsafeFlags(["-parse-as-library"]),
]

let logging = Target.Dependency.product(name: "Logging", package: "swift-log")

/// (target, what it imports from the main package).
let targets: [(name: String, dependencies: [Target.Dependency])] = [
    ("fuzz-virtqueue", [.product(name: "Hypervisor", package: "StreamVM")]),
    ("fuzz-virtio-blk", [.product(name: "Hypervisor", package: "StreamVM"), logging]),
    ("fuzz-virtio-mmio", [.product(name: "Hypervisor", package: "StreamVM"), logging]),
    ("fuzz-vmstate", [.product(name: "Hypervisor", package: "StreamVM"), logging]),
    ("fuzz-manifest", [.product(name: "Catalog", package: "StreamVM")]),
    ("fuzz-catalog", [.product(name: "Catalog", package: "StreamVM")]),
    ("fuzz-access-model", [.product(name: "Catalog", package: "StreamVM")]),
    ("fuzz-model-index", [.product(name: "Catalog", package: "StreamVM")]),
    ("fuzz-trace", [.product(name: "Catalog", package: "StreamVM")]),
    ("fuzz-byte-range", [.product(name: "StreamServer", package: "StreamVM")]),
    ("fuzz-request-target", [.product(name: "StreamServer", package: "StreamVM")]),
    ("fuzz-control-request", [.product(name: "ControlAPI", package: "StreamVM")]),
]

let package = Package(
    name: "StreamVMFuzz",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "StreamVM", path: ".."),
        // The Hypervisor's devices take a Logger; the same version the main package resolves.
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    ],
    targets: [
        // Turning fuzzer bytes into the inputs the parsers take; imports nothing from the project.
        .target(name: "FuzzSupport", path: "Sources/FuzzSupport"),
    ] + targets.map { target in
        .executableTarget(
            name: target.name,
            dependencies: ["FuzzSupport"] + target.dependencies,
            path: "Sources/\(target.name)",
            swiftSettings: fuzzSettings)
    }
)
