import FlitzStore
import Foundation
import Logging
import PostgresNIO

/// One open transaction of `PostgresRelayStore`: a connection and the logger its queries log into. Every helper of
/// the core store takes one, as SQLite's take a GRDB `Database`.
struct PostgresTransaction: Sendable {
    /// The connection, inside `BEGIN` … `COMMIT`.
    let connection: PostgresConnection
    /// postgres-nio's logger (never query parameters).
    let logger: Logger

    /// Runs `query` and reads every row it returns.
    @discardableResult
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await connection.query(query, logger: logger).collect()
    }

    /// Runs `query` and reads its first row, if any.
    func first(_ query: PostgresQuery) async throws -> PostgresRow? {
        try await rows(query).first
    }

    /// Whether `query` returns at least one row.
    func exists(_ query: PostgresQuery) async throws -> Bool {
        try await first(query) != nil
    }

    /// Runs `query` (usually `… RETURNING 1`) and counts the rows it returns.
    func count(_ query: PostgresQuery) async throws -> Int {
        try await rows(query).count
    }
}

/// What the queuing helper puts into a device's queue (`PostgresRelayStore.enqueue`).
enum QueueInsert: Sendable {
    /// An envelope (kind 1) with its ciphertext, expiring at `expiresAtMs`.
    case envelope(envelopeID: Data, ciphertext: Data, expiresAtMs: Int64)
    /// A scheduled envelope being released: its ciphertext is copied inside the database from `scheduled_envelopes`
    /// (never read into memory), expiring at `expiresAtMs`. The `scheduled_envelopes` row must exist.
    case scheduledEnvelope(envelopeID: Data, expiresAtMs: Int64)
    /// A receipt (kind 2) about `envelopeID` for the device that sent it.
    case receipt(receiptID: Data, envelopeID: Data, kind: ReceiptKind, atMs: Int64, recipient: DeviceAddress, expiresAtMs: Int64)

    var isEnvelope: Bool {
        switch self {
        case .envelope, .scheduledEnvelope: true
        case .receipt: false
        }
    }
}

extension PostgresRelayStore {
    static let kindEnvelope: Int64 = 1
    static let kindReceipt: Int64 = 2
    static let stateQueued: Int64 = 0
    static let stateDelivered: Int64 = 1
    static let stateExpired: Int64 = 2
    static let stateScheduled: Int64 = 3
    static let statePurged: Int64 = 4
    static let stateCancelled: Int64 = 5
    /// To an account that blocks the sender (`conversations.md` 9): a route without ciphertext, never delivered.
    static let stateDropped: Int64 = 6

    /// SQLSTATEs after which a whole transaction is retried: deadlock detected, serialization failure.
    static let retryableStates: Set<String> = ["40P01", "40001"]
    /// Most attempts of one write transaction (the first and retries after a deadlock).
    static let maxWriteAttempts = 8

    /// Runs `body` in one transaction and commits it, retrying the whole transaction (up to `maxWriteAttempts`
    /// times) when PostgreSQL aborted it to break a deadlock (`40P01`) or for a serialization failure (`40001`):
    /// transactions of several nodes lock counter and route rows in orders no single node controls. `body` must be
    /// safe to run again (it sees only the database; its earlier attempt was rolled back).
    /// - Throws: the `StoreError` `body` threw (the transaction rolled back), else `StoreError.backend`.
    func write<T: Sendable>(_ body: @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await client.withTransaction(logger: logger) { connection in
                    try await body(PostgresTransaction(connection: connection, logger: self.logger))
                }
            } catch let error as PostgresTransactionError {
                if let inner = error.closureError as? StoreError { throw inner }
                if error.commitError == nil, let inner = error.closureError as? PSQLError,
                    let state = inner.serverInfo?[.sqlState], Self.retryableStates.contains(state), attempt < Self.maxWriteAttempts
                {
                    // A short random pause, growing per attempt, so two aborted transactions do not collide again.
                    try? await Task.sleep(for: .milliseconds(Int.random(in: 5...40) * attempt))
                    attempt += 1
                    continue
                }
                throw StoreError(.backend, Self.describe(error.closureError ?? error.beginError ?? error.commitError ?? error))
            } catch let error as StoreError {
                throw error
            } catch {
                throw StoreError(.backend, Self.describe(error))
            }
        }
    }

    /// Runs `body` on a pooled connection outside an explicit transaction (each statement commits on its own):
    /// for reads.
    func read<T: Sendable>(_ body: @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        try await run {
            try await self.client.withConnection { connection in
                try await body(PostgresTransaction(connection: connection, logger: self.logger))
            }
        }
    }

    /// Queues `items` for `device` inside `db`'s transaction, in order, and returns their sequences.
    ///
    /// The sequences come from the device's `queue_counters` row (`cluster.md` 5), created or advanced by one
    /// `INSERT … ON CONFLICT DO UPDATE`, which locks that row until the transaction ends: two transactions queueing
    /// for one device serialize there, so sequences follow commit order and a reader that has seen sequence N never
    /// later finds a committed item below N. The row's `envelopes` count grows by the envelopes queued (a trigger
    /// shrinks it on every delete). It does not check that `device` exists, nor any queue limit: callers do.
    /// Other parts (the cluster code) may call it inside their own `write` transaction.
    @discardableResult
    static func enqueue(_ db: PostgresTransaction, device: DeviceAddress, items: [QueueInsert]) async throws -> [Int64] {
        guard !items.isEmpty else { return [] }
        let count = Int64(items.count)
        let envelopes = Int64(items.filter(\.isEnvelope).count)
        let deviceID = Int64(device.deviceID)
        guard let row = try await db.first(
            """
            INSERT INTO queue_counters (handle, device_id, next_sequence, envelopes) VALUES (\(device.handle), \(deviceID), \(count + 1), \(envelopes))
            ON CONFLICT (handle, device_id) DO UPDATE
                SET next_sequence = queue_counters.next_sequence + \(count), envelopes = queue_counters.envelopes + \(envelopes)
            RETURNING next_sequence - \(count)
            """)
        else { throw StoreError(.corrupt, "queue counter not returned") }
        let first = try row.decode(Int64.self)
        var sequences: [Int64] = []
        for (offset, item) in items.enumerated() {
            let sequence = first + Int64(offset)
            sequences.append(sequence)
            switch item {
            case .envelope(let envelopeID, let ciphertext, let expiresAtMs):
                try await db.rows(
                    """
                    INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, ciphertext, expires_at_ms)
                    VALUES (\(device.handle), \(deviceID), \(sequence), \(kindEnvelope), \(envelopeID), \(ciphertext), \(expiresAtMs))
                    """)
            case .scheduledEnvelope(let envelopeID, let expiresAtMs):
                let inserted = try await db.count(
                    """
                    INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, ciphertext, expires_at_ms)
                    SELECT \(device.handle), \(deviceID), \(sequence), \(kindEnvelope), envelope_id, ciphertext, \(expiresAtMs)
                    FROM scheduled_envelopes WHERE envelope_id = \(envelopeID)
                    RETURNING 1
                    """)
                guard inserted == 1 else { throw StoreError(.corrupt, "a released scheduled envelope has no stored ciphertext") }
            case .receipt(let receiptID, let envelopeID, let kind, let atMs, let recipient, let expiresAtMs):
                try await db.rows(
                    """
                    INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, receipt_id, receipt_kind, receipt_at,
                        receipt_recipient_handle, receipt_recipient_device_id, expires_at_ms)
                    VALUES (\(device.handle), \(deviceID), \(sequence), \(kindReceipt), \(envelopeID), \(receiptID), \(Int64(kind.rawValue)),
                        \(atMs), \(recipient.handle), \(Int64(recipient.deviceID)), \(expiresAtMs))
                    """)
            }
        }
        return sequences
    }

    /// Queues a receipt for `sender` when it is still a current device; returns whether it did.
    func queueReceipt(
        _ db: PostgresTransaction, to sender: DeviceAddress, envelopeID: Data, kind: ReceiptKind, recipient: DeviceAddress, atMs: Int64,
        expiresAtMs: Int64
    ) async throws -> Bool {
        guard try await Self.deviceExists(db, sender) else { return false }
        try await Self.enqueue(
            db, device: sender,
            items: [.receipt(receiptID: makeID(), envelopeID: envelopeID, kind: kind, atMs: atMs, recipient: recipient, expiresAtMs: expiresAtMs)])
        return true
    }

    /// Locks the queue counter rows of `devices` (those that exist) in one sorted order and returns each one's
    /// count of undelivered envelopes (0 for a device without a row). Taking them up front, sorted, keeps two
    /// submits to the same devices from locking them in opposite orders.
    static func lockQueueDepths(_ db: PostgresTransaction, _ devices: Set<DeviceAddress>) async throws -> [DeviceAddress: Int] {
        guard !devices.isEmpty else { return [:] }
        let sorted = devices.sorted { ($0.handle, $0.deviceID) < ($1.handle, $1.deviceID) }
        let handles = sorted.map(\.handle), ids = sorted.map { Int64($0.deviceID) }
        var depths: [DeviceAddress: Int] = [:]
        for row in try await db.rows(
            """
            SELECT c.handle, c.device_id, c.envelopes FROM queue_counters c
            JOIN unnest(\(handles)::text[], \(ids)::bigint[]) AS w(handle, device_id) ON c.handle = w.handle AND c.device_id = w.device_id
            ORDER BY c.handle COLLATE "C", c.device_id FOR UPDATE OF c
            """)
        {
            let (handle, deviceID, envelopes) = try row.decode((String, Int64, Int64).self)
            depths[DeviceAddress(handle: handle, deviceID: UInt32(deviceID))] = Int(envelopes)
        }
        return depths
    }

    /// The undelivered envelopes queued for `device`, its counter row locked until the transaction ends.
    static func lockQueueDepth(_ db: PostgresTransaction, _ device: DeviceAddress) async throws -> Int {
        try await lockQueueDepths(db, [device])[device] ?? 0
    }

    static func deviceExists(_ db: PostgresTransaction, _ address: DeviceAddress) async throws -> Bool {
        try await db.exists("SELECT 1 FROM devices WHERE handle = \(address.handle) AND device_id = \(Int64(address.deviceID))")
    }

    /// Takes the transaction-scoped advisory lock of `name` (`pg_advisory_xact_lock`): serializes the transactions
    /// of every node that take the same name (e.g. all submits of one sender account) until they end.
    static func lockName(_ db: PostgresTransaction, _ name: String) async throws {
        try await db.rows("SELECT pg_advisory_xact_lock(hashtextextended(\(name), 0))")
    }
}
