import FlitzStore
import Foundation
import NIOCore
import PostgresNIO

// `BlobMetadataStore` in PostgreSQL (`protocol/attachments.md` 4), translated from `SQLiteRelayStore+Blobs.swift`:
// capability tokens as SHA-256 only in `upload_tokens` until used or expired; an upload (finished or not) is a row of
// `blobs`, which keeps its token's hash. Several nodes may race on one token or one upload: `createUpload` locks the
// token row (`FOR UPDATE`: a second creation with it waits, then finds it gone) and `commitUpload` is one conditional
// `UPDATE` (compare-and-set on the offset).
extension PostgresRelayStore {
    private static let blobColumns =
        "blob_id, token_hash, handle, device_id, length, committed_offset, completed, expires_at, upload_expires_at, unsend_token_hash, created_at"

    /// Implements `BlobMetadataStore.storeUploadToken`.
    /// - Throws: `StoreError.backend` (also for a token hash stored twice).
    public func storeUploadToken(_ token: UploadTokenRecord, atMs: Int64) async throws {
        try await run {
            _ = try await self.client.query(
                """
                INSERT INTO upload_tokens (token_hash, handle, device_id, unsend_token_hash, blob_expires_at, token_expires_at, created_at)
                VALUES (\(token.tokenHash), \(token.owner.handle), \(Int64(token.owner.deviceID)), \(token.unsendTokenHash),
                    \(token.blobExpiresAtMs), \(token.tokenExpiresAtMs), \(atMs))
                """, logger: self.logger)
        }
    }

    /// Implements `BlobMetadataStore.uploadToken`.
    /// - Throws: `StoreError.backend`.
    public func uploadToken(hash tokenHash: Data, nowMs: Int64) async throws -> UploadTokenRecord? {
        try await run {
            try await self.client.withConnection { connection in
                try await Self.uploadToken(connection, hash: tokenHash, nowMs: nowMs, lock: false, logger: self.logger)
            }
        }
    }

    /// Implements `BlobMetadataStore.blobQuotaUsage`.
    /// - Throws: `StoreError.backend`.
    public func blobQuotaUsage(handle: String, nowMs: Int64) async throws -> Int64 {
        try await run {
            try await self.client.withConnection { connection in try await Self.usage(connection, handle: handle, nowMs: nowMs, logger: self.logger) }
        }
    }

    /// Implements `BlobMetadataStore.createUpload` in one transaction. The token row is locked, so of two nodes
    /// creating with one token at once, the second waits and then finds it used (`.unknownToken`). Two uploads of one
    /// account racing on its quota may both pass (as two SQLite writers cannot): the quota is a soft limit of one
    /// upload's length at most, which `attachments.md` 4.5 allows.
    /// - Throws: `StoreError.backend`.
    public func createUpload(
        tokenHash: Data, blobID: Data, length: Int64, nowMs: Int64, uploadExpiresAtMs: Int64, quotaBytes: Int64
    ) async throws -> UploadCreation {
        try await transaction { connection in
            guard let token = try await Self.uploadToken(connection, hash: tokenHash, nowMs: nowMs, lock: true, logger: self.logger) else {
                return .unknownToken
            }
            let handle = token.owner.handle
            let used = try await Self.usage(connection, handle: handle, nowMs: nowMs, logger: self.logger)
            guard used + length <= quotaBytes else { return .overQuota(usedBytes: used) }
            _ = try await connection.query("DELETE FROM upload_tokens WHERE token_hash = \(tokenHash)", logger: self.logger)
            let record = BlobRecord(
                blobID: blobID, tokenHash: tokenHash, owner: token.owner, length: length, committedOffset: 0, completed: false,
                expiresAtMs: token.blobExpiresAtMs, uploadExpiresAtMs: uploadExpiresAtMs, unsendTokenHash: token.unsendTokenHash, createdAtMs: nowMs)
            _ = try await connection.query(
                """
                INSERT INTO blobs (blob_id, token_hash, handle, device_id, length, committed_offset, completed, expires_at,
                    upload_expires_at, unsend_token_hash, created_at)
                VALUES (\(blobID), \(tokenHash), \(handle), \(Int64(token.owner.deviceID)), \(length), 0, FALSE, \(record.expiresAtMs),
                    \(uploadExpiresAtMs), \(record.unsendTokenHash), \(nowMs))
                """, logger: self.logger)
            return .created(record)
        }
    }

    /// Implements `BlobMetadataStore.blob(id:)`.
    /// - Throws: `StoreError.backend`.
    public func blob(id blobID: Data) async throws -> BlobRecord? {
        try await run {
            try await self.client.withConnection { connection in
                try await Self.blobRecords(
                    connection, "SELECT \(unescaped: Self.blobColumns) FROM blobs WHERE blob_id = \(blobID)",
                    logger: self.logger
                ).first
            }
        }
    }

    /// Implements `BlobMetadataStore.commitUpload`: reads the record, then one conditional `UPDATE` on the offset and
    /// on the upload still being live at `nowMs` (compare-and-set: of two nodes committing from one offset, one wins).
    /// - Throws: `StoreError.backend`.
    public func commitUpload(blobID: Data, from: Int64, to: Int64, nowMs: Int64) async throws -> UploadCommit {
        try await transaction { connection in
            guard
                var record = try await Self.blobRecords(
                    connection,
                    "SELECT \(unescaped: Self.blobColumns) FROM blobs WHERE blob_id = \(blobID) FOR UPDATE",
                    logger: self.logger
                ).first
            else { return .gone }
            guard record.committedOffset == from, !record.completed, to >= from, to <= record.length else {
                return record.isLive(atMs: nowMs) ? .offsetMismatch(record) : .gone
            }
            record.committedOffset = to
            record.completed = to == record.length
            let rows = try await connection.query(
                """
                UPDATE blobs SET committed_offset = \(to), completed = \(record.completed)
                WHERE blob_id = \(blobID) AND committed_offset = \(from) AND NOT completed AND upload_expires_at > \(nowMs)
                    AND expires_at > \(nowMs)
                RETURNING 1
                """, logger: self.logger)
            // No row changed: the upload expired (its upload expiry or its expiry passed) before this commit.
            guard try await rows.collect().count == 1 else { return .gone }
            return .committed(record)
        }
    }

    /// Implements `BlobMetadataStore.deleteBlobRecords`.
    /// - Throws: `StoreError.backend`.
    @discardableResult
    public func deleteBlobRecords(_ blobIDs: [Data]) async throws -> Int {
        guard !blobIDs.isEmpty else { return 0 }
        let ids = blobIDs.map { ByteBuffer(bytes: $0) }
        return try await run {
            try await self.client.query("DELETE FROM blobs WHERE blob_id = ANY(\(ids)) RETURNING 1", logger: self.logger).collect().count
        }
    }

    /// Implements `BlobMetadataStore.expiredBlobs`.
    /// - Throws: `StoreError.backend`.
    public func expiredBlobs(nowMs: Int64, limit: Int) async throws -> [Data] {
        try await run {
            let rows = try await self.client.query(
                """
                SELECT blob_id FROM blobs WHERE expires_at <= \(nowMs)
                UNION SELECT blob_id FROM blobs WHERE NOT completed AND upload_expires_at <= \(nowMs)
                LIMIT \(Int64(max(0, limit)))
                """, logger: self.logger)
            var ids: [Data] = []
            for try await id in rows.decode(Data.self) { ids.append(id) }
            return ids
        }
    }

    /// Implements `BlobMetadataStore.deleteExpiredUploadTokens`.
    /// - Throws: `StoreError.backend`.
    public func deleteExpiredUploadTokens(nowMs: Int64) async throws -> Int {
        try await run {
            try await self.client.query("DELETE FROM upload_tokens WHERE token_expires_at <= \(nowMs) RETURNING 1", logger: self.logger)
                .collect().count
        }
    }

    /// Implements `BlobMetadataStore.blobs(handle:unsendTokenHash:)`.
    /// - Throws: `StoreError.backend`.
    public func blobs(handle: String, unsendTokenHash: Data) async throws -> [Data] {
        guard !unsendTokenHash.isEmpty else { return [] }
        return try await run {
            try await self.client.withConnection { connection in
                try await Self.ids(
                    connection,
                    "SELECT blob_id FROM blobs WHERE handle = \(handle) AND unsend_token_hash = \(unsendTokenHash) ORDER BY blob_id",
                    logger: self.logger)
            }
        }
    }

    /// Implements `BlobMetadataStore.blobs(handle:)`.
    /// - Throws: `StoreError.backend`.
    public func blobs(handle: String) async throws -> [Data] {
        try await run {
            try await self.client.withConnection { connection in
                try await Self.ids(connection, "SELECT blob_id FROM blobs WHERE handle = \(handle) ORDER BY blob_id", logger: self.logger)
            }
        }
    }

    /// Implements `BlobMetadataStore.deleteBlobData(handle:)` in one transaction.
    /// - Throws: `StoreError.backend`.
    public func deleteBlobData(handle: String) async throws -> [Data] {
        try await transaction { connection in
            let ids = try await Self.ids(
                connection, "DELETE FROM blobs WHERE handle = \(handle) RETURNING blob_id", logger: self.logger)
            _ = try await connection.query("DELETE FROM upload_tokens WHERE handle = \(handle)", logger: self.logger)
            return ids.sorted { $0.lexicographicallyPrecedes($1) }
        }
    }

    /// Implements `BlobMetadataStore.storedBlobBytes`.
    /// - Throws: `StoreError.backend`.
    public func storedBlobBytes() async throws -> Int64 {
        try await run {
            let rows = try await self.client.query("SELECT COALESCE(SUM(length), 0)::BIGINT FROM blobs WHERE completed", logger: self.logger)
            for try await sum in rows.decode(Int64.self) { return sum }
            return 0
        }
    }

    // MARK: Helpers

    private static func usage(_ connection: PostgresConnection, handle: String, nowMs: Int64, logger: Logger) async throws -> Int64 {
        let rows = try await connection.query(
            """
            SELECT COALESCE(SUM(length), 0)::BIGINT FROM blobs
            WHERE handle = \(handle) AND expires_at > \(nowMs) AND (completed OR upload_expires_at > \(nowMs))
            """, logger: logger)
        for try await sum in rows.decode(Int64.self) { return sum }
        return 0
    }

    private static func uploadToken(_ connection: PostgresConnection, hash tokenHash: Data, nowMs: Int64, lock: Bool, logger: Logger)
        async throws -> UploadTokenRecord?
    {
        let query: PostgresQuery = try """
            SELECT token_hash, handle, device_id, unsend_token_hash, blob_expires_at, token_expires_at FROM upload_tokens
            WHERE token_hash = \(tokenHash) AND token_expires_at > \(nowMs)\(unescaped: lock ? " FOR UPDATE" : "")
            """
        for try await (hash, handle, deviceID, unsend, blobExpires, tokenExpires) in try await connection.query(query, logger: logger)
            .decode((Data, String, Int64, Data, Int64, Int64).self)
        {
            return UploadTokenRecord(
                tokenHash: hash, owner: DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID)), unsendTokenHash: unsend,
                blobExpiresAtMs: blobExpires, tokenExpiresAtMs: tokenExpires)
        }
        return nil
    }

    private static func blobRecords(_ connection: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [BlobRecord] {
        var records: [BlobRecord] = []
        for try await (id, tokenHash, handle, deviceID, length, offset, completed, expires, uploadExpires, unsend, created)
            in try await connection.query(query, logger: logger)
            .decode((Data, Data, String, Int64, Int64, Int64, Bool, Int64, Int64, Data, Int64).self)
        {
            records.append(
                BlobRecord(
                    blobID: id, tokenHash: tokenHash, owner: DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID)),
                    length: length, committedOffset: offset, completed: completed, expiresAtMs: expires, uploadExpiresAtMs: uploadExpires,
                    unsendTokenHash: unsend, createdAtMs: created))
        }
        return records
    }

    private static func ids(_ connection: PostgresConnection, _ query: PostgresQuery, logger: Logger) async throws -> [Data] {
        var ids: [Data] = []
        for try await id in try await connection.query(query, logger: logger).decode(Data.self) { ids.append(id) }
        return ids
    }
}
