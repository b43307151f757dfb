import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation

/// The relay's blob store logic (`protocol/attachments.md` 4): upload capabilities, deletion (unsend, account
/// deletion and recovery, termination) and garbage collection. The HTTP side is `BlobRoutes.swift`. Nothing here
/// logs a token, a blob id or a per-account size.
extension Relay {
    /// Upload capability constants (`attachments.md` 8).
    enum Blob {
        /// Random bytes of a capability token.
        static let tokenBytes = 32
        /// A token authorises the creation of its upload for this long.
        static let tokenLifetimeMs: Int64 = 3_600_000
        /// Bytes of a blob id.
        static let idBytes = 16
        /// Expired uploads and blobs collected per sweep round.
        static let sweepBatch = 1_000
        /// A blob file without a record is deleted by the sweep once it is this old (seconds since its last write):
        /// far longer than the moment between a file's creation and its record's insertion.
        static let strayFileAge: TimeInterval = 3_600
    }

    /// `RequestUploadCapability`'s argument checks (`attachments.md` 4.1, second in order, before the rate limit).
    /// - Throws: `RelayError(.invalidArgument)`.
    func checkUploadCapabilityRequest(_ request: WireRequestUploadCapability) throws(RelayError) {
        guard request.unsendTokenHash.isEmpty || request.unsendTokenHash.count == ConversationTokens.length else {
            throw RelayError(.invalidArgument, "unsend_token_hash must be empty or \(ConversationTokens.length) bytes")
        }
        guard request.expiresAtMs == 0 || request.expiresAtMs > clock.nowMs() else {
            throw RelayError(.invalidArgument, "expires_at_ms must be 0 or in the future")
        }
    }

    /// RequestUploadCapability (`attachments.md` 4.1): issues a token for one upload. The relay keeps only its
    /// SHA-256, with the account, device, unsend token hash, the blob's expiry (capped at the retention ceiling;
    /// 0 = the ceiling) and the token's own expiry (1 hour).
    /// - Throws: `RelayError(.invalidArgument)` for a bad field; `.internal` when the store fails.
    func requestUploadCapability(_ request: WireRequestUploadCapability, device: DeviceAddress) async throws(RelayError) -> WireUploadCapability {
        try checkUploadCapabilityRequest(request)
        let now = clock.nowMs()
        let ceiling = now + retentionMs
        let blobExpiresAt = request.expiresAtMs == 0 ? ceiling : min(request.expiresAtMs, ceiling)
        let token = random.bytes(Blob.tokenBytes)
        let record = UploadTokenRecord(
            tokenHash: SHA256.hash(token), owner: device, unsendTokenHash: request.unsendTokenHash, blobExpiresAtMs: blobExpiresAt,
            tokenExpiresAtMs: now + Blob.tokenLifetimeMs)
        let used: Int64
        do {
            try await store.storeUploadToken(record, atMs: now)
            used = try await store.blobQuotaUsage(handle: device.handle, nowMs: now)
        } catch {
            throw internalError(error)
        }
        metrics.uploadCapabilityIssued()
        var reply = WireUploadCapability()
        reply.token = TokenBase64URL.encode(token)
        reply.uploadPath = BlobRoutes.uploadsPath
        reply.tokenExpiresAtMs = record.tokenExpiresAtMs
        reply.blobExpiresAtMs = blobExpiresAt
        reply.maxBlobBytes = UInt64(configuration.maxBlobBytes)
        reply.quotaBytes = UInt64(configuration.blobQuotaBytes)
        reply.quotaUsedBytes = UInt64(max(0, used))
        return reply
    }

    /// Deletes the bytes and then the records of `ids`; returns how many records were deleted.
    /// - Throws: `BlobStorageError` or `StoreError`; records whose bytes could not be deleted are kept.
    func deleteBlobs(_ ids: [Data]) async throws -> Int {
        guard !ids.isEmpty else { return 0 }
        for id in ids { try await blobs.delete(id) }
        return try await store.deleteBlobRecords(ids)
    }

    /// Deletes every blob and capability of `handle` (account deletion and recovery, `attachments.md` 4.5): bytes
    /// of the listed blobs first, then every record, then the bytes of any upload created meanwhile. Failures are
    /// logged (the account change already happened); a later sweep cannot find records that were deleted, so a
    /// file left by a failure stays until the operator removes it.
    func purgeBlobs(handle: String) async {
        do {
            let listed = try await store.blobs(handle: handle)
            for id in listed { try await blobs.delete(id) }
            let deleted = try await store.deleteBlobData(handle: handle)
            for id in Set(deleted).subtracting(listed) { try await blobs.delete(id) }
            metrics.blobsDeleted("account", count: deleted.count)
        } catch {
            logger.error("blob deletion failed", metadata: ["error": "\(error)"])
        }
    }

    /// Garbage collection (`attachments.md` 4.5), part of every sweep: unfinished uploads past their upload expiry,
    /// blobs past their expiry (bytes first, then records), and unused capabilities past their own expiry.
    /// - Returns: the uploads and blobs deleted.
    /// - Throws: `StoreError` or `BlobStorageError`.
    @discardableResult
    func sweepBlobs(nowMs: Int64) async throws -> Int {
        var total = 0
        while true {
            let ids = try await store.expiredBlobs(nowMs: nowMs, limit: Blob.sweepBatch)
            let deleted = try await deleteBlobs(ids)
            total += deleted
            if ids.count < Blob.sweepBatch || deleted == 0 { break }
        }
        metrics.blobsDeleted("expired", count: total)
        _ = try await store.deleteExpiredUploadTokens(nowMs: nowMs)
        try await sweepStrayBlobFiles()
        return total
    }

    /// Deletes blob files that have no record and were last written more than `Blob.strayFileAge` ago (a crash
    /// between a file's creation and its record's insertion, or a failed deletion). File times are wall-clock
    /// times, so the cutoff is the system's wall clock, not the relay's (test-movable) clock.
    /// - Returns: how many files were deleted.
    /// - Throws: `StoreError` or `BlobStorageError`.
    @discardableResult
    func sweepStrayBlobFiles() async throws -> Int {
        var deleted = 0
        for id in try await blobs.ids(modifiedBefore: Date(timeIntervalSinceNow: -Blob.strayFileAge)) {
            guard try await store.blob(id: id) == nil else { continue }
            try await blobs.delete(id)
            deleted += 1
        }
        metrics.blobsDeleted("stray", count: deleted)
        return deleted
    }
}

/// RFC 4648 section 5 base64url without padding (the upload token's text form).
enum TokenBase64URL {
    static func encode(_ bytes: Data) -> String {
        bytes.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The bytes of `text`, or nil when it is not unpadded base64url.
    static func decode(_ text: String) -> Data? {
        guard text.utf8.allSatisfy({ byte in
            (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte) || byte == 0x2D || byte == 0x5F
        }) else { return nil }
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.utf8.count % 4 != 0 { standard += "=" }
        return Data(base64Encoded: standard)
    }
}

/// One holder at a time per upload id: PATCHes of one upload run one after another, so each starts from the
/// committed offset the previous one left (an interrupted PATCH has truncated its bytes before the next starts).
actor UploadLocks {
    private var held: Set<Data> = []
    private var waiters: [Data: [CheckedContinuation<Void, Never>]] = [:]

    /// Waits until `id` is free, then holds it.
    func acquire(_ id: Data) async {
        if !held.contains(id) {
            held.insert(id)
            return
        }
        await withCheckedContinuation { waiters[id, default: []].append($0) }
    }

    /// Releases `id`, handing it to the next waiter if any.
    func release(_ id: Data) {
        if var queue = waiters[id], !queue.isEmpty {
            let next = queue.removeFirst()
            waiters[id] = queue.isEmpty ? nil : queue
            next.resume()
        } else {
            held.remove(id)
        }
    }
}
