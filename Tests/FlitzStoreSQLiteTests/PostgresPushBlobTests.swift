import FlitzStore
import FlitzStorePostgres
import Foundation
import Testing

/// `PushEndpointStore` and `BlobMetadataStore` of `PostgresRelayStore` on a real PostgreSQL server, with the races
/// two nodes run into (two stores on one database). The conformance suite (pg-test) runs every SQLite case on
/// PostgreSQL too; these are the cases the translation and the row locks must get right.
@Suite struct PostgresPushBlobTests {
    static func bytes(_ byte: UInt8, _ count: Int) -> Data { Data(repeating: byte, count: count) }

    static func webPush(_ url: String = "https://push.example.org/abc", at: Int64 = 2_000) -> StoredPushEndpoint {
        StoredPushEndpoint(provider: "webpush", endpoint: url, p256dh: bytes(4, 65), authSecret: bytes(5, 16), registeredAtMs: at)
    }

    @Test func endpointIsSetReadReplacedDroppedAndRemoved() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            let bob = try await PostgresCoreTests.register(store, "bob")
            #expect(try await store.pushEndpoint(device: bob) == nil)
            #expect(try await store.setPushEndpoint(device: bob, Self.webPush()) == Self.webPush())
            try await store.recordPushAccepted(device: bob, endpoint: "https://push.example.org/abc", atMs: 3_000)
            try await store.recordPushFailed(device: bob, endpoint: "https://push.example.org/other", reason: "ignored")
            // The same endpoint again keeps its counters; only the registration time (and keys) change.
            let again = try await store.setPushEndpoint(device: bob, Self.webPush(at: 4_000))
            #expect(again.registeredAtMs == 4_000 && again.wakesSent == 1 && again.lastWakeAtMs == 3_000 && again.lastFailure.isEmpty)
            // Another endpoint starts afresh.
            let other = try await store.setPushEndpoint(device: bob, Self.webPush("https://push.example.org/xyz", at: 5_000))
            #expect(other.wakesSent == 0 && other.lastWakeAtMs == 0 && other.endpoint == "https://push.example.org/xyz")
            // Dropped as dead: only provider, time and reason stay; a stale endpoint drops nothing.
            #expect(try await !store.dropPushEndpoint(device: bob, endpoint: "https://push.example.org/abc", reason: "gone", atMs: 6_000))
            #expect(try await store.dropPushEndpoint(device: bob, endpoint: "https://push.example.org/xyz", reason: "410", atMs: 6_000))
            let dropped = try await store.pushEndpoint(device: bob)
            #expect(dropped?.endpoint == nil && dropped?.p256dh.isEmpty == true && dropped?.droppedAtMs == 6_000 && dropped?.lastFailure == "410")
            #expect(dropped?.isLive == false)
            #expect(try await store.decideUrgentWake(device: bob, nowMs: 7_000, windowUntilMs: 60_000) == .noEndpoint)
            try await store.removePushEndpoint(device: bob)
            #expect(try await store.pushEndpoint(device: bob) == nil)
            await #expect(throws: StoreError(.unknownDevice)) {
                try await store.setPushEndpoint(device: DeviceAddress(handle: "bob", deviceID: 9), Self.webPush())
            }
        }
    }

    @Test func urgentWindowOpensOnceAcrossNodes() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let bob = try await PostgresCoreTests.register(stores[0], "bob")
            _ = try await stores[0].setPushEndpoint(device: bob, Self.webPush())
            // 20 decisions at once on two nodes: exactly one opens the window.
            let decisions = try await withThrowingTaskGroup(of: UrgentWakeDecision.self) { group in
                for index in 0..<20 {
                    let store = stores[index % 2]
                    group.addTask { try await store.decideUrgentWake(device: bob, nowMs: 10_000, windowUntilMs: 70_000) }
                }
                return try await group.reduce(into: [UrgentWakeDecision]()) { $0.append($1) }
            }
            let wakes = decisions.filter { if case .wake = $0 { return true } else { return false } }
            #expect(wakes.count == 1)
            #expect(decisions.filter { $0 == .coalesced(provider: "webpush") }.count == 19)
            guard case .wake(let endpoint)? = wakes.first else { return }
            #expect(endpoint.urgentWindowUntilMs == 70_000)
            // A skip closes only the window it opened; then the next decision wakes again.
            try await stores[1].closeUrgentWindow(device: bob, onlyIfUntilMs: 69_999)
            #expect(try await stores[1].decideUrgentWake(device: bob, nowMs: 20_000, windowUntilMs: 80_000) == .coalesced(provider: "webpush"))
            try await stores[1].closeUrgentWindow(device: bob, onlyIfUntilMs: 70_000)
            guard case .wake = try await stores[0].decideUrgentWake(device: bob, nowMs: 20_000, windowUntilMs: 80_000) else {
                Issue.record("expected a wake-up after the window closed")
                return
            }
            // The window passes by itself.
            guard case .wake = try await stores[1].decideUrgentWake(device: bob, nowMs: 80_000, windowUntilMs: 140_000) else {
                Issue.record("expected a wake-up after the window passed")
                return
            }
            try await stores[0].closeUrgentWindow(device: bob, onlyIfUntilMs: nil)
            #expect(try await stores[0].pushEndpoint(device: bob)?.urgentWindowUntilMs == 0)
        }
    }

    @Test func relaySecretIsTheFirstStoredUnderARace() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let values = try await withThrowingTaskGroup(of: Data.self) { group in
                for index in 0..<10 {
                    let store = stores[index % 2]
                    group.addTask { try await store.relaySecret(named: "push.vapidKey", orStore: Self.bytes(UInt8(index), 8), atMs: 1_000) }
                }
                return try await group.reduce(into: [Data]()) { $0.append($1) }
            }
            #expect(Set(values).count == 1)
            #expect(try await stores[1].relaySecret(named: "push.vapidKey", orStore: Self.bytes(0xFF, 8), atMs: 2_000) == values[0])
        }
    }

    @Test func isEnvelopeQueuedFollowsTheQueue() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            let alice = try await PostgresCoreTests.register(store, "alice")
            let bob = try await PostgresCoreTests.register(store, "bob")
            let id = Self.bytes(1, 16)
            _ = try await store.submit(sender: alice, envelopes: [PostgresCoreTests.envelope(id, to: bob)], atMs: 2_000, queueLimit: .max)
            #expect(try await store.isEnvelopeQueued(envelopeID: id, device: bob, nowMs: 2_000))
            #expect(try await !store.isEnvelopeQueued(envelopeID: id, device: bob, nowMs: 100_000))  // expired
            #expect(try await !store.isEnvelopeQueued(envelopeID: id, device: alice, nowMs: 2_000))
            _ = try await store.acknowledge(device: bob, envelopeIDs: [id], receiptIDs: [], atMs: 3_000, receiptExpiresAtMs: 50_000)
            #expect(try await !store.isEnvelopeQueued(envelopeID: id, device: bob, nowMs: 3_000))
        }
    }

    static let alice = DeviceAddress(handle: "alice", deviceID: 1)

    static func token(_ seed: UInt8, unsend: Data = Data(), blobExpiresAtMs: Int64 = 100_000) -> UploadTokenRecord {
        UploadTokenRecord(tokenHash: bytes(seed, 32), owner: alice, unsendTokenHash: unsend, blobExpiresAtMs: blobExpiresAtMs, tokenExpiresAtMs: 5_000)
    }

    @Test func aTokenCreatesOneUploadWithinTheQuotaAndCommitsCompareAndSet() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let store = stores[0]
            try await store.storeUploadToken(Self.token(1, unsend: Self.bytes(3, 32)), atMs: 1_000)
            #expect(try await store.uploadToken(hash: Self.bytes(1, 32), nowMs: 1_000)?.owner == Self.alice)
            #expect(try await store.uploadToken(hash: Self.bytes(1, 32), nowMs: 5_000) == nil)  // expired
            let id = Self.bytes(9, 16)
            #expect(try await store.createUpload(
                tokenHash: Self.bytes(1, 32), blobID: id, length: 101, nowMs: 1_000, uploadExpiresAtMs: 50_000, quotaBytes: 100) == .overQuota(usedBytes: 0))
            // Two nodes create with one token at once: one upload.
            let creations = try await withThrowingTaskGroup(of: UploadCreation.self) { group in
                for index in 0..<6 {
                    let node = stores[index % 2]
                    group.addTask {
                        try await node.createUpload(
                            tokenHash: Self.bytes(1, 32), blobID: Self.bytes(UInt8(20 + index), 16), length: 100, nowMs: 1_000, uploadExpiresAtMs: 50_000,
                            quotaBytes: 100)
                    }
                }
                return try await group.reduce(into: [UploadCreation]()) { $0.append($1) }
            }
            let created = creations.compactMap { creation -> BlobRecord? in
                if case .created(let record) = creation { return record }
                return nil
            }
            #expect(created.count == 1 && creations.filter { $0 == .unknownToken }.count == 5)
            guard let record = created.first else { return }
            #expect(record.committedOffset == 0 && !record.completed && record.expiresAtMs == 100_000)
            #expect(try await store.blob(id: record.blobID) == record)
            #expect(try await store.blobQuotaUsage(handle: "alice", nowMs: 1_000) == 100)
            // Two nodes commit from one offset: one wins, the other sees the new offset.
            let commits = try await withThrowingTaskGroup(of: UploadCommit.self) { group in
                for node in stores { group.addTask { try await node.commitUpload(blobID: record.blobID, from: 0, to: 60, nowMs: 1_000) } }
                return try await group.reduce(into: [UploadCommit]()) { $0.append($1) }
            }
            #expect(commits.filter { if case .committed = $0 { return true } else { return false } }.count == 1)
            #expect(commits.filter { if case .offsetMismatch(let current) = $0 { return current.committedOffset == 60 } else { return false } }.count == 1)
            guard case .committed(let done) = try await store.commitUpload(blobID: record.blobID, from: 60, to: 100, nowMs: 1_000) else {
                throw StoreError(.corrupt, "expected committed")
            }
            #expect(done.completed)
            #expect(try await store.storedBlobBytes() == 100)
            #expect(try await store.commitUpload(blobID: Self.bytes(7, 16), from: 0, to: 1, nowMs: 1_000) == .gone)
            #expect(try await store.blobs(handle: "alice", unsendTokenHash: Self.bytes(3, 32)) == [record.blobID])
            #expect(try await store.blobs(handle: "alice", unsendTokenHash: Data()).isEmpty)
            #expect(try await store.blobs(handle: "alice") == [record.blobID])
        }
    }

    @Test func expiredUploadsAndTokensAreListedAndAccountDataDeleted() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            for seed: UInt8 in 1...3 { try await store.storeUploadToken(Self.token(seed, blobExpiresAtMs: 100_000), atMs: 1_000) }
            _ = try await store.createUpload(
                tokenHash: Self.bytes(1, 32), blobID: Self.bytes(11, 16), length: 10, nowMs: 1_000, uploadExpiresAtMs: 20_000, quotaBytes: 1_000)
            _ = try await store.createUpload(
                tokenHash: Self.bytes(2, 32), blobID: Self.bytes(12, 16), length: 10, nowMs: 1_000, uploadExpiresAtMs: 20_000, quotaBytes: 1_000)
            _ = try await store.commitUpload(blobID: Self.bytes(12, 16), from: 0, to: 10, nowMs: 2_000)
            // Past the upload expiry: the unfinished one only; it no longer counts against the quota and cannot commit.
            #expect(try await store.expiredBlobs(nowMs: 20_000, limit: 10) == [Self.bytes(11, 16)])
            #expect(try await store.blobQuotaUsage(handle: "alice", nowMs: 20_000) == 10)
            #expect(try await store.commitUpload(blobID: Self.bytes(11, 16), from: 0, to: 5, nowMs: 20_000) == .gone)
            // Past the expiry: both.
            let expired = try await store.expiredBlobs(nowMs: 100_000, limit: 10)
            #expect(Set(expired) == [Self.bytes(11, 16), Self.bytes(12, 16)])
            #expect(try await store.expiredBlobs(nowMs: 100_000, limit: 1).count == 1)
            #expect(try await store.deleteBlobRecords([Self.bytes(11, 16), Self.bytes(99, 16)]) == 1)
            #expect(try await store.deleteExpiredUploadTokens(nowMs: 4_999) == 0)
            #expect(try await store.deleteBlobData(handle: "alice") == [Self.bytes(12, 16)])
            #expect(try await store.uploadToken(hash: Self.bytes(3, 32), nowMs: 1_000) == nil)  // deleted with the account's data
            #expect(try await store.storedBlobBytes() == 0)
        }
    }
}
