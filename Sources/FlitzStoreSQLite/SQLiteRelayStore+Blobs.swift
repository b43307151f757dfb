import FlitzStore
import Foundation
import GRDB

// `BlobMetadataStore` in SQLite (`protocol/attachments.md` 4). Capability tokens are kept as SHA-256 only, in
// `upload_tokens` until used or expired; an upload (finished or not) is a row of `blobs`, which keeps its token's
// hash so the token keeps authorising HEAD, PATCH and DELETE on it.
extension SQLiteRelayStore {
    /// Migration `v7-blobs`.
    static func migrateBlobs(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE upload_tokens (
                token_hash BLOB PRIMARY KEY NOT NULL,
                handle TEXT NOT NULL,
                device_id INTEGER NOT NULL,
                unsend_token_hash BLOB NOT NULL,
                blob_expires_at INTEGER NOT NULL,
                token_expires_at INTEGER NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE INDEX upload_tokens_by_handle ON upload_tokens(handle);
            CREATE INDEX upload_tokens_by_expiry ON upload_tokens(token_expires_at);
            CREATE TABLE blobs (
                blob_id BLOB PRIMARY KEY NOT NULL,
                token_hash BLOB NOT NULL UNIQUE,
                handle TEXT NOT NULL,
                device_id INTEGER NOT NULL,
                length INTEGER NOT NULL,
                committed_offset INTEGER NOT NULL,
                completed INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                upload_expires_at INTEGER NOT NULL,
                unsend_token_hash BLOB NOT NULL,
                created_at INTEGER NOT NULL
            );
            CREATE INDEX blobs_by_handle ON blobs(handle, unsend_token_hash);
            CREATE INDEX blobs_by_expiry ON blobs(expires_at);
            CREATE INDEX blobs_by_upload_expiry ON blobs(completed, upload_expires_at);
            """)
    }

    private static let liveCondition = "expires_at > :now AND (completed = 1 OR upload_expires_at > :now)"

    private static func blobRecord(_ row: Row) -> BlobRecord {
        BlobRecord(
            blobID: row["blob_id"], tokenHash: row["token_hash"],
            owner: DeviceAddress(handle: row["handle"], deviceID: UInt32(row["device_id"] as Int64)), length: row["length"],
            committedOffset: row["committed_offset"], completed: (row["completed"] as Int64) != 0, expiresAtMs: row["expires_at"],
            uploadExpiresAtMs: row["upload_expires_at"], unsendTokenHash: row["unsend_token_hash"], createdAtMs: row["created_at"])
    }

    private static func usage(_ db: Database, handle: String, nowMs: Int64) throws -> Int64 {
        try Int64.fetchOne(
            db, sql: "SELECT COALESCE(SUM(length), 0) FROM blobs WHERE handle = :handle AND \(liveCondition)",
            arguments: ["handle": handle, "now": nowMs]) ?? 0
    }

    /// Implements `BlobMetadataStore.storeUploadToken`.
    public func storeUploadToken(_ token: UploadTokenRecord, atMs: Int64) async throws {
        try await run {
            try await self.pool.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO upload_tokens (token_hash, handle, device_id, unsend_token_hash, blob_expires_at, token_expires_at, created_at)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        token.tokenHash, token.owner.handle, Int64(token.owner.deviceID), token.unsendTokenHash, token.blobExpiresAtMs,
                        token.tokenExpiresAtMs, atMs,
                    ])
            }
        }
    }

    /// Implements `BlobMetadataStore.uploadToken`.
    public func uploadToken(hash tokenHash: Data, nowMs: Int64) async throws -> UploadTokenRecord? {
        try await run {
            try await self.pool.read { db in
                try Row.fetchOne(
                    db, sql: "SELECT * FROM upload_tokens WHERE token_hash = ? AND token_expires_at > ?", arguments: [tokenHash, nowMs]
                ).map { row in
                    UploadTokenRecord(
                        tokenHash: row["token_hash"], owner: DeviceAddress(handle: row["handle"], deviceID: UInt32(row["device_id"] as Int64)),
                        unsendTokenHash: row["unsend_token_hash"], blobExpiresAtMs: row["blob_expires_at"], tokenExpiresAtMs: row["token_expires_at"])
                }
            }
        }
    }

    /// Implements `BlobMetadataStore.blobQuotaUsage`.
    public func blobQuotaUsage(handle: String, nowMs: Int64) async throws -> Int64 {
        try await run { try await self.pool.read { db in try Self.usage(db, handle: handle, nowMs: nowMs) } }
    }

    /// Implements `BlobMetadataStore.createUpload` in one transaction.
    public func createUpload(
        tokenHash: Data, blobID: Data, length: Int64, nowMs: Int64, uploadExpiresAtMs: Int64, quotaBytes: Int64
    ) async throws -> UploadCreation {
        try await run {
            try await self.pool.write { db in
                guard let token = try Row.fetchOne(
                    db, sql: "SELECT * FROM upload_tokens WHERE token_hash = ? AND token_expires_at > ?", arguments: [tokenHash, nowMs])
                else { return .unknownToken }
                let handle: String = token["handle"]
                let used = try Self.usage(db, handle: handle, nowMs: nowMs)
                guard used + length <= quotaBytes else { return .overQuota(usedBytes: used) }
                try db.execute(sql: "DELETE FROM upload_tokens WHERE token_hash = ?", arguments: [tokenHash])
                let record = BlobRecord(
                    blobID: blobID, tokenHash: tokenHash, owner: DeviceAddress(handle: handle, deviceID: UInt32(token["device_id"] as Int64)),
                    length: length, committedOffset: 0, completed: false, expiresAtMs: token["blob_expires_at"], uploadExpiresAtMs: uploadExpiresAtMs,
                    unsendTokenHash: token["unsend_token_hash"], createdAtMs: nowMs)
                try db.execute(
                    sql: """
                        INSERT INTO blobs (blob_id, token_hash, handle, device_id, length, committed_offset, completed, expires_at,
                            upload_expires_at, unsend_token_hash, created_at)
                        VALUES (?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?)
                        """,
                    arguments: [
                        blobID, tokenHash, handle, Int64(record.owner.deviceID), length, record.expiresAtMs, uploadExpiresAtMs,
                        record.unsendTokenHash, nowMs,
                    ])
                return .created(record)
            }
        }
    }

    /// Implements `BlobMetadataStore.blob(id:)`.
    public func blob(id blobID: Data) async throws -> BlobRecord? {
        try await run {
            try await self.pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM blobs WHERE blob_id = ?", arguments: [blobID]).map(Self.blobRecord)
            }
        }
    }

    /// Implements `BlobMetadataStore.commitUpload` (compare-and-set in one transaction, on the offset and on the
    /// upload still being live at `nowMs`).
    public func commitUpload(blobID: Data, from: Int64, to: Int64, nowMs: Int64) async throws -> UploadCommit {
        try await run {
            try await self.pool.write { db in
                guard var record = try Row.fetchOne(db, sql: "SELECT * FROM blobs WHERE blob_id = ?", arguments: [blobID]).map(Self.blobRecord)
                else { return .gone }
                guard record.committedOffset == from, !record.completed, to >= from, to <= record.length else {
                    return record.isLive(atMs: nowMs) ? .offsetMismatch(record) : .gone
                }
                record.committedOffset = to
                record.completed = to == record.length
                try db.execute(
                    sql: """
                        UPDATE blobs SET committed_offset = ?, completed = ?
                        WHERE blob_id = ? AND committed_offset = ? AND completed = 0 AND upload_expires_at > ? AND expires_at > ?
                        """,
                    arguments: [to, record.completed ? 1 : 0, blobID, from, nowMs, nowMs])
                // No row changed: the upload expired (its upload expiry or its expiry passed) before this commit.
                guard db.changesCount == 1 else { return .gone }
                return .committed(record)
            }
        }
    }

    /// Implements `BlobMetadataStore.deleteBlobRecords`.
    @discardableResult
    public func deleteBlobRecords(_ blobIDs: [Data]) async throws -> Int {
        guard !blobIDs.isEmpty else { return 0 }
        return try await run {
            try await self.pool.write { db in
                var deleted = 0
                for id in blobIDs {
                    try db.execute(sql: "DELETE FROM blobs WHERE blob_id = ?", arguments: [id])
                    deleted += db.changesCount
                }
                return deleted
            }
        }
    }

    /// Implements `BlobMetadataStore.expiredBlobs`.
    public func expiredBlobs(nowMs: Int64, limit: Int) async throws -> [Data] {
        try await run {
            try await self.pool.read { db in
                try Data.fetchAll(
                    db,
                    sql: """
                        SELECT blob_id FROM blobs WHERE expires_at <= :now
                        UNION SELECT blob_id FROM blobs WHERE completed = 0 AND upload_expires_at <= :now
                        LIMIT :limit
                        """,
                    arguments: ["now": nowMs, "limit": limit])
            }
        }
    }

    /// Implements `BlobMetadataStore.deleteExpiredUploadTokens`.
    public func deleteExpiredUploadTokens(nowMs: Int64) async throws -> Int {
        try await run {
            try await self.pool.write { db in
                try db.execute(sql: "DELETE FROM upload_tokens WHERE token_expires_at <= ?", arguments: [nowMs])
                return db.changesCount
            }
        }
    }

    /// Implements `BlobMetadataStore.blobs(handle:unsendTokenHash:)`.
    public func blobs(handle: String, unsendTokenHash: Data) async throws -> [Data] {
        guard !unsendTokenHash.isEmpty else { return [] }
        return try await run {
            try await self.pool.read { db in
                try Data.fetchAll(
                    db, sql: "SELECT blob_id FROM blobs WHERE handle = ? AND unsend_token_hash = ? ORDER BY blob_id",
                    arguments: [handle, unsendTokenHash])
            }
        }
    }

    /// Implements `BlobMetadataStore.blobs(handle:)`.
    public func blobs(handle: String) async throws -> [Data] {
        try await run {
            try await self.pool.read { db in
                try Data.fetchAll(db, sql: "SELECT blob_id FROM blobs WHERE handle = ? ORDER BY blob_id", arguments: [handle])
            }
        }
    }

    /// Implements `BlobMetadataStore.deleteBlobData(handle:)` in one transaction.
    public func deleteBlobData(handle: String) async throws -> [Data] {
        try await run {
            try await self.pool.write { db in
                let ids = try Data.fetchAll(db, sql: "SELECT blob_id FROM blobs WHERE handle = ? ORDER BY blob_id", arguments: [handle])
                try db.execute(sql: "DELETE FROM blobs WHERE handle = ?", arguments: [handle])
                try db.execute(sql: "DELETE FROM upload_tokens WHERE handle = ?", arguments: [handle])
                return ids
            }
        }
    }

    /// Implements `BlobMetadataStore.storedBlobBytes`.
    public func storedBlobBytes() async throws -> Int64 {
        try await run {
            try await self.pool.read { db in try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(length), 0) FROM blobs WHERE completed = 1") ?? 0 }
        }
    }
}
