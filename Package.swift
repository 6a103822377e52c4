// swift-tools-version:6.2
import PackageDescription

// Hot-path targets are optimised even in debug builds: tests run real models through them,
// and an unoptimised Swift inner loop is 20-100x slower than the same loop at -O.
let optimised: [SwiftSetting] = [.unsafeFlags(["-O", "-enable-testing"])]

let package = Package(
    name: "Tessel",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "router", targets: ["router"]),
        .executable(name: "worker", targets: ["worker"]),
        // What a custom-architecture plugin builds against (examples/custom-architecture).
        .library(name: "TesselWorkerCore", targets: ["WorkerCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries, one system-library target each, wrapped by one Swift type each.
        // libzmq's pkg-config flags name include directories its header does not need (and
        // SwiftPM warns about them): the module map links it, zmq.h is in /usr/include.
        .systemLibrary(name: "CZeroMQ", path: "Sources/CZeroMQ"),
        .systemLibrary(name: "CHwloc", path: "Sources/CHwloc", pkgConfig: "hwloc",
                       providers: [.apt(["libhwloc-dev"])]),

        // Shared: model files (GGUF, safetensors), configuration, architecture registry.
        .target(name: "ModelFormats", path: "Sources/Shared/ModelFormats",
                swiftSettings: optimised),
        // Shared: the router<->worker wire protocol (generated) and the ZeroMQ transport.
        .target(name: "Wire",
                dependencies: ["CZeroMQ", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                path: "Sources/Shared/Wire"),

        // Shared: the service manager's notifications (systemd Type=notify, watchdog).
        .target(name: "ServiceNotify", path: "Sources/Shared/ServiceNotify"),

        // Collectives: shared-memory groups of the ranks of one host (C: atomics and futexes on
        // a segment mapped by several processes), hwloc topology and pinning.
        .target(name: "CCollectives", path: "Sources/CCollectives", cSettings: [.unsafeFlags(["-O3"])],
                linkerSettings: [.linkedLibrary("sodium")]),
        .target(name: "Collectives", dependencies: ["CHwloc", "CCollectives"],
                path: "Sources/Collectives", swiftSettings: optimised),

        // Router side.
        .target(name: "Tokenizers", dependencies: ["ModelFormats"],
                path: "Sources/Router/Tokenizers", swiftSettings: optimised),
        .target(name: "Jinja", path: "Sources/Router/Jinja"),
        // JSON documents as the API reads and writes them.
        .target(name: "JSON", dependencies: ["Jinja"], path: "Sources/Router/JSON", swiftSettings: optimised),
        // Structured output: schemas and regexes compiled to automata, token masks from them;
        // the scheduler computes a mask before every constrained step, so it is a hot path.
        .target(name: "Grammar", dependencies: ["JSON", "Tokenizers", "Wire"],
                path: "Sources/Router/Grammar", swiftSettings: optimised),
        .target(name: "RouterCore",
                dependencies: [
                    "ModelFormats", "Wire", "Tokenizers", "Jinja", "JSON", "Grammar",
                    .product(name: "Hummingbird", package: "hummingbird"),
                    .product(name: "HummingbirdCore", package: "hummingbird"),
                    .product(name: "HTTPTypes", package: "swift-http-types"),
                    .product(name: "NIOCore", package: "swift-nio"),
                    .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                    .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                    .product(name: "Logging", package: "swift-log"),
                    .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                ],
                path: "Sources/Router/Core"),
        .executableTarget(name: "router",
                          dependencies: ["RouterCore", "Tokenizers", "Jinja", "ModelFormats", "Collectives", "ServiceNotify", "Wire",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log"),
                                         .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
                          path: "Sources/Router/Main"),

        // Worker side.
        .target(name: "CKernels", path: "Sources/Worker/CKernels",
                cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "WorkerCore",
                dependencies: ["ModelFormats", "Wire", "Collectives", "CKernels",
                               .product(name: "Logging", package: "swift-log")],
                path: "Sources/Worker/Core", swiftSettings: optimised),
        .executableTarget(name: "worker",
                          dependencies: ["WorkerCore", "Collectives", "CKernels", "ModelFormats", "ServiceNotify", "Wire",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                         .product(name: "Logging", package: "swift-log")],
                          path: "Sources/Worker/Main",
                          // Architecture plugins bind to the worker's own Tessel code and types.
                          linkerSettings: [.unsafeFlags(["-Xlinker", "--export-dynamic"])]),
        // A stand-in worker whose failure modes (die on step, hang, fail to load) the supervision
        // tests choose with TESSEL_FAKE_WORKER_MODE.
        .executableTarget(name: "tessel-fake-worker",
                          dependencies: ["WorkerCore", "Wire", .product(name: "Logging", package: "swift-log")],
                          path: "Tests/FakeWorker"),

        // A mutational fuzzer over request bodies and Jinja templates (Tests/Fuzz/main.swift).
        .executableTarget(name: "tessel-fuzz", dependencies: ["RouterCore", "Jinja", "Tokenizers"],
                          path: "Tests/Fuzz", exclude: ["corpus", "make-corpus.py"]),

        // Test support: ranks of a tensor-parallel group on threads of one test process.
        .target(name: "RankThreads", dependencies: ["Collectives"], path: "Tests/RankThreads"),

        .testTarget(name: "ModelFormatsTests", dependencies: ["ModelFormats"],
                    path: "Tests/ModelFormatsTests", resources: [.copy("Fixtures")]),
        .testTarget(name: "TokenizersTests", dependencies: ["Tokenizers"],
                    path: "Tests/TokenizersTests", resources: [.copy("Fixtures")]),
        .testTarget(name: "JinjaTests", dependencies: ["Jinja"],
                    path: "Tests/JinjaTests", resources: [.copy("Fixtures")]),
        .testTarget(name: "WorkerTests", dependencies: ["WorkerCore", "CKernels", "ModelFormats", "Collectives", "RankThreads"],
                    path: "Tests/WorkerTests", resources: [.copy("Fixtures")]),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "CCollectives", "RankThreads"], path: "Tests/CollectivesTests"),
        .testTarget(name: "WireTests", dependencies: ["Wire", "WorkerCore", "RouterCore", "tessel-fake-worker"],
                    path: "Tests/WireTests"),
        .testTarget(name: "RouterTests",
                    dependencies: ["RouterCore", "Tokenizers", "Jinja", "Wire", "JSON", "Grammar",
                                   .product(name: "HummingbirdTesting", package: "hummingbird"),
                                   .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                                   .product(name: "Logging", package: "swift-log")],
                    path: "Tests/RouterTests"),
    ]
)
