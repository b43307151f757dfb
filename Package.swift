// swift-tools-version:6.2
// Flitz: blind relay, end-to-end encryption core and reference CLI. Layers in ../shared/DESIGN.md.
import PackageDescription

let package = Package(
    name: "flitz",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "flitz-relay", targets: ["FlitzRelayCLI"]),
        .executable(name: "flitz", targets: ["FlitzCLI"]),
        .executable(name: "flitz-vectors", targets: ["FlitzVectorGen"]),
        .library(name: "FlitzCrypto", targets: ["FlitzCrypto"]),
        .library(name: "FlitzProtocol", targets: ["FlitzProtocol"]),
        .library(name: "FlitzMedia", targets: ["FlitzMedia"]),
        .library(name: "FlitzClient", targets: ["FlitzClient"]),
        .library(name: "FlitzRelay", targets: ["FlitzRelay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket.git", from: "2.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        // ML-KEM-1024 only: libsodium has no post-quantum KEM (DESIGN.md, "Cryptography").
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        // Relay operations: Prometheus /metrics through swift-metrics, and TLS (wss) for relay and client.
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        // Push providers (protocol/push.md): HTTP/1.1 and HTTP/2 requests to Web Push, APNs and FCM, and the
        // ES256 / RS256 tokens VAPID, APNs and FCM's OAuth grant require.
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        // `flitz media --export FILE.zip` (issue 7): a pure-Swift ZIP writer, streaming entries from files.
        .package(url: "https://github.com/weichsel/ZIPFoundation.git", from: "0.9.20"),
        // Several relay nodes on one PostgreSQL database (issue 9, protocol/cluster.md): pooled connections,
        // prepared statements, LISTEN/NOTIFY.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CFlitzSodium",
            pkgConfig: "libsodium",
            providers: [.apt(["libsodium-dev"])]
        ),
        // SRTP (RFC 3711, RFC 7714) for call media (protocol/calls.md 6).
        .systemLibrary(
            name: "CFlitzSRTP",
            pkgConfig: "libsrtp2",
            providers: [.apt(["libsrtp2-dev"])]
        ),
        .target(
            name: "FlitzCrypto",
            dependencies: ["CFlitzSodium", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "FlitzWire",
            // FlitzCrypto: the token hashes and report signature payload both sides compute (conversations.md).
            dependencies: ["FlitzCrypto", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .target(
            name: "FlitzProtocol",
            dependencies: ["FlitzCrypto", "FlitzWire", .product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        // Call media (protocol/calls.md 6 and 7): RTP, SRTP over libsrtp2, G.711, WAV, UDP, STUN and TURN.
        // Crypto: MD5 and HMAC-SHA-1 of TURN's long-term credential (RFC 8656), which libsodium lacks.
        .target(
            name: "FlitzMedia",
            dependencies: [
                "CFlitzSRTP", "FlitzCrypto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The relay's storage contract; implementations live in their own targets.
        .target(name: "FlitzStore"),
        .target(
            name: "FlitzStoreSQLite",
            dependencies: ["FlitzStore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        // The shared store of several relay nodes (protocol/cluster.md); its client runs as a relay service.
        .target(
            name: "FlitzStorePostgres",
            dependencies: [
                "FlitzStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Never add FlitzProtocol here: the relay must not be able to decrypt or decode message content.
        .target(
            name: "FlitzRelay",
            dependencies: [
                "FlitzWire", "FlitzStore", "FlitzStoreSQLite", "FlitzStorePostgres", "FlitzCrypto",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "JWTKit", package: "jwt-kit"),
                // The blob files' blocking system calls run on NIOThreadPool (attachments.md 4.5).
                .product(name: "NIOPosix", package: "swift-nio"),
                // The VAPID key (P-256 signing) of the Web Push sender.
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "FlitzClient",
            dependencies: [
                "FlitzProtocol", "FlitzWire", "FlitzCrypto", "FlitzMedia",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                // Attachments (protocol/attachments.md 4): TUS uploads and ranged blob downloads over HTTP(S).
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        .executableTarget(
            name: "FlitzRelayCLI",
            dependencies: ["FlitzRelay", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "FlitzCLI",
            dependencies: [
                "FlitzClient",
                "FlitzVectors",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Verifies vectors/*.json against this build; used by the tests and `flitz vectors verify`.
        .target(
            name: "FlitzVectors",
            dependencies: [
                "FlitzCrypto", "FlitzWire", "FlitzProtocol", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                // The SRTP packets of vectors/call.json are checked against libsrtp2.
                "FlitzMedia",
                // P-256, HMAC and AES-GCM for the independent RFC 8291 reference of the push topic.
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "FlitzVectorGen",
            dependencies: [
                "FlitzProtocol", "FlitzCrypto", "FlitzWire", "FlitzVectors", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                // The SRTP packets of vectors/call.json are protected with libsrtp2.
                "FlitzMedia",
            ],
            // Read from the source tree by path (KEMFixtures.swift), not bundled.
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "FlitzCryptoTests", dependencies: ["FlitzCrypto"]),
        // posix_spawn children for tests that run real programs (flitz, flitz-relay, turnserver); shared, not copied.
        .target(name: "FlitzTestSupport", path: "Tests/FlitzTestSupport"),
        // Real libsrtp2 sessions, real UDP sockets on loopback, and a real coturn (scripts/coturn.sh).
        .testTarget(
            name: "FlitzMediaTests",
            dependencies: [
                "FlitzMedia", "FlitzCrypto", "CFlitzSRTP", "FlitzTestSupport",
                // HMAC-SHA-1 for coturn's REST-API credentials, computed as the relay does (protocol/calls.md 3.5).
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(name: "FlitzWireTests", dependencies: ["FlitzWire", .product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .testTarget(name: "FlitzProtocolTests", dependencies: ["FlitzProtocol", "FlitzCrypto", "FlitzVectors"]),
        // The one storage conformance suite, run against SQLite and a real PostgreSQL (scripts/postgres.sh).
        .testTarget(
            name: "FlitzStoreSQLiteTests",
            dependencies: [
                "FlitzStore", "FlitzStoreSQLite", "FlitzStorePostgres", "FlitzTestSupport", .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        .testTarget(
            name: "FlitzRelayTests",
            dependencies: [
                "FlitzRelay", "FlitzWire", "FlitzCrypto", "FlitzStoreSQLite", "FlitzStorePostgres", "FlitzTestSupport",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                // The cluster tests make a fresh database per test (ClusterHarness.swift).
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // Local stand-ins for push services: Web Push and FCM over HTTP/1.1, APNs over HTTP/2 with TLS.
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "JWTKit", package: "jwt-kit"),
                // Test keys for the APNs and FCM stand-ins: P-256 (Crypto) and RSA 2048 (CryptoExtras, the module
                // jwt-kit itself uses; `_CryptoExtras` only re-exports it).
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                // The blob store tests (attachments.md 4): HTTP requests, and raw sockets to cut a PATCH mid-body.
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FlitzClientTests",
            dependencies: [
                "FlitzClient", "FlitzProtocol", "FlitzRelay", "FlitzStore", "FlitzWire", "FlitzCrypto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),  // a local Web Push receiver
            ]
        ),
        // Drives the built `flitz-relay` and `flitz` executables as separate processes.
        // FaultTests speak raw frames to the child relay: FlitzWire, FlitzCrypto and the WebSocket client.
        .testTarget(
            name: "FlitzEndToEndTests",
            dependencies: [
                "FlitzCLI", "FlitzRelayCLI", "FlitzWire", "FlitzCrypto", "FlitzTestSupport",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),  // a local Web Push receiver
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
