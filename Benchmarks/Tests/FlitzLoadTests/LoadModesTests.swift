import FlitzRelay
import Foundation
import Logging
import Testing

import FlitzLoad

/// Each mode against a real relay started in-process (`buildRelay` on 127.0.0.1 port 0, SQLite in a temp
/// directory), at a small scale.
@Suite(.serialized) struct LoadModesTests {
    /// Runs `body` with the port of a fresh relay.
    static func withRelay(maxQueuedEnvelopes: Int = 10_000, _ body: @Sendable (Int) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var logger = Logger(label: "flitz-bench-test-relay")
        logger.logLevel = .warning
        let app = try await buildRelay(
            configuration: RelayConfiguration(
                host: "127.0.0.1", port: 0, databasePath: directory.appendingPathComponent("relay.sqlite").path, maxQueuedEnvelopes: maxQueuedEnvelopes),
            logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run(handleSignals: false) }
            let port = await app.port()
            do {
                try await body(port)
            } catch {
                await app.triggerGracefulShutdown()
                throw error
            }
            await app.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }

    @Test func closedLoopCompletesEveryEnvelopeEndToEnd() async throws {
        try await Self.withRelay { port in
            var options = ThroughputOptions()
            options.port = port
            options.pairs = 3
            options.window = 4
            options.size = 64
            options.warmup = .milliseconds(200)
            options.duration = .milliseconds(800)
            options.serverPID = getpid()
            let result = try await runThroughput(options) { _ in }
            #expect(result.completed > 0)
            #expect(result.errors.isEmpty)
            #expect(result.unfinished == 0)
            // Every envelope submitted in the window was delivered and answered.
            #expect(result.delivery.count >= result.endToEnd.count)
            #expect(result.submit.count == result.endToEnd.count)
            #expect(result.delivery.p50 > 0 && result.delivery.p50 <= result.delivery.p99)
            #expect(result.serverCPU != nil)
        }
    }

    @Test func openLoopSendsAtTheOfferedRate() async throws {
        try await Self.withRelay { port in
            var options = ThroughputOptions()
            options.port = port
            options.pairs = 2
            options.rate = 100
            options.size = 32
            options.warmup = .milliseconds(200)
            options.duration = .seconds(1)
            let result = try await runThroughput(options) { _ in }
            #expect(result.errors.isEmpty)
            #expect(result.unfinished == 0)
            // 100/s for 1 s: every scheduled envelope in the window is measured once it completes.
            #expect((90...110).contains(result.endToEnd.count))
        }
    }

    @Test func backlogDrainsEveryQueuedEnvelope() async throws {
        try await Self.withRelay { port in
            var options = BacklogOptions()
            options.port = port
            options.envelopes = 450
            options.size = 100
            let result = try await runBacklog(options) { _ in }
            #expect(result.queued == 450)
            #expect(result.deliveredBeforeDrained == 450)
            #expect(result.errors.isEmpty)
            #expect(result.untilAllAcknowledged >= result.untilQueueDrained)
        }
    }

    @Test func backlogReportsRefusalsBeyondTheQueueLimit() async throws {
        try await Self.withRelay(maxQueuedEnvelopes: 100) { port in
            var options = BacklogOptions()
            options.port = port
            options.envelopes = 150
            let result = try await runBacklog(options) { _ in }
            #expect(result.queued == 100)
            #expect(result.errors[18] == 50)  // QUEUE_FULL
            #expect(result.deliveredBeforeDrained == 100)
        }
    }

    @Test func connectionsHoldsIdleAuthenticatedConnectionsFromSeveralSourceAddresses() async throws {
        try await Self.withRelay { port in
            var options = ConnectionsOptions(serverPID: getpid())
            options.port = port
            options.counts = [30, 40]
            options.sourceAddresses = 3
            options.settle = .milliseconds(100)
            let result = try await runConnections(options) { _ in }
            #expect(result.registered == 40)
            #expect(result.steps.map(\.count) == [30, 40])
            #expect(result.steps.allSatisfy { $0.rssHeld > 0 && $0.generatorRSS > 0 })
            #expect(result.hardLimit >= result.softLimitBefore)
        }
    }

    @Test func floorRoundTripsThroughTheEchoServer() async throws {
        let listening = AsyncStream.makeStream(of: Int.self)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await runEchoServer(host: "127.0.0.1", port: 0) { listening.continuation.yield($0) } }
            var ports = listening.stream.makeAsyncIterator()
            let port = try #require(await ports.next())
            var options = FloorOptions()
            options.port = port
            options.connections = 4
            options.window = 2
            options.warmup = .milliseconds(100)
            options.duration = .milliseconds(500)
            let result = try await runFloor(options) { _ in }
            #expect(result.completed > 0)
            #expect(result.roundTrip.count > 0)
            #expect(result.messageBytes > 256)
            group.cancelAll()
        }
    }
}
