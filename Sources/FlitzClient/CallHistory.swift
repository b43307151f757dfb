import FlitzProtocol
import Foundation
import GRDB

// The local call history (protocol/calls.md 8): one row per call this device took part in, written once when the
// call ends (`CallStateMachine.Action.ended`). Nothing of a call's keys, candidates or addresses is stored.

extension ClientStore {
    /// `v14-calls`: the call history. Times are seconds since the Unix epoch (this device's clock); `duration` is
    /// seconds from the answer to the end (0 when never answered); `outcome` is a `CallOutcome` raw value.
    static func migrateCalls(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE calls (
                call_id BLOB PRIMARY KEY,                  -- 16 bytes
                peer TEXT NOT NULL,
                direction TEXT NOT NULL,                   -- outgoing, incoming
                started_at REAL NOT NULL,
                answered_at REAL,
                ended_at REAL NOT NULL,
                duration REAL NOT NULL DEFAULT 0,
                outcome TEXT NOT NULL                      -- answered, missed, declined, busy, failed, answered_elsewhere
            );
            CREATE INDEX calls_started ON calls(started_at);
            """)
    }

    /// Records an ended call; a second record for the same call id is ignored (the first end counts).
    static func recordCall(_ record: CallRecord, _ db: Database) throws {
        try db.execute(
            sql: """
                INSERT OR IGNORE INTO calls (call_id, peer, direction, started_at, answered_at, ended_at, duration, outcome)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                record.callID.bytes, record.peer, record.direction.rawValue, record.startedAt.timeIntervalSince1970,
                record.answeredAt?.timeIntervalSince1970, record.endedAt.timeIntervalSince1970, record.duration, record.outcome.rawValue,
            ])
    }
}

extension FlitzClient {
    /// Adds an ended call to the local call history (once per call id).
    /// - Throws: database errors.
    public func recordCall(_ record: CallRecord) throws {
        try store.dbQueue.write { db in try ClientStore.recordCall(record, db) }
    }

    /// The local call history, newest first (`flitz calls`). `peer` restricts it to one handle; `limit` to the
    /// newest that many.
    /// - Throws: `ClientError(.notInitialized)`, database errors.
    public func callHistory(peer: String? = nil, limit: Int? = nil) throws -> [CallRecord] {
        _ = try requireAccount()
        return try store.dbQueue.read { db in try ClientStore.callHistory(peer: peer, limit: limit, db) }
    }
}

extension ClientStore {
    /// The `calls` rows, newest first; rows this version cannot read (an unknown outcome) are skipped.
    static func callHistory(peer: String?, limit: Int?, _ db: Database) throws -> [CallRecord] {
        var sql = "SELECT * FROM calls"
        var arguments: StatementArguments = []
        if let peer {
            sql += " WHERE peer = ?"
            arguments += [peer]
        }
        sql += " ORDER BY started_at DESC, rowid DESC"
        if let limit {
            sql += " LIMIT ?"
            arguments += [limit]
        }
        return try Row.fetchAll(db, sql: sql, arguments: arguments).compactMap { row -> CallRecord? in
            guard let id = CallID(row["call_id"]), let direction = CallDirection(rawValue: row["direction"]),
                let outcome = CallOutcome(rawValue: row["outcome"])
            else { return nil }
            let answered: Double? = row["answered_at"]
            return CallRecord(
                callID: id, peer: row["peer"], direction: direction, startedAt: Date(timeIntervalSince1970: row["started_at"]),
                answeredAt: answered.map(Date.init(timeIntervalSince1970:)), endedAt: Date(timeIntervalSince1970: row["ended_at"]),
                outcome: outcome)
        }
    }
}
