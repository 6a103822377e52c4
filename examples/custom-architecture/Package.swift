// swift-tools-version:6.2
import PackageDescription

// A custom architecture for Tessel, built as a dynamic library the worker loads with
// `--custom-architectures .build/debug/libTinyCustom.so` (or the router, for the workers it spawns).
// Build it against the same Tessel checkout the worker was built from.
let package = Package(
    name: "TinyCustom",
    products: [
        .library(name: "TinyCustom", type: .dynamic, targets: ["TinyCustom"]),
    ],
    dependencies: [
        .package(name: "Tessel", path: "../.."),
    ],
    targets: [
        .target(name: "TinyCustom", dependencies: [.product(name: "TesselWorkerCore", package: "Tessel")]),
    ]
)
