import FlitzStore
import FlitzStorePostgres
import FlitzTestSupport
import FlitzWire
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import FlitzRelay

/// A real PostgreSQL server for relay tests (`scripts/postgres.sh`): `FLITZ_TEST_POSTGRES_URL` (a maintenance database
/// that `make test` exports), else one this process starts once in `.build/postgres` and leaves running for later test
/// runs (the script is idempotent). Never skipped: without a server the tests fail.
enum TestPostgres {
    private static let started = Task<String, any Error> {
        if let url = ProcessInfo.processInfo.environment["FLITZ_TEST_POSTGRES_URL"], !url.isEmpty { return url }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return try await runScript(root.appendingPathComponent("scripts/postgres.sh").path, ["start", root.appendingPathComponent(".build/postgres").path])
    }

    /// Runs `script` with `arguments` on a thread of its own (its wait blocks), returning its trimmed standard output.
    private static func runScript(_ script: String, _ arguments: [String]) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread {
                let process = ChildProcess()
                process.executableURL = URL(fileURLWithPath: script)
                process.arguments = arguments
                let output = Pipe()
                process.standardOutput = output
                do {
                    try process.run()
                } catch {
                    continuation.resume(throwing: error)
                    return
                }
                let data = output.fileHandleForReading.readDataToEndOfFile()
                process.waitUntilExit()
                let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                if process.terminationStatus == 0, !text.isEmpty {
                    continuation.resume(returning: text.split(separator: "\n").last.map(String.init) ?? text)
                } else {
                    continuation.resume(throwing: Failure("scripts/postgres.sh \(arguments.joined(separator: " ")) failed (\(process.terminationStatus))"))
                }
            }.start()
        }
    }

    /// A fresh, empty database on the test server; `drop` removes it.
    static func freshDatabase() async throws -> (url: String, drop: @Sendable () async -> Void) {
        let maintenance = try await started.value
        let name = "relay_\(UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased())"
        try await onMaintenance(maintenance, "CREATE DATABASE \(name)")
        guard var components = URLComponents(string: maintenance) else { throw Failure("bad FLITZ_TEST_POSTGRES_URL") }
        components.path = "/\(name)"
        let url = components.string ?? maintenance
        return (url, { try? await onMaintenance(maintenance, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") })
    }

    /// Runs one statement (a name made above: no user input) on the maintenance database.
    private static func onMaintenance(_ url: String, _ sql: String) async throws {
        let client = PostgresClient(configuration: try PostgresRelayStore.configuration(url: url), backgroundLogger: Logger(label: "test-postgres"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            _ = try await client.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test-postgres"))
        }
    }
}

/// Several relays built by `buildRelay` with `--postgres` on one fresh database (`protocol/cluster.md`), in this
/// process, each on 127.0.0.1 port 0 with its own node id (`node-0`, `node-1`, ...), one shared blob directory and one
/// test clock. Their periodic checks never run by themselves: a test runs one with `Relay.clusterCheck()`.
enum ClusterHarness {
    static func run(
        nodes count: Int = 2, configure: (inout RelayConfiguration) -> Void = { _ in },
        _ body: @Sendable ([RelayHarness]) async throws -> Void
    ) async throws {
        let (url, drop) = try await TestPostgres.freshDatabase()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let clock = TestClock()
        var logger = Logger(label: "flitz-cluster-test")
        logger.logLevel = .warning
        var apps: [RelayApplication] = []
        for index in 0..<count {
            var configuration = RelayConfiguration(
                host: "127.0.0.1", port: 0, databasePath: directory.appendingPathComponent("unused-\(index).sqlite").path,
                sweepInterval: .seconds(3_600), retention: .seconds(86_400))
            configuration.postgresURL = url
            configuration.nodeID = "node-\(index)"
            configuration.blobDirectory = directory.appendingPathComponent("blobs").path
            // Long enough that no node looks dead while the test clock stands still; checks run only when called.
            configuration.clusterCheckInterval = .seconds(3_600)
            configure(&configuration)
            let app = try await buildRelay(configuration: configuration, logger: logger, clock: clock)
            for case let service as ClusterService in app.services {
                service.checkTimer = { _ in try await Task.sleep(for: .seconds(86_400)) }
            }
            apps.append(app)
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for app in apps { group.addTask { try await app.run(handleSignals: false) } }
                var harnesses: [RelayHarness] = []
                for app in apps {
                    let port = await app.port()
                    harnesses.append(RelayHarness(app: app, clock: clock, port: port, databasePath: url))
                    // Notices sent before a node listens are lost: wait until every node's LISTEN is established.
                    guard let cluster = app.relay.cluster?.cluster as? PostgresCluster else { throw Failure("not a PostgreSQL cluster node") }
                    try await poll { cluster.listenCount > 0 }
                }
                do {
                    try await body(harnesses)
                } catch {
                    for app in apps { await app.triggerGracefulShutdown() }
                    throw error
                }
                for app in apps { await app.triggerGracefulShutdown() }
                try await group.waitForAll()
            }
        } catch {
            await drop()
            throw error
        }
        await drop()
    }
}

extension TestConnection {
    /// The next frame, waiting at most `timeout` (a failure guard for a loaded machine).
    func next(within timeout: Duration) async throws -> WireFrame {
        if !stashedFrames.isEmpty { return try await next() }
        guard let data = try await nextRaw(timeout: timeout) else { throw Failure("the relay closed the connection") }
        return try WireFrame(serializedBytes: data)
    }

    /// Waits (at most `timeout`) until the relay closes this connection, skipping frames meanwhile.
    func waitUntilClosedByRelay(within timeout: Duration = .seconds(60)) async throws {
        while try await nextRaw(timeout: timeout) != nil {}
    }
}
