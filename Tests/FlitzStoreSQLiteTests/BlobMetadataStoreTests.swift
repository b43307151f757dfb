import FlitzStore
import FlitzStoreSQLite
import Foundation
import Testing

/// The blob part of the `RelayStore` conformance suite (`protocol/attachments.md` 4), on SQLite and PostgreSQL: tokens bind one upload, quota, compare-and-set commits, expiry listings, unsend matching, account purge.
@Suite(.freshStores) struct BlobMetadataStoreTests {
    static let alice = DeviceAddress(handle: "alice", deviceID: 1)

    static func token(_ seed: UInt8, unsend: Data = Data(), blobExpiresAtMs: Int64 = 100_000) -> UploadTokenRecord {
        UploadTokenRecord(
            tokenHash: RelayStoreTests.bytes(seed, 32), owner: alice, unsendTokenHash: unsend, blobExpiresAtMs: blobExpiresAtMs,
            tokenExpiresAtMs: 5_000)
    }

    @Test(arguments: StoreKind.allCases) func aTokenCreatesOneUploadWithinTheQuotaAndCommitsCompareAndSet(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        try await store.storeUploadToken(Self.token(1), atMs: 1_000)
        #expect(try await store.uploadToken(hash: RelayStoreTests.bytes(1, 32), nowMs: 1_000)?.owner == Self.alice)
        #expect(try await store.uploadToken(hash: RelayStoreTests.bytes(1, 32), nowMs: 5_000) == nil)  // expired
        let id = RelayStoreTests.bytes(9, 16)
        guard case .overQuota(let used) = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(1, 32), blobID: id, length: 101, nowMs: 1_000, uploadExpiresAtMs: 50_000, quotaBytes: 100)
        else { throw StoreError(.corrupt, "expected overQuota") }
        #expect(used == 0)
        guard case .created(let record) = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(1, 32), blobID: id, length: 100, nowMs: 1_000, uploadExpiresAtMs: 50_000, quotaBytes: 100)
        else { throw StoreError(.corrupt, "expected created") }
        #expect(record.committedOffset == 0 && !record.completed && record.expiresAtMs == 100_000)
        // The token is bound: it creates nothing else.
        #expect(try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(1, 32), blobID: RelayStoreTests.bytes(8, 16), length: 1, nowMs: 1_000,
            uploadExpiresAtMs: 50_000, quotaBytes: 1_000) == .unknownToken)
        #expect(try await store.blobQuotaUsage(handle: "alice", nowMs: 1_000) == 100)
        guard case .committed(let half) = try await store.commitUpload(blobID: id, from: 0, to: 60, nowMs: 1_000) else { throw StoreError(.corrupt) }
        #expect(half.committedOffset == 60 && !half.completed)
        guard case .offsetMismatch(let current) = try await store.commitUpload(blobID: id, from: 0, to: 100, nowMs: 1_000) else { throw StoreError(.corrupt) }
        #expect(current.committedOffset == 60)
        guard case .committed(let done) = try await store.commitUpload(blobID: id, from: 60, to: 100, nowMs: 1_000) else { throw StoreError(.corrupt) }
        #expect(done.completed)
        #expect(try await store.storedBlobBytes() == 100)
        #expect(try await store.commitUpload(blobID: RelayStoreTests.bytes(7, 16), from: 0, to: 1, nowMs: 1_000) == .gone)
    }

    @Test(arguments: StoreKind.allCases) func aCommitAfterTheUploadExpiryOrTheExpiryIsGone(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        try await store.storeUploadToken(Self.token(1, blobExpiresAtMs: 30_000), atMs: 1_000)
        try await store.storeUploadToken(Self.token(2, blobExpiresAtMs: 10_000), atMs: 1_000)
        let late = RelayStoreTests.bytes(21, 16)
        let shortLived = RelayStoreTests.bytes(22, 16)
        _ = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(1, 32), blobID: late, length: 10, nowMs: 1_000, uploadExpiresAtMs: 20_000, quotaBytes: 1_000)
        _ = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(2, 32), blobID: shortLived, length: 10, nowMs: 1_000, uploadExpiresAtMs: 20_000, quotaBytes: 1_000)
        guard case .committed = try await store.commitUpload(blobID: late, from: 0, to: 5, nowMs: 19_999) else { throw StoreError(.corrupt) }
        // At its upload expiry the completing commit is refused and the offset stays.
        #expect(try await store.commitUpload(blobID: late, from: 5, to: 10, nowMs: 20_000) == .gone)
        #expect(try await store.blob(id: late)?.committedOffset == 5)
        #expect(try await store.blob(id: late)?.completed == false)
        // At the blob's own expiry (before the upload expiry) too, and a stale offset is also just gone.
        #expect(try await store.commitUpload(blobID: shortLived, from: 0, to: 10, nowMs: 10_000) == .gone)
        #expect(try await store.commitUpload(blobID: shortLived, from: 3, to: 10, nowMs: 10_000) == .gone)
        #expect(try await store.blob(id: shortLived)?.committedOffset == 0)
        guard case .committed(let done) = try await store.commitUpload(blobID: shortLived, from: 0, to: 10, nowMs: 9_999) else { throw StoreError(.corrupt) }
        #expect(done.completed)
    }

    @Test(arguments: StoreKind.allCases) func expiryUnsendAndAccountPurge(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let unsend = RelayStoreTests.bytes(3, 32)
        try await store.storeUploadToken(Self.token(1, unsend: unsend, blobExpiresAtMs: 10_000), atMs: 1_000)
        try await store.storeUploadToken(Self.token(2), atMs: 1_000)
        try await store.storeUploadToken(Self.token(4), atMs: 1_000)
        let finished = RelayStoreTests.bytes(11, 16)
        let unfinished = RelayStoreTests.bytes(12, 16)
        _ = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(1, 32), blobID: finished, length: 10, nowMs: 1_000, uploadExpiresAtMs: 50_000, quotaBytes: 1_000)
        _ = try await store.commitUpload(blobID: finished, from: 0, to: 10, nowMs: 1_000)
        _ = try await store.createUpload(
            tokenHash: RelayStoreTests.bytes(2, 32), blobID: unfinished, length: 10, nowMs: 1_000, uploadExpiresAtMs: 20_000, quotaBytes: 1_000)
        #expect(try await store.expiredBlobs(nowMs: 9_999, limit: 10).isEmpty)
        #expect(try await store.expiredBlobs(nowMs: 10_000, limit: 10) == [finished])
        #expect(Set(try await store.expiredBlobs(nowMs: 20_000, limit: 10)) == [finished, unfinished])
        // Past expiry nothing counts against the quota.
        #expect(try await store.blobQuotaUsage(handle: "alice", nowMs: 20_000) == 0)
        #expect(try await store.blobs(handle: "alice", unsendTokenHash: unsend) == [finished])
        #expect(try await store.blobs(handle: "bob", unsendTokenHash: unsend).isEmpty)
        #expect(try await store.deleteExpiredUploadTokens(nowMs: 5_000) == 1)  // token 4, never used
        try await store.storeUploadToken(Self.token(5), atMs: 1_000)
        #expect(Set(try await store.deleteBlobData(handle: "alice")) == [finished, unfinished])
        #expect(try await store.blobs(handle: "alice").isEmpty)
        #expect(try await store.uploadToken(hash: RelayStoreTests.bytes(5, 32), nowMs: 1_000) == nil)
        #expect(try await store.deleteBlobRecords([finished]) == 0)
    }
}
