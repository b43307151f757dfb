import FlitzStore
import GRDB

/// Counts queued items (envelopes and receipts waiting in device queues) for the relay's queue-depth gauge
/// (`protocol/relay.md`, "Metrics"), through its own read-only connection so a scrape never waits for or
/// blocks the writer. The count stops at a limit: a scrape must not scan an unbounded table.
public final class SQLiteQueueDepth: Sendable {
    private let queue: DatabaseQueue

    /// Opens `path` (an existing relay database, already migrated) read-only.
    /// - Throws: `StoreError(.backend)` when it cannot be opened.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(1)
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw StoreError(.backend, "cannot open the database read-only for metrics: \(error)")
        }
    }

    /// The number of queued items, or `limit` when there are at least that many.
    /// - Throws: `StoreError(.backend)` when the read fails.
    public func count(limit: Int) async throws -> Int {
        do {
            return try await queue.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM (SELECT 1 FROM queue LIMIT ?)", arguments: [limit]) ?? 0
            }
        } catch {
            throw StoreError(.backend, "cannot count queued items: \(error)")
        }
    }
}
