import FlitzStore
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle

/// The `RelayStore` of several relay nodes sharing one PostgreSQL database (`protocol/cluster.md`), over
/// postgres-nio's pooled `PostgresClient`. The client must run (`run()`, a `Service` of the relay's service group)
/// before any method is called; `migrate()` brings the schema to the newest version under an advisory lock, so
/// nodes starting together on an empty database do not race.
///
/// Durability: every method that changes data commits before it returns (PostgreSQL's default
/// `synchronous_commit = on`). Queue sequences follow commit order: each device's next sequence is a counter row
/// updated in the submitting transaction, so two transactions queueing for one device serialize on that row
/// (`cluster.md` 5).
public final class PostgresRelayStore: Sendable, Service {
    /// The pooled client; run by `run()`.
    public let client: PostgresClient
    let logger: Logger
    let makeID: @Sendable () -> Data

    /// A store over `configuration` (see `PostgresRelayStore.configuration(url:)`).
    /// - Parameters:
    ///   - makeID: 16 fresh random bytes per call (receipt ids; the relay passes `SystemRandom`).
    ///   - logger: postgres-nio's background logger (connection events; never query parameters).
    public init(configuration: PostgresClient.Configuration, makeID: @escaping @Sendable () -> Data, logger: Logger) {
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.makeID = makeID
        self.logger = logger
    }

    /// A client configuration from a `postgres://user[:password]@host[:port]/database[?sslmode=disable|prefer|require]`
    /// or `postgresql://` URL (`cluster.md` 2). A host starting with `/` (percent-encoded `%2F`) is a Unix socket
    /// directory. Default port 5432; default `sslmode` prefer.
    /// - Throws: `StoreError.backend` naming what is wrong with the URL (never its password).
    public static func configuration(url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), let scheme = components.scheme,
            scheme == "postgres" || scheme == "postgresql"
        else { throw StoreError(.backend, "a PostgreSQL URL starts with postgres:// or postgresql://") }
        guard let user = components.user, !user.isEmpty else { throw StoreError(.backend, "the PostgreSQL URL names no user") }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard !database.isEmpty else { throw StoreError(.backend, "the PostgreSQL URL names no database") }
        let host = components.percentEncodedHost.flatMap { $0.removingPercentEncoding } ?? ""
        let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer": tls = .prefer(.makeClientConfiguration())
        case "require": tls = .require(.makeClientConfiguration())
        default: throw StoreError(.backend, "sslmode must be disable, prefer or require")
        }
        var configuration: PostgresClient.Configuration
        if host.hasPrefix("/") {
            let port = components.port ?? 5432
            configuration = .init(
                unixSocketPath: "\(host)/.s.PGSQL.\(port)", username: user, password: components.password, database: database)
        } else {
            guard !host.isEmpty else { throw StoreError(.backend, "the PostgreSQL URL names no host") }
            configuration = .init(
                host: host, port: components.port ?? 5432, username: user, password: components.password, database: database, tls: tls)
        }
        configuration.options.maximumConnections = 20
        return configuration
    }

    /// Runs the connection pool until cancelled (or until the service group shuts down).
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.client.run()
        }
    }

    // MARK: Migrations

    /// One schema step: a name recorded in `flitz_migrations` and the SQL run in one transaction.
    struct Migration: Sendable {
        let name: String
        let sql: [String]
    }

    /// Every migration, oldest first: the core schema (`PostgresRelayStore+Schema.swift`) then the shared
    /// cluster state (`PostgresCluster+Schema.swift`). Names are never reused or reordered.
    static var migrations: [Migration] { coreMigrations + clusterMigrations }

    /// Key of the session advisory lock held while migrating (`pg_advisory_lock`): "flitzmig" in ASCII.
    static let migrationLockKey: Int64 = 0x666C_697A_746D_6967

    /// Brings the schema to the newest version; safe to call from several nodes at once (an advisory lock
    /// serializes them; the second finds nothing left to do). Returns the names of the migrations it applied.
    /// - Throws: `StoreError.backend` when the database fails or a migration does not apply.
    @discardableResult
    public func migrate() async throws -> [String] {
        do {
            return try await client.withConnection { connection in
                _ = try await connection.query("SELECT pg_advisory_lock(\(Self.migrationLockKey))", logger: logger)
                do {
                    let applied = try await Self.applyMigrations(on: connection, logger: logger)
                    _ = try await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
                    return applied
                } catch {
                    _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
                    throw error
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.backend, "cannot migrate the PostgreSQL schema: \(Self.describe(error))")
        }
    }

    private static func applyMigrations(on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        _ = try await connection.query(
            "CREATE TABLE IF NOT EXISTS flitz_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
            logger: logger)
        var done = Set<String>()
        for try await name in try await connection.query("SELECT name FROM flitz_migrations", logger: logger).decode(String.self) {
            done.insert(name)
        }
        var applied: [String] = []
        for migration in migrations where !done.contains(migration.name) {
            try await connection.withTransaction(logger: logger) { connection in
                for statement in migration.sql {
                    _ = try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                _ = try await connection.query("INSERT INTO flitz_migrations (name) VALUES (\(migration.name))", logger: logger)
            }
            applied.append(migration.name)
        }
        return applied
    }

    /// Names of the applied migrations, oldest first (tests and diagnostics).
    /// - Throws: `StoreError.backend`.
    public func appliedMigrations() async throws -> [String] {
        try await run {
            var names: [String] = []
            let rows = try await self.client.query("SELECT name FROM flitz_migrations ORDER BY applied_at, name", logger: self.logger)
            for try await name in rows.decode(String.self) { names.append(name) }
            return names
        }
    }

    // MARK: Helpers for every part

    /// Runs `body`, turning any error but `StoreError` into `StoreError.backend` (never with parameters).
    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            throw error
        } catch let error as PostgresTransactionError {
            // postgres-nio wraps what a transaction's closure threw: a refusal stays a refusal.
            if let inner = error.closureError as? StoreError { throw inner }
            throw StoreError(.backend, Self.describe(error))
        } catch {
            throw StoreError(.backend, Self.describe(error))
        }
    }

    /// Runs `body` in one transaction (`READ COMMITTED`; row locks where a method needs them), mapping errors as
    /// `run` does. The transaction rolls back when `body` throws.
    func transaction<T: Sendable>(_ body: @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await run {
            try await self.client.withTransaction(logger: self.logger) { connection in try await body(connection) }
        }
    }

    /// A short description of a database error: PostgreSQL's SQLSTATE and message, never the query's bind values.
    static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            let state = error.serverInfo?[.sqlState] ?? "-"
            let message = error.serverInfo?[.message] ?? "\(error.code)"
            return "PostgreSQL \(state): \(message)"
        }
        if let error = error as? PostgresTransactionError, let inner = error.closureError ?? error.beginError ?? error.commitError {
            return describe(inner)
        }
        return String(describing: type(of: error))
    }
}
