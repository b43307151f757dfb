import Foundation

// The relay's blob store (`protocol/attachments.md` section 4): metadata in `BlobMetadataStore` (part of every
// `RelayStore`, so SQLite now and PostgreSQL later implement it beside the rest), bytes in a `BlobByteStore`
// (files now, an S3-compatible object store later). Times are milliseconds since the Unix epoch; sizes are bytes.

/// An upload capability as stored (`attachments.md` 4.1): never the token itself, only its SHA-256.
public struct UploadTokenRecord: Hashable, Sendable {
    /// SHA-256 of the 32 random token bytes (32 bytes).
    public var tokenHash: Data
    /// The account and device that requested it.
    public var owner: DeviceAddress
    /// Empty or the 32-byte hash of the message's unsend token (`conversations.md` 5).
    public var unsendTokenHash: Data
    /// When the blob made with it may be deleted (already capped at the retention ceiling).
    public var blobExpiresAtMs: Int64
    /// The upload must be created before this time (1 hour after issue).
    public var tokenExpiresAtMs: Int64

    /// A record of the given fields.
    public init(tokenHash: Data, owner: DeviceAddress, unsendTokenHash: Data, blobExpiresAtMs: Int64, tokenExpiresAtMs: Int64) {
        self.tokenHash = tokenHash
        self.owner = owner
        self.unsendTokenHash = unsendTokenHash
        self.blobExpiresAtMs = blobExpiresAtMs
        self.tokenExpiresAtMs = tokenExpiresAtMs
    }
}

/// An upload, finished (a blob) or not (`attachments.md` 4.3).
public struct BlobRecord: Hashable, Sendable {
    /// 16 random bytes; 32 lowercase hex characters in URLs.
    public var blobID: Data
    /// SHA-256 of the capability token that created it (authorises HEAD, PATCH and DELETE).
    public var tokenHash: Data
    /// The account and device that uploaded it.
    public var owner: DeviceAddress
    /// `Upload-Length`: declared size in bytes (≥ 1).
    public var length: Int64
    /// Bytes committed (durable) so far, 0...length.
    public var committedOffset: Int64
    /// True once `committedOffset == length`: downloadable from then on.
    public var completed: Bool
    /// The blob's expiry.
    public var expiresAtMs: Int64
    /// An unfinished upload is deleted at this time (`Upload-Expires`).
    public var uploadExpiresAtMs: Int64
    /// Empty or the 32-byte unsend token hash the capability carried.
    public var unsendTokenHash: Data
    /// When the upload was created.
    public var createdAtMs: Int64

    /// A record of the given fields.
    public init(
        blobID: Data, tokenHash: Data, owner: DeviceAddress, length: Int64, committedOffset: Int64, completed: Bool, expiresAtMs: Int64,
        uploadExpiresAtMs: Int64, unsendTokenHash: Data, createdAtMs: Int64
    ) {
        self.blobID = blobID
        self.tokenHash = tokenHash
        self.owner = owner
        self.length = length
        self.committedOffset = committedOffset
        self.completed = completed
        self.expiresAtMs = expiresAtMs
        self.uploadExpiresAtMs = uploadExpiresAtMs
        self.unsendTokenHash = unsendTokenHash
        self.createdAtMs = createdAtMs
    }

    /// Whether it may be served or continued at `nowMs`: not past its expiry and, while unfinished, not past the
    /// upload expiry (attachments.md 4.5: "a blob past its expiry is never served, swept or not").
    public func isLive(atMs nowMs: Int64) -> Bool {
        nowMs < expiresAtMs && (completed || nowMs < uploadExpiresAtMs)
    }
}

/// The outcome of `BlobMetadataStore.createUpload`.
public enum UploadCreation: Hashable, Sendable {
    /// Created; the token is now bound to this upload.
    case created(BlobRecord)
    /// The token is unknown, expired or already used.
    case unknownToken
    /// The upload would take the account over `quotaBytes`; `usedBytes` is its current usage.
    case overQuota(usedBytes: Int64)
}

/// The outcome of `BlobMetadataStore.commitUpload`.
public enum UploadCommit: Hashable, Sendable {
    /// The offset advanced; the record as it is now.
    case committed(BlobRecord)
    /// The upload's committed offset is not `from` (another PATCH won); the current record.
    case offsetMismatch(BlobRecord)
    /// The upload is gone (deleted, expired, unsent).
    case gone
}

/// Blob metadata (`attachments.md` 4): capability tokens (SHA-256 only), uploads and blobs with their owner,
/// declared length, committed offset, expiry and unsend token hash. Each method is one durable transaction.
/// Bytes are not here: the relay deletes bytes (`BlobByteStore`) before it deletes the records that name them.
public protocol BlobMetadataStore: Sendable {
    /// Stores a capability.
    func storeUploadToken(_ token: UploadTokenRecord, atMs: Int64) async throws

    /// The unused capability whose hash is `tokenHash`, if it has not expired at `nowMs`.
    func uploadToken(hash tokenHash: Data, nowMs: Int64) async throws -> UploadTokenRecord?

    /// Bytes counted against `handle`'s quota at `nowMs` (attachments.md 4.5): the `length` of every live upload
    /// and blob (see `BlobRecord.isLive`).
    func blobQuotaUsage(handle: String, nowMs: Int64) async throws -> Int64

    /// Creates upload `blobID` of `length` bytes with the unused, unexpired token `tokenHash`, in one transaction:
    /// checks the quota (`usage + length <= quotaBytes`), inserts the record (offset 0, unfinished), and binds the
    /// token to it (the token can create nothing else).
    func createUpload(
        tokenHash: Data, blobID: Data, length: Int64, nowMs: Int64, uploadExpiresAtMs: Int64, quotaBytes: Int64
    ) async throws -> UploadCreation

    /// The upload or blob `blobID`, live or not, or nil.
    func blob(id blobID: Data) async throws -> BlobRecord?

    /// Advances `blobID`'s committed offset from `from` to `to` (compare-and-set); marks it completed when `to`
    /// equals its length. Call only after the bytes up to `to` are durable. An upload no longer live at `nowMs`
    /// (past its upload expiry or its expiry, see `BlobRecord.isLive`) is `.gone`: a PATCH that outlasted the
    /// upload's expiry does not commit (attachments.md 4.5).
    func commitUpload(blobID: Data, from: Int64, to: Int64, nowMs: Int64) async throws -> UploadCommit

    /// Deletes the records of `blobIDs` (missing ones are skipped); returns how many were deleted.
    @discardableResult
    func deleteBlobRecords(_ blobIDs: [Data]) async throws -> Int

    /// Ids of uploads and blobs to garbage-collect at `nowMs` (attachments.md 4.5): unfinished past their upload
    /// expiry, or any past their expiry; at most `limit`.
    func expiredBlobs(nowMs: Int64, limit: Int) async throws -> [Data]

    /// Deletes unused capabilities that expired before `nowMs`; returns how many.
    func deleteExpiredUploadTokens(nowMs: Int64) async throws -> Int

    /// Ids of `handle`'s uploads and blobs whose capability carried `unsendTokenHash` (32 bytes), finished or not.
    func blobs(handle: String, unsendTokenHash: Data) async throws -> [Data]

    /// Ids of every upload and blob of `handle` (account deletion and recovery, attachments.md 4.5).
    func blobs(handle: String) async throws -> [Data]

    /// Deletes every capability and upload/blob record of `handle`; returns the blob ids deleted (whose bytes the
    /// caller deletes if it has not yet).
    func deleteBlobData(handle: String) async throws -> [Data]

    /// Sum of the lengths of the completed blobs (the `flitz_relay_blob_bytes_stored` gauge).
    func storedBlobBytes() async throws -> Int64
}

/// Where blob bytes live (`attachments.md` 4.5): a small contract so an S3-compatible object store can replace the
/// filesystem. A blob is named by its 16-byte id. Writes are whole-or-nothing per PATCH: the caller writes at the
/// committed offset, calls `sync` before it advances the offset, and calls `truncate` back to the committed offset
/// when a PATCH fails. Errors are `BlobStorageError`.
public protocol BlobByteStore: Sendable {
    /// Creates an empty blob `id`; fails if it exists.
    func create(_ id: Data) async throws

    /// Opens `id` (which must exist) for writing at `offset`; the writer writes sequentially from there.
    func openWriter(_ id: Data, at offset: Int64) async throws -> any BlobWriter

    /// Shortens `id` to `length` bytes (drops bytes of a PATCH that did not commit).
    func truncate(_ id: Data, to length: Int64) async throws

    /// Current length of `id` in bytes; nil when it does not exist.
    func length(_ id: Data) async throws -> Int64?

    /// Reads up to `count` bytes of `id` from `offset` (fewer only at the end).
    func read(_ id: Data, at offset: Int64, count: Int) async throws -> [UInt8]

    /// Deletes `id`; a missing blob is not an error.
    func delete(_ id: Data) async throws

    /// Ids of the stored blobs last modified (created or written) before `cutoff`, wall-clock time. The sweep deletes
    /// those without a record: bytes left by a crash between `create` and the record's insertion (attachments.md 4.5).
    func ids(modifiedBefore cutoff: Date) async throws -> [Data]
}

/// A sequential writer into one blob (`BlobByteStore.openWriter`).
public protocol BlobWriter: Sendable {
    /// Writes `bytes` at the current position and advances it.
    func write(_ bytes: [UInt8]) async throws
    /// Makes everything written so far durable (fsync).
    func sync() async throws
    /// Releases the writer; further calls fail.
    func close() async throws
}

/// A failure of a `BlobByteStore`. `description` never names a blob id or holds bytes.
public struct BlobStorageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed, e.g. "write", and the errno text.
    public var description: String
    /// An error saying `description`.
    public init(_ description: String) { self.description = description }
}
