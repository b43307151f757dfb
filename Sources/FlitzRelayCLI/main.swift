import ArgumentParser
import FlitzRelay
import Foundation
import Logging

/// `flitz-relay`: the blind relay (`protocol/relay.md`). Parses arguments and calls `buildRelay`.
@main
struct FlitzRelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flitz-relay",
        abstract: "The Flitz blind relay.",
        subcommands: [Serve.self])
}

/// `flitz-relay serve`: runs the relay until SIGINT or SIGTERM.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the relay until SIGINT or SIGTERM.")

    @Option(help: "Address to bind (http.host).")
    var host = "127.0.0.1"

    @Option(help: "TCP port to bind; 0 picks a free port (http.port).")
    var port = 7878

    @Option(help: "SQLite database file (storage.sqlite.path).")
    var database = "./flitz-relay.sqlite"

    @Option(help: "Seconds between expiry sweeps (relay.sweepInterval).")
    var sweepInterval: Int = 60

    @Option(help: "Retention ceiling and default envelope expiry, in seconds (relay.retention; 30 days).")
    var retention: Int = 2_592_000

    @Option(help: "WebSocket ping period in seconds (ws.pingInterval).")
    var pingInterval: Int = 30

    @Option(help: "Seconds to wait for a peer's WebSocket close frame (ws.closeTimeout).")
    var closeTimeout: Int = 15

    @Option(help: "Seconds a connection may stay unauthenticated before it is closed (relay.authenticationTimeout).")
    var authenticationTimeout: Int = 30

    @Option(help: "Most undelivered envelopes queued for one device; more are refused (relay.maxQueuedEnvelopes).")
    var maxQueuedEnvelopes: Int = 10_000

    @Option(help: "Log level: debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
        guard sweepInterval > 0, retention > 0, pingInterval > 0, closeTimeout > 0, authenticationTimeout > 0, maxQueuedEnvelopes > 0 else {
            throw ValidationError("--sweep-interval, --retention, --ping-interval, --close-timeout, --authentication-timeout and --max-queued-envelopes must be positive")
        }
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        // The WebSocket library logs frame bytes at trace level: they would put credentials in the log.
        guard level > .trace else { throw ValidationError("--log-level trace is not allowed: it would log frame contents; use debug") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "flitz-relay")
        let configuration = RelayConfiguration(
            host: host, port: port, databasePath: database, sweepInterval: .seconds(sweepInterval),
            retention: .seconds(retention), pingInterval: .seconds(pingInterval), closeTimeout: .seconds(closeTimeout),
            authenticationTimeout: .seconds(authenticationTimeout), maxQueuedEnvelopes: maxQueuedEnvelopes)
        do {
            let relay = try await buildRelay(configuration: configuration, logger: logger) { host, port in
                // Unbuffered, so a parent process reading the pipe sees the line at once.
                // A closed stdout must not stop the relay.
                try? FileHandle.standardOutput.write(contentsOf: Data("listening on \(host):\(port)\n".utf8))
            }
            try await relay.run()
        } catch {
            let text = String(describing: error)
            let reason = text.contains("Address already in use") ? "cannot listen on \(host):\(port): address already in use" : text
            try? FileHandle.standardError.write(contentsOf: Data("flitz-relay: \(reason)\n".utf8))
            throw ExitCode.failure
        }
    }
}
