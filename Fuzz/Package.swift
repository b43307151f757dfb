// swift-tools-version:6.2
// libFuzzer targets for every decoder the network reaches. A separate package so the root build never
// builds them; see README.md here for the build command (it needs extra flags) and scripts/fuzz.sh.
import PackageDescription

let package = Package(
    name: "flitz-fuzz",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "fuzz-relay-frame", targets: ["FlitzFuzzRelayFrame"]),
        .executable(name: "fuzz-envelope", targets: ["FlitzFuzzEnvelope"]),
        .executable(name: "fuzz-ratchet-header", targets: ["FlitzFuzzRatchetHeader"]),
        .executable(name: "fuzz-message-content", targets: ["FlitzFuzzMessageContent"]),
        .executable(name: "fuzz-prekey-bundle", targets: ["FlitzFuzzPreKeyBundle"]),
        // For the corpus generator in CorpusGenerator/, a package of its own: its `main` would clash with
        // libFuzzer's when this package is built with -sanitize=fuzzer.
        .library(name: "FlitzFuzzSupport", targets: ["FlitzFuzzSupport"]),
    ],
    dependencies: [
        .package(name: "flitz", path: ".."),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        // FlitzWire is not a product of the root package; it comes in with FlitzProtocol, which depends on it.
        .target(
            name: "FlitzFuzzSupport",
            dependencies: [
                .product(name: "FlitzProtocol", package: "flitz"),
                .product(name: "FlitzCrypto", package: "flitz"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .executableTarget(name: "FlitzFuzzRelayFrame", dependencies: fuzzTargetDependencies),
        .executableTarget(name: "FlitzFuzzEnvelope", dependencies: fuzzTargetDependencies),
        .executableTarget(name: "FlitzFuzzRatchetHeader", dependencies: fuzzTargetDependencies),
        .executableTarget(name: "FlitzFuzzMessageContent", dependencies: fuzzTargetDependencies),
        .executableTarget(name: "FlitzFuzzPreKeyBundle", dependencies: fuzzTargetDependencies),
    ],
    swiftLanguageModes: [.v6]
)

var fuzzTargetDependencies: [Target.Dependency] {
    [
        "FlitzFuzzSupport",
        .product(name: "FlitzProtocol", package: "flitz"),
        .product(name: "FlitzCrypto", package: "flitz"),
        .product(name: "SwiftProtobuf", package: "swift-protobuf"),
    ]
}
