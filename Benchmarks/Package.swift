// swift-tools-version:6.2
// Flitz performance benchmarks (ordo-one/benchmark). A separate package: the root package and CI never
// build it. Run from this directory: `swift package benchmark` (see README.md).
import Foundation
import PackageDescription

// A path dependency's package identity is its directory's name ("main" in /work/main), not the root
// manifest's `name:`, so derive it rather than hard-coding a checkout directory name.
let rootPackage = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "FlitzBenchmarks",
    platforms: [.macOS(.v15)],
    products: [
        // The relay load generator (README.md, "Relay load"); the other executables need no product.
        .executable(name: "flitz-bench", targets: ["FlitzBench"]),
    ],
    dependencies: [
        .package(path: ".."),
        // The MallocInterposer trait alone (not the default RuntimeInterposer) keeps the dependency set
        // to packages that are available here.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // Already dependencies of the root package (same versions): SwiftProtobuf to rebuild the X3DH-only
        // first message, swift-crypto for the raw ML-KEM-1024 baselines.
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // The relay load generator (flitz-bench): a raw swift-nio WebSocket client, a hummingbird-websocket
        // echo server for the floor, HdrHistogram for latencies. Versions as in the root package.
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        // The root package's SQLite library: SearchLatency's bare FTS5 baseline on the client's database file.
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // Session setups shared by the programs below, so they measure exactly the same thing. It also
        // imports FlitzWire (for encoded sizes), which the root package builds for FlitzProtocol but does
        // not export as a product.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                .product(name: "FlitzProtocol", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Sources/BenchmarkSupport"
        ),
        .executableTarget(
            name: "FlitzCryptoBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "FlitzProtocol", package: rootPackage),
                .product(name: "FlitzCrypto", package: rootPackage),
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            path: "Benchmarks/FlitzCryptoBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // Not run by the plugin: the ratchet and session setup measurements as plain ContinuousClock loops (medians of
        // repeated rounds), as a cross-check of the harness and for profilers (perf, valgrind).
        .executableTarget(
            name: "CryptoTiming",
            dependencies: [
                "BenchmarkSupport", .product(name: "FlitzProtocol", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage),
            ],
            path: "Sources/CryptoTiming"
        ),
        // Not run by the plugin: attachment encryption throughput (attachments.md 2) next to raw XChaCha20-Poly1305 on the
        // same 50 MiB, medians of interleaved rounds.
        .executableTarget(
            name: "AttachmentThroughput",
            dependencies: [.product(name: "FlitzProtocol", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage)],
            path: "Sources/AttachmentThroughput"
        ),
        // Not run by the plugin: history search latency over 100 000 stored messages (a client home next to an
        // in-process relay), next to the bare FTS5 query on the same file (README.md, "Search latency").
        .executableTarget(
            name: "SearchLatency",
            dependencies: [
                .product(name: "FlitzClient", package: rootPackage), .product(name: "FlitzRelay", package: rootPackage),
                .product(name: "GRDB", package: "GRDB.swift"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SearchLatency"
        ),
        // Not run by the plugin: SRTP protect + unprotect per 20 ms packet through FlitzMedia (run-calls.sh), next to a raw
        // libsrtp2 C loop (calls/srtp-baseline.c) in the same run.
        .executableTarget(
            name: "SRTPTiming",
            dependencies: [.product(name: "FlitzMedia", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage)],
            path: "Sources/SRTPTiming"
        ),
        // Not run by the plugin: prints the encoded sizes of a session setup with PQXDH and X3DH only.
        .executableTarget(name: "HandshakeSizes", dependencies: ["BenchmarkSupport"], path: "Sources/HandshakeSizes"),
        // The relay load generator's engine: a lean WebSocket client speaking FlitzWire frames, the four modes,
        // the echo server for the floor, /proc readers. FlitzWire comes in through FlitzProtocol (not exported).
        .target(
            name: "FlitzLoad",
            dependencies: [
                .product(name: "FlitzProtocol", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/FlitzLoad"
        ),
        .executableTarget(
            name: "FlitzBench",
            dependencies: ["FlitzLoad", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/FlitzBench"
        ),
        // Runs the generator against a real relay started in-process (buildRelay, temp SQLite file).
        .testTarget(
            name: "FlitzLoadTests",
            dependencies: [
                "FlitzLoad", .product(name: "FlitzRelay", package: rootPackage), .product(name: "FlitzCrypto", package: rootPackage),
                .product(name: "FlitzProtocol", package: rootPackage), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/FlitzLoadTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
