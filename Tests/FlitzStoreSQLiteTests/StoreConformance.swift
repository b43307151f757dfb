import FlitzStore
import FlitzStorePostgres
import FlitzStoreSQLite
import FlitzTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The stores the one conformance suite runs on: every `@Test(arguments: StoreKind.allCases)` case runs once on a
/// real temp-file SQLite database and once on a real PostgreSQL database of its own (`TestPostgres`).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }
}

/// Where a test's store lives; `StoreScope.open(_:)` opens another store there (a restarted relay, or a second node).
enum StoreLocation: Sendable {
    /// A SQLite file.
    case sqlite(path: String)
    /// A PostgreSQL database of this test alone.
    case postgres(url: String)
}

/// The suite trait giving each test case a `StoreScope`: the stores the case makes are closed, and their files or
/// PostgreSQL databases removed, when the case ends (passed, failed or thrown).
struct FreshStores: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func scopeProvider(for test: Test, testCase: Test.Case?) -> FreshStores? { testCase == nil ? nil : self }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        let scope = StoreScope()
        do {
            try await StoreScope.$current.withValue(scope) { try await function() }
        } catch {
            try? await scope.close()
            throw error
        }
        try await scope.close()
    }
}

extension Trait where Self == FreshStores {
    /// A fresh store scope per test case (see `FreshStores`).
    static var freshStores: FreshStores { FreshStores() }
}

/// What one test case opened. Reached through `StoreScope.current` (a task local set by `FreshStores`).
final class StoreScope: Sendable {
    @TaskLocal static var current: StoreScope?

    /// No `FreshStores` trait on the suite.
    struct NoScope: Error, CustomStringConvertible {
        var description: String { "a store test needs the .freshStores trait on its suite" }
    }

    private struct State {
        var directories: [URL] = []
        var databases: [String] = []
        var clients: [Task<Void, Never>] = []
    }

    private let state = Mutex(State())
    static let logger = Logger(label: "flitz.test.store")

    @Sendable static func randomID() -> Data {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// A new, empty (migrated) store of `kind` and where it lives.
    static func make(_ kind: StoreKind) async throws -> (any RelayStore, StoreLocation) {
        guard let scope = current else { throw NoScope() }
        let location: StoreLocation
        switch kind {
        case .sqlite:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-store-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            scope.state.withLock { $0.directories.append(directory) }
            location = .sqlite(path: directory.appendingPathComponent("relay.sqlite").path)
        case .postgres:
            let url = try await TestPostgres.createDatabase()
            scope.state.withLock { $0.databases.append(url) }
            location = .postgres(url: url)
        }
        return (try await open(location), location)
    }

    /// A new, empty SQLite store and its path (for what only SQLite has: files, `synchronous`, group commits).
    static func makeSQLite() async throws -> (SQLiteRelayStore, String) {
        let (store, location) = try await make(.sqlite)
        guard case .sqlite(let path) = location, let sqlite = store as? SQLiteRelayStore else { throw NoScope() }
        return (sqlite, path)
    }

    /// Another store on `location` (migrated; for PostgreSQL its own connection pool, running until the case ends).
    static func open(_ location: StoreLocation) async throws -> any RelayStore {
        switch location {
        case .sqlite(let path):
            return try SQLiteRelayStore(path: path, makeID: randomID)
        case .postgres(let url):
            let store = try await openPostgres(url: url)
            return store
        }
    }

    /// A `PostgresRelayStore` on `url` with its client running until the case ends; migrated unless `migrate` is false.
    static func openPostgres(url: String, migrate: Bool = true) async throws -> PostgresRelayStore {
        guard let scope = current else { throw NoScope() }
        let store = PostgresRelayStore(configuration: try PostgresRelayStore.configuration(url: url), makeID: randomID, logger: logger)
        let client = Task { await store.client.run() }
        scope.state.withLock { $0.clients.append(client) }
        if migrate { try await store.migrate() }
        return store
    }

    /// A second, unmigrated PostgreSQL database of this case (for migration races).
    static func makePostgresDatabase() async throws -> String {
        guard let scope = current else { throw NoScope() }
        let url = try await TestPostgres.createDatabase()
        scope.state.withLock { $0.databases.append(url) }
        return url
    }

    /// Stops every client, drops every database, removes every directory of the case.
    func close() async throws {
        let state = self.state.withLock { state in
            defer { state = State() }
            return state
        }
        for client in state.clients { client.cancel() }
        for client in state.clients { await client.value }
        for directory in state.directories { try? FileManager.default.removeItem(at: directory) }
        for url in state.databases { try await TestPostgres.dropDatabase(url: url) }
    }
}
