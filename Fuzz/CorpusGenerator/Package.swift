// swift-tools-version:6.2
// `flitz-fuzz-corpus`, the seed corpus generator (../README.md, "Corpus"). Its own package because its
// `main` would clash with libFuzzer's when the fuzz package is built with -sanitize=fuzzer.
import PackageDescription

let package = Package(
    name: "flitz-fuzz-corpus",
    platforms: [.macOS(.v15)],
    products: [.executable(name: "flitz-fuzz-corpus", targets: ["FlitzFuzzCorpus"])],
    dependencies: [
        .package(name: "flitz-fuzz", path: ".."),
        .package(name: "flitz", path: "../.."),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        .executableTarget(
            name: "FlitzFuzzCorpus",
            dependencies: [
                .product(name: "FlitzFuzzSupport", package: "flitz-fuzz"),
                .product(name: "FlitzProtocol", package: "flitz"),
                .product(name: "FlitzCrypto", package: "flitz"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
