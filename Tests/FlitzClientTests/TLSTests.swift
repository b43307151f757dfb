import FlitzRelay
import FlitzWire
import Foundation
import Logging
import Testing

@testable import FlitzClient

/// `wss://` with the test CA of Tests/Fixtures/tls (made by scripts/make-test-certificates.sh): the relay
/// serves TLS with `tls.certificate`/`tls.key`; the client trusts it only with `--ca-file` (`README.md`, "TLS").
@Suite struct TLSTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../Fixtures/tls").standardized

    /// Runs `body` with the port of a TLS relay on 127.0.0.1.
    func withTLSRelay(_ body: (Int, URL) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var logger = Logger(label: "relay")
        logger.logLevel = .critical
        var configuration = RelayConfiguration(port: 0, databasePath: directory.appendingPathComponent("relay.sqlite").path)
        configuration.tlsCertificatePath = Self.fixtures.appendingPathComponent("server.pem").path
        configuration.tlsKeyPath = Self.fixtures.appendingPathComponent("server-key.pem").path
        let application = try await buildRelay(configuration: configuration, logger: logger)
        let task = Task { try await application.run(handleSignals: false) }
        defer { task.cancel() }
        do {
            try await body(await application.port(), directory)
        } catch {
            await application.triggerGracefulShutdown()
            _ = await task.result
            throw error
        }
        await application.triggerGracefulShutdown()
        _ = await task.result
    }

    var logger: Logger {
        var logger = Logger(label: "client")
        logger.logLevel = .critical
        return logger
    }

    @Test func withTheCAFileTheClientConnectsAndRegistersOverWSS() async throws {
        try await withTLSRelay { port, directory in
            let caFile = Self.fixtures.appendingPathComponent("ca.pem").path
            let challenge = try await RelayConnection.with(url: "wss://localhost:\(port)", caFile: caFile, logger: logger) { connection in
                await connection.nextUnsolicited(timeout: .seconds(5))
            }
            guard case .challenge(let hello) = challenge?.body else {
                Issue.record("expected a Challenge over wss, got \(String(describing: challenge))")
                return
            }
            #expect(hello.nonce.count == WireConstants.challengeNonceLength)

            let alice = try FlitzClient(home: directory.appendingPathComponent("alice"), logger: logger, caFile: caFile)
            let code = try await alice.initialize(relayURL: "wss://localhost:\(port)", handle: "alice")
            #expect(!code.isEmpty)
        }
    }

    @Test func withoutTheCAFileTheCertificateIsRefusedClearly() async throws {
        try await withTLSRelay { port, _ in
            do {
                _ = try await RelayConnection.with(url: "wss://localhost:\(port)", logger: logger) { _ in true }
                Issue.record("connected to a relay whose certificate no trusted CA signed")
            } catch let error as ClientError {
                #expect(error.kind == .relayUnreachable)
                #expect(error.message.contains("TLS certificate is not trusted"), "\(error.message)")
                #expect(error.message.contains("--ca-file"))
            }
        }
    }

    @Test func anUnreadableCAFileIsAnInvalidArgument() async throws {
        try await withTLSRelay { port, _ in
            await #expect(throws: ClientError.self) {
                _ = try await RelayConnection.with(url: "wss://localhost:\(port)", caFile: "/nonexistent/ca.pem", logger: logger) { _ in true }
            }
        }
    }
}
