// swift-tools-version:5.10
// A small loader for a package written by `airoad export coreml`: stateful KV cache, greedy decode.
//
//   swift run -c release airoad-chat exports/fast_plain_coreml "What is 12 times 7?"
import PackageDescription

let package = Package(
    name: "AiroadChat",
    platforms: [.macOS(.v15), .iOS(.v18)],  // Core ML states (MLState) need macOS 15 / iOS 18
    dependencies: [
        .package(url: "https://github.com/huggingface/swift-transformers", from: "0.1.17"),
    ],
    targets: [
        .executableTarget(
            name: "airoad-chat",
            dependencies: [.product(name: "Transformers", package: "swift-transformers")],
            path: "Sources/AiroadChat"
        ),
    ]
)
