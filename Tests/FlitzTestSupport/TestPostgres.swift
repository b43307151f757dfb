import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The real PostgreSQL server tests use (`protocol/cluster.md`; issue 9), and fresh databases on it.
///
/// The server: `FLITZ_TEST_POSTGRES_URL` when set (`make test` starts one through `scripts/postgres.sh run` and
/// exports the URL of its maintenance database `flitz`). Without it, the first call starts one through
/// `scripts/postgres.sh start .build/postgres` (in the package root), unless one already runs there, and stops the one
/// it started when the test process exits. A server that cannot be started is an error, never a silent skip.
///
/// Databases: `createDatabase()` makes a database of its own for one test (`flitz_t_` and 32 hex digits) and returns
/// its URL; `dropDatabase(url:)` drops it (`WITH (FORCE)`: open connections are closed). Both run `psql` (the
/// newest `/usr/lib/postgresql/*/bin/psql`, else `psql` on `PATH`) as a child process.
///
/// Every call blocks its thread until the child processes finish. The `async` overloads run that work on a thread of
/// their own, never on a Swift concurrency thread, so async tests may call them; synchronous end-to-end tests call
/// the blocking ones.
public enum TestPostgres {
    /// A server or `psql` failure, with the script's or `psql`'s output (no password: the test server has none).
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// The package root: the first directory above this file holding `Package.swift`.
    public static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("no Package.swift above \(#filePath)")
    }()

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cachedURL: String?
    nonisolated(unsafe) private static var startedDirectory: String?

    /// The URL of the server's maintenance database (`postgres://flitz@127.0.0.1:PORT/flitz?sslmode=disable`),
    /// starting the server first if needed (see the type's documentation). Blocks.
    /// - Throws: `Failure` when the server cannot be started.
    public static func maintenanceURL() throws -> String {
        try lock.withLock {
            if let cachedURL { return cachedURL }
            if let url = ProcessInfo.processInfo.environment["FLITZ_TEST_POSTGRES_URL"], !url.isEmpty {
                cachedURL = url
                return url
            }
            let directory = packageRoot.appendingPathComponent(".build/postgres").path
            let script = packageRoot.appendingPathComponent("scripts/postgres.sh").path
            let url: String
            if let running = try? run("/bin/bash", [script, "url", directory]) {
                url = running
            } else {
                url = try run("/bin/bash", [script, "start", directory])
                startedDirectory = directory
                atexit {
                    guard let directory = TestPostgres.startedDirectory else { return }
                    let script = TestPostgres.packageRoot.appendingPathComponent("scripts/postgres.sh").path
                    _ = try? TestPostgres.run("/bin/bash", [script, "stop", directory])
                }
            }
            cachedURL = url
            return url
        }
    }

    /// `url` with its database name replaced by `database`.
    public static func url(_ url: String, database: String) throws -> String {
        guard var components = URLComponents(string: url), !database.isEmpty else { throw Failure(description: "not a PostgreSQL URL") }
        components.path = "/" + database
        guard let result = components.string else { throw Failure(description: "not a PostgreSQL URL") }
        return result
    }

    /// Creates an empty database of its own on the test server and returns its URL. Blocks.
    /// - Throws: `Failure`.
    public static func createDatabase() throws -> String {
        let maintenance = try maintenanceURL()
        // Only hex digits: safe in SQL text (CREATE DATABASE takes no bind parameters).
        let name = "flitz_t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        _ = try run(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", maintenance, "-c", "CREATE DATABASE \(name)"])
        return try url(maintenance, database: name)
    }

    /// Drops the database `url` names (made by `createDatabase()`), closing its open connections. Blocks.
    /// - Throws: `Failure`.
    public static func dropDatabase(url: String) throws {
        guard let components = URLComponents(string: url), components.path.hasPrefix("/flitz_t_"),
            components.path.dropFirst().allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" })
        else { throw Failure(description: "not a test database URL") }
        let name = String(components.path.dropFirst())
        _ = try run(psql, ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", try maintenanceURL(), "-c", "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"])
    }

    /// `maintenanceURL()` on a thread of its own.
    public static func maintenanceURL() async throws -> String { try await offPool { try maintenanceURL() } }

    /// `createDatabase()` on a thread of its own.
    public static func createDatabase() async throws -> String { try await offPool { try createDatabase() } }

    /// `dropDatabase(url:)` on a thread of its own.
    public static func dropDatabase(url: String) async throws { try await offPool { try dropDatabase(url: url) } }

    /// Runs blocking `body` on a new thread and resumes with its result, so no Swift concurrency thread waits.
    public static func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "TestPostgres"
            thread.start()
        }
    }

    private static let psql: String = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        for version in versions.reversed() where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/psql") {
            return "\(root)/\(version)/bin/psql"
        }
        return "/usr/bin/psql"
    }()

    /// Runs `executable` with `arguments`, returning its trimmed standard output; throws with its output on a non-zero exit.
    private static func run(_ executable: String, _ arguments: [String]) throws -> String {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationReason == .exit, process.terminationStatus == 0 else {
            throw Failure(description: "\(URL(fileURLWithPath: executable).lastPathComponent) \(arguments.first ?? "") failed: \(output)")
        }
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
