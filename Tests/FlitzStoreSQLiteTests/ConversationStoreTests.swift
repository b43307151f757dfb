import FlitzStore
import FlitzStorePostgres
import FlitzStoreSQLite
import Foundation
import Testing

/// The `ConversationStore` part of the conformance suite (`protocol/conversations.md` 5, 8, 9, 10), on SQLite and
/// PostgreSQL.
@Suite(.freshStores) struct ConversationStoreTests {

    static func scheduled(_ id: UInt8, to recipient: DeviceAddress, notBefore: Int64, cancel: UInt8 = 0xCC, unsend: Data = Data()) -> EnvelopeSubmission {
        EnvelopeSubmission(
            envelopeID: RelayStoreTests.bytes(id, 16), recipient: recipient, ciphertext: RelayStoreTests.bytes(0xAB, 40),
            expiresAtMs: notBefore + 60_000, routeExpiresAtMs: notBefore + 1_000_000, unsendTokenHash: unsend, notBeforeMs: notBefore,
            cancelTokenHash: RelayStoreTests.bytes(cancel, 32), ttlMs: 60_000, urgency: 1)
    }

    @Test(arguments: StoreKind.allCases) func scheduledEnvelopesAreHeldLimitedReleasedAndIdempotent(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        let first = Self.scheduled(1, to: bob, notBefore: 50_000)
        #expect(try await store.submit(sender: alice, envelopes: [first], atMs: 2_000)
            == [.scheduled(acceptedAtMs: 2_000, expiresAtMs: 110_000, newlyScheduled: true)])
        #expect(try await store.submit(sender: alice, envelopes: [first], atMs: 3_000)
            == [.scheduled(acceptedAtMs: 2_000, expiresAtMs: 110_000, newlyScheduled: false)])
        #expect(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10).isEmpty)
        #expect(try await store.nextScheduledRelease() == 50_000)
        // Not yet due: nothing moves.
        #expect(try await store.releaseScheduled(nowMs: 49_999, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000).released.isEmpty)
        let release = try await store.releaseScheduled(nowMs: 50_500, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000)
        #expect(release.released == [ReleasedEnvelope(envelopeID: first.envelopeID, recipient: bob, expiresAtMs: 110_500, urgency: 1)])
        let items = try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 50_500, limit: 10)
        guard case .envelope(let envelope)? = items.first?.content else { throw Failure("nothing queued") }
        #expect(envelope.acceptedAtMs == 50_500 && envelope.expiresAtMs == 110_500)
        #expect(try await store.nextScheduledRelease() == nil)
        // After release, a resubmission answers with the release times and queues nothing more.
        #expect(try await store.submit(sender: alice, envelopes: [first], atMs: 60_000)
            == [.accepted(acceptedAtMs: 50_500, expiresAtMs: 110_500, newlyQueued: false)])
        // MAX_SCHEDULED per account.
        let many = (0..<ConversationStoreLimits.maxScheduledPerAccount).map { index in
            var envelope = Self.scheduled(0, to: bob, notBefore: 900_000)
            var id = Data(repeating: 0xEE, count: 16)
            id[14] = UInt8(truncatingIfNeeded: index >> 8)
            id[15] = UInt8(truncatingIfNeeded: index)
            envelope.envelopeID = id
            return envelope
        }
        let outcomes = try await store.submit(sender: alice, envelopes: many + [Self.scheduled(9, to: bob, notBefore: 900_000)], atMs: 70_000)
        #expect(outcomes.prefix(many.count).allSatisfy { if case .scheduled = $0 { true } else { false } })
        #expect(outcomes.last == .rejected(.queueFull))
        #expect(try await store.cancelScheduled(senderHandle: "alice", cancelTokenHash: RelayStoreTests.bytes(0xCC, 32)) == 1_000)
        #expect(try await store.cancelScheduled(senderHandle: "alice", cancelTokenHash: RelayStoreTests.bytes(0xCC, 32)) == 0)
    }

    @Test(arguments: StoreKind.allCases) func unsendPurgesQueuedAndScheduledAndReportsTheRest(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        let carol = try await RelayStoreTests.register(store, "carol")
        let dave = try await RelayStoreTests.register(store, "dave")
        let hash = RelayStoreTests.bytes(0x77, 32)
        func with(_ envelope: EnvelopeSubmission) -> EnvelopeSubmission {
            var envelope = envelope
            envelope.unsendTokenHash = hash
            return envelope
        }
        _ = try await store.submit(
            sender: alice,
            envelopes: [
                with(RelayStoreTests.envelope(1, to: bob)), with(RelayStoreTests.envelope(2, to: carol, expiresAtMs: 5_000)),
                Self.scheduled(3, to: dave, notBefore: 90_000, unsend: hash),
            ],
            atMs: 1_000)
        _ = try await store.acknowledge(device: bob, envelopeIDs: [RelayStoreTests.bytes(1, 16)], receiptIDs: [], atMs: 2_000, receiptExpiresAtMs: 9_000)
        _ = try await store.sweep(nowMs: 6_000, receiptExpiresAtMs: 9_000)
        let expected: [Data: UnsendEnvelopeState] = [
            RelayStoreTests.bytes(1, 16): .alreadyDelivered, RelayStoreTests.bytes(2, 16): .alreadyExpired,
            RelayStoreTests.bytes(3, 16): .purged,
        ]
        for _ in 0..<2 {
            let records = try await store.unsend(senderHandle: "alice", unsendTokenHash: hash, nowMs: 6_000)
            #expect(Dictionary(uniqueKeysWithValues: records.map { ($0.envelopeID, $0.state) }) == expected)
        }
        #expect(try await store.nextScheduledRelease() == nil)
        #expect(try await store.unsend(senderHandle: "bob", unsendTokenHash: hash, nowMs: 6_000).isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func blockListsAreBoundedAndAnswerWhoBlocked(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        #expect(try await store.updateBlockList(handle: "bob", block: ["alice", "carol"], unblock: [], maxBlocked: 2) == ["alice", "carol"])
        let error = await #expect(throws: StoreError.self) {
            try await store.updateBlockList(handle: "bob", block: ["dave"], unblock: [], maxBlocked: 2)
        }
        #expect(error?.code == .blockListFull)
        #expect(try await store.blockList(handle: "bob") == ["alice", "carol"])
        #expect(try await store.updateBlockList(handle: "bob", block: ["dave"], unblock: ["carol"], maxBlocked: 2) == ["alice", "dave"])
        #expect(try await store.blockers(of: "alice", among: ["bob", "erin"]) == ["bob"])
        #expect(try await store.blockers(of: "carol", among: ["bob"]).isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func deletingAnAccountDeletesItsBlockListAndScheduledEnvelopes(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        _ = try await store.updateBlockList(handle: "alice", block: ["carol"], unblock: [], maxBlocked: 10)
        _ = try await store.submit(sender: alice, envelopes: [Self.scheduled(1, to: bob, notBefore: 50_000)], atMs: 2_000)
        _ = try await store.deleteAccount(
            handle: "alice", accountIdentityKey: RelayStoreTests.bytes(9, 32), atMs: 3_000, tombstoneUntilMs: 9_000, receiptExpiresAtMs: 9_000)
        #expect(try await store.blockList(handle: "alice").isEmpty)
        #expect(try await store.nextScheduledRelease() == nil)
        #expect(try await store.releaseScheduled(nowMs: 60_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000).released.isEmpty)
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension ConversationStoreTests {
    @Test(arguments: StoreKind.allCases) func releaseGoesInBatchesAndDeletesOrphans(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        let envelopes = (0..<5).map { index in
            var envelope = Self.scheduled(UInt8(index + 1), to: bob, notBefore: 10_000 + Int64(index))
            // The last one's route is kept only until 20 000: swept before its release (an orphan row).
            if index == 4 { envelope.routeExpiresAtMs = 20_000 }
            return envelope
        }
        _ = try await store.submit(sender: alice, envelopes: envelopes, atMs: 1_000)
        _ = try await store.sweep(nowMs: 20_000, receiptExpiresAtMs: 90_000)
        let first = try await store.releaseScheduled(nowMs: 30_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000, queueLimit: 10, batchSize: 2)
        #expect(first.released.map(\.envelopeID) == [RelayStoreTests.bytes(1, 16), RelayStoreTests.bytes(2, 16)] && first.more)
        let second = try await store.releaseScheduled(nowMs: 30_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000, queueLimit: 10, batchSize: 2)
        #expect(second.released.count == 2 && second.more)
        // The orphan leaves the schedule: nextScheduledRelease and releaseScheduled agree, so the releaser cannot spin.
        let third = try await store.releaseScheduled(nowMs: 30_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000, queueLimit: 10, batchSize: 2)
        #expect(third.released.isEmpty && third.expired == 0 && !third.more)
        #expect(try await store.nextScheduledRelease() == nil)
    }
}

extension ConversationStoreTests {
    @Test(arguments: StoreKind.allCases) func seenIsNeverReportedForAnEnvelopeThatWasNotSent(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        let hash = RelayStoreTests.bytes(0x77, 32)
        var purged = RelayStoreTests.envelope(1, to: bob)
        purged.unsendTokenHash = hash
        _ = try await store.submit(sender: alice, envelopes: [purged, RelayStoreTests.envelope(2, to: bob)], atMs: 1_000)
        #expect(try await store.unsend(senderHandle: "alice", unsendTokenHash: hash, nowMs: 2_000).map(\.state) == [.purged])
        // A SEEN for the purged one is ignored; for the other one it goes to alice.
        #expect(try await store.reportSeen(device: bob, envelopeIDs: [RelayStoreTests.bytes(1, 16)], atMs: 3_000, receiptExpiresAtMs: 90_000).isEmpty)
        #expect(try await store.reportSeen(device: bob, envelopeIDs: [RelayStoreTests.bytes(2, 16)], atMs: 3_000, receiptExpiresAtMs: 90_000) == [alice])
    }

    @Test(arguments: StoreKind.allCases) func oneUnsendTokenMatchesAtMostAThousandEnvelopes(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        let hash = RelayStoreTests.bytes(0x78, 32)
        let envelopes = (0...ConversationStoreLimits.maxEnvelopesPerUnsendToken).map { index in
            var envelope = RelayStoreTests.envelope(0, to: bob)
            envelope.envelopeID = Data([0xD0, UInt8(index >> 8), UInt8(index & 0xFF)] + [UInt8](repeating: 0, count: 13))
            envelope.unsendTokenHash = hash
            return envelope
        }
        let outcomes = try await store.submit(sender: alice, envelopes: envelopes, atMs: 1_000)
        #expect(outcomes.prefix(1_000).allSatisfy { if case .accepted = $0 { true } else { false } })
        #expect(outcomes.last == .rejected(.unsendTokenFull))
        #expect(try await store.unsend(senderHandle: "alice", unsendTokenHash: hash, nowMs: 2_000).count == 1_000)
    }

    @Test(arguments: StoreKind.allCases) func theReportLimitCountsStoredReportsAndSurvivesARestart(_ kind: StoreKind) async throws {
        let (store, location) = try await StoreScope.make(kind)
        let bob = DeviceAddress(handle: "bob", deviceID: 1)
        func report(_ index: Int, at ms: Int64) -> StoredReport {
            StoredReport(
                reportID: Data([UInt8(index)] + [UInt8](repeating: 0, count: 15)), reporter: bob, receivedAtMs: ms, report: Data([1]),
                signature: Data(repeating: 0, count: 64))
        }
        for index in 0..<10 { #expect(try await store.storeReport(report(index, at: 1_000 + Int64(index)), limit: 10, windowMs: 3_600_000) == nil) }
        #expect(try await store.storeReport(report(10, at: 2_000), limit: 10, windowMs: 3_600_000) == 3_599_000)
        // A new store on the same file (a relay restart) still counts them.
        let reopened = try await StoreScope.open(location)
        #expect(try await reopened.storeReport(report(11, at: 3_000), limit: 10, windowMs: 3_600_000) == 3_598_000)
        #expect(try await reopened.storeReport(report(12, at: 3_601_000), limit: 10, windowMs: 3_600_000) == nil)
        #expect(try await reopened.reports().count == 11)
    }
}
