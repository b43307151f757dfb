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
        subcommands: [Serve.self, Reports.self])
}

/// `flitz-relay serve`: runs the relay until SIGINT or SIGTERM. Every configuration key (`README.md`,
/// "Configuration") is a flag, an environment variable and a key of the `--config` JSON file; flags override
/// the environment, which overrides the file, which overrides the defaults.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the relay until SIGINT or SIGTERM.",
        discussion: """
            Configuration: flags override environment variables, which override the --config FILE (JSON, keys \
            as below, flat or nested; $\(RelayConfiguration.configFileVariable) names it too), which overrides the defaults.
            Unknown flags, variables (FLITZ_RELAY_*) and file keys are errors. Durations are whole seconds.

            \(RelayConfiguration.keys.map { key in
                "--\(key.flag) VALUE  (\(key.name), $\(key.environmentVariable); default \(key.defaultValue.isEmpty ? "none" : key.defaultValue))\n    \(key.summary)"
            }.joined(separator: "\n"))
            """)

    @Option(help: "Log level: debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Argument(parsing: .allUnrecognized, help: "Configuration flags (--config FILE, --port 7878, ...; listed below).")
    var settings: [String] = []

    func validate() throws {
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown --log-level \(logLevel)") }
        // The WebSocket library logs frame bytes at trace level: they would put credentials in the log.
        guard level > .trace else { throw ValidationError("--log-level trace is not allowed: it would log frame contents; use debug") }
    }

    func run() async throws {
        let configuration: RelayConfiguration
        do {
            configuration = try RelayConfiguration.resolve(arguments: settings, environment: ProcessInfo.processInfo.environment)
        } catch {
            try? FileHandle.standardError.write(contentsOf: Data("flitz-relay: \(error)\n".utf8))
            throw ExitCode.validationFailure
        }
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "flitz-relay")
        if !configuration.rateLimits.enabled { logger.warning("rate limits are off (limits.enabled); use this for load tests only") }
        if configuration.push.allowPrivateEndpoints {
            logger.warning("push.allowPrivateEndpoints is on: devices may make this relay send Web Push requests to loopback and private addresses; use this for local tests only")
        }
        let host = configuration.host
        let port = configuration.port
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

/// `flitz-relay reports`: lists the abuse reports stored in the relay's database for the operator
/// (`protocol/conversations.md` 10): reporter, time, reported handle, reason, and each message with its author, time
/// and text, the reported one marked.
struct Reports: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the abuse reports users sent (plaintext they chose to share).")

    @Option(name: .customLong("database"), help: "The relay's SQLite database (storage.sqlite.path).")
    var database: String = RelayConfiguration().databasePath

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        guard FileManager.default.fileExists(atPath: database) else {
            try? FileHandle.standardError.write(contentsOf: Data("flitz-relay: no database at \(database)\n".utf8))
            throw ExitCode.failure
        }
        let reports = try await ReportListing.load(databasePath: database)
        let output = json ? try ReportListing.json(reports) : try ReportListing.text(reports)
        try FileHandle.standardOutput.write(contentsOf: Data(output.utf8))
    }
}
