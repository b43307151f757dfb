import FlitzStore
import FlitzStorePostgres
import FlitzStoreSQLite
import Foundation
import Testing

/// The `RelayStore` conformance suite (`protocol/relay.md`, "Storage and durability"; `protocol/cluster.md`): every
/// case runs on a real temp-file SQLite database and on a real PostgreSQL database of its own (`StoreKind`,
/// `StoreScope`); what only one store has (SQLite's files and group commits) is checked for that store alone.
@Suite(.freshStores) struct RelayStoreTests {
    @Sendable static func randomID() -> Data {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    static func bytes(_ byte: UInt8, _ count: Int) -> Data { Data(repeating: byte, count: count) }

    static func newDevice(_ seed: UInt8, oneTimePreKeys: Int = 3) -> NewDevice {
        NewDevice(
            deviceIdentityKey: bytes(seed, 32), deviceCertificateSignature: bytes(seed, 64),
            signedPreKey: SignedPreKeyRecord(id: 1, publicKey: bytes(seed &+ 1, 32), signature: bytes(seed &+ 2, 64)),
            oneTimePreKeys: (0..<oneTimePreKeys).map { OneTimePreKeyRecord(id: UInt32($0 + 1), publicKey: bytes(UInt8($0), 32)) })
    }

    /// Registers `handle` and returns its first device.
    @discardableResult
    static func register(_ store: any RelayStore, _ handle: String, oneTimePreKeys: Int = 3, atMs: Int64 = 1_000) async throws -> DeviceAddress {
        let id = try await store.register(
            handle: handle, accountIdentityKey: bytes(9, 32), recoveryCodeHash: bytes(7, 32),
            device: newDevice(1, oneTimePreKeys: oneTimePreKeys), atMs: atMs)
        return DeviceAddress(handle: handle, deviceID: id)
    }

    static func envelope(_ id: UInt8, to recipient: DeviceAddress, expiresAtMs: Int64 = 100_000, body: UInt8 = 0xAB) -> EnvelopeSubmission {
        EnvelopeSubmission(
            envelopeID: bytes(id, 16), recipient: recipient, ciphertext: bytes(body, 40), expiresAtMs: expiresAtMs,
            routeExpiresAtMs: 1_000_000)
    }

    static func envelopeIDs(_ items: [QueuedItem]) -> [Data] {
        items.compactMap { if case .envelope(let e) = $0.content { e.envelopeID } else { nil } }
    }

    static func receipts(_ items: [QueuedItem]) -> [StoredReceipt] {
        items.compactMap { if case .receipt(let r) = $0.content { r } else { nil } }
    }

    @Test(arguments: StoreKind.allCases) func registrationStoresAccountAndFirstDevice(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let device = try await Self.register(store, "alice")
        #expect(device.deviceID == 1)
        let account = try #require(try await store.account(handle: "alice"))
        #expect(account.accountIdentityKey == Self.bytes(9, 32))
        #expect(account.recoveryCodeHash == Self.bytes(7, 32))
        #expect(account.nextDeviceID == 2)
        let record = try #require(try await store.device(device))
        #expect(record.deviceIdentityKey == Self.bytes(1, 32))
        #expect(record.signedPreKey.publicKey == Self.bytes(2, 32))
        #expect(try await store.oneTimePreKeyCount(device: device) == 3)
        #expect(try await store.account(handle: "bob") == nil)
    }

    @Test(arguments: StoreKind.allCases) func handlesAreUnique(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        try await Self.register(store, "alice")
        await #expect(throws: StoreError(.handleTaken)) { try await Self.register(store, "alice") }
    }

    @Test(arguments: StoreKind.allCases) func oneTimePreKeyIsHandedOutOnceUnderConcurrentFetches(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        try await Self.register(store, "alice", oneTimePreKeys: 10)
        let handedOut = try await withThrowingTaskGroup(of: UInt32?.self) { group in
            for _ in 0..<20 {
                group.addTask { try await store.takePreKeyBundle(handle: "alice")?.devices.first?.oneTimePreKey?.id }
            }
            var ids: [UInt32] = []
            for try await id in group { if let id { ids.append(id) } }
            return ids
        }
        #expect(handedOut.count == 10)
        #expect(Set(handedOut).count == 10)
        let device = DeviceAddress(handle: "alice", deviceID: 1)
        #expect(try await store.oneTimePreKeyCount(device: device) == 0)
        let bundle = try #require(try await store.takePreKeyBundle(handle: "alice"))
        #expect(bundle.devices.count == 1)
        #expect(bundle.devices[0].oneTimePreKey == nil)
        #expect(try await store.takePreKeyBundle(handle: "nobody") == nil)
    }

    @Test(arguments: StoreKind.allCases) func publishReplacesSignedPreKeyAndAddsOneTimePreKeys(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let device = try await Self.register(store, "alice", oneTimePreKeys: 2)
        let signed = SignedPreKeyRecord(id: 2, publicKey: Self.bytes(0x55, 32), signature: Self.bytes(0x56, 64))
        // Ids are never reused: 2 was registered, so a batch naming it is refused as a whole.
        await #expect { 
            try await store.publishPreKeys(
                device: device, signedPreKey: signed,
                oneTimePreKeys: [OneTimePreKeyRecord(id: 9, publicKey: Self.bytes(0x61, 32)), OneTimePreKeyRecord(id: 2, publicKey: Self.bytes(0x60, 32))])
        } throws: { ($0 as? StoreError)?.code == .preKeyIDReused }
        #expect(try await store.device(device)?.signedPreKey.id == 1)
        let remaining = try await store.publishPreKeys(
            device: device, signedPreKey: signed,
            oneTimePreKeys: [OneTimePreKeyRecord(id: 3, publicKey: Self.bytes(0x60, 32)), OneTimePreKeyRecord(id: 9, publicKey: Self.bytes(0x61, 32))])
        #expect(remaining == 4)
        #expect(try await store.device(device)?.signedPreKey == signed)
        await #expect { 
            try await store.publishPreKeys(device: device, signedPreKey: signed, oneTimePreKeys: [])
        } throws: { ($0 as? StoreError)?.code == .preKeyIDReused }
        await #expect(throws: StoreError(.unknownDevice)) {
            try await store.publishPreKeys(device: DeviceAddress(handle: "alice", deviceID: 7), signedPreKey: nil, oneTimePreKeys: [])
        }
        // Over the stock limit: refused as a whole, nothing stored (not even the ids: 20 is still free).
        let twoMore = [OneTimePreKeyRecord(id: 20, publicKey: Self.bytes(0x70, 32)), OneTimePreKeyRecord(id: 21, publicKey: Self.bytes(0x71, 32))]
        await #expect(throws: StoreError(.preKeyStockFull)) {
            try await store.publishPreKeys(device: device, signedPreKey: nil, oneTimePreKeys: twoMore, stockLimit: 5)
        }
        #expect(try await store.oneTimePreKeyCount(device: device) == 4)
        #expect(try await store.publishPreKeys(device: device, signedPreKey: nil, oneTimePreKeys: [twoMore[0]], stockLimit: 5) == 5)
    }

    @Test(arguments: StoreKind.allCases) func kemPreKeysAreHandedOutOnceThenTheLastResortOneForever(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let device = try await Self.register(store, "alice", oneTimePreKeys: 0)
        let lastResort = KEMPreKeyRecord(id: 1, publicKey: Self.bytes(0x10, 1568), signature: Self.bytes(0x11, 64), lastResort: true)
        let oneTime = (2...3).map { KEMPreKeyRecord(id: UInt32($0), publicKey: Self.bytes(UInt8($0), 1568), signature: Self.bytes(0x12, 64), lastResort: false) }
        let limits = PreKeyStockLimits(oneTime: 10, oneTimeKEM: 2)
        #expect(try await store.publishPreKeys(device: device, PreKeyPublication(lastResortKEMPreKey: lastResort, oneTimeKEMPreKeys: oneTime), limits: limits)
            == PreKeyStock(oneTime: 0, oneTimeKEM: 2))
        await #expect(throws: StoreError(.preKeyStockFull)) {
            try await store.publishPreKeys(
                device: device, PreKeyPublication(oneTimeKEMPreKeys: [KEMPreKeyRecord(id: 9, publicKey: Self.bytes(9, 1568), signature: Self.bytes(9, 64), lastResort: false)]),
                limits: limits)
        }
        // KEM ids share one space: a one-time id at or below the last-resort one is refused.
        await #expect { 
            try await store.publishPreKeys(
                device: device, PreKeyPublication(oneTimeKEMPreKeys: [KEMPreKeyRecord(id: 3, publicKey: Self.bytes(9, 1568), signature: Self.bytes(9, 64), lastResort: false)]),
                limits: .unlimited)
        } throws: { ($0 as? StoreError)?.code == .preKeyIDReused }
        var handedOut: [KEMPreKeyRecord?] = []
        for _ in 0..<4 { handedOut.append(try await store.takePreKeyBundle(handle: "alice")?.devices.first?.kemPreKey) }
        #expect(handedOut == [oneTime[0], oneTime[1], lastResort, lastResort])
        #expect(try await store.preKeyStock(device: device) == PreKeyStock(oneTime: 0, oneTimeKEM: 0))
        // Rotation replaces the last-resort key; the old one is never handed out again.
        let rotated = KEMPreKeyRecord(id: 4, publicKey: Self.bytes(0x40, 1568), signature: Self.bytes(0x41, 64), lastResort: true)
        _ = try await store.publishPreKeys(device: device, PreKeyPublication(lastResortKEMPreKey: rotated), limits: .unlimited)
        #expect(try await store.takePreKeyBundle(handle: "alice")?.devices.first?.kemPreKey == rotated)
    }

    @Test(arguments: StoreKind.allCases) func aFullQueueRefusesMoreUntilDelivered(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        let carol = try await Self.register(store, "carol")
        let batch = try await store.submit(
            sender: alice, envelopes: [Self.envelope(1, to: bob), Self.envelope(2, to: bob), Self.envelope(3, to: bob), Self.envelope(4, to: carol)],
            atMs: 5_000, queueLimit: 2)
        let refusals = batch.map { outcome -> StoreError.Code? in
            if case .rejected(let code) = outcome { return code }
            return nil
        }
        #expect(refusals == [nil, nil, .queueFull, nil])
        // A resubmission of a queued envelope is still idempotent, not refused.
        let again = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 6_000, queueLimit: 2)
        #expect(again == [.accepted(acceptedAtMs: 5_000, expiresAtMs: 100_000, newlyQueued: false)])
        _ = try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 7_000, receiptExpiresAtMs: 90_000)
        let after = try await store.submit(sender: alice, envelopes: [Self.envelope(3, to: bob)], atMs: 8_000, queueLimit: 2)
        #expect(after == [.accepted(acceptedAtMs: 8_000, expiresAtMs: 100_000, newlyQueued: true)])
    }

    @Test(arguments: StoreKind.allCases) func queueDepthCounterFollowsEveryWayEnvelopesLeave(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        func accepted(_ outcomes: [SubmissionOutcome]) -> Int {
            outcomes.filter { if case .accepted = $0 { true } else { false } }.count
        }
        // Full at 2; a sweep of the expired ones frees the queue again.
        let first = try await store.submit(
            sender: alice, envelopes: [Self.envelope(1, to: bob, expiresAtMs: 2_000), Self.envelope(2, to: bob, expiresAtMs: 2_000),
                                       Self.envelope(3, to: bob)], atMs: 1_000, queueLimit: 2)
        #expect(accepted(first) == 2)
        _ = try await store.sweep(nowMs: 2_000, receiptExpiresAtMs: 90_000)
        #expect(accepted(try await store.submit(sender: alice, envelopes: [Self.envelope(3, to: bob), Self.envelope(4, to: bob)], atMs: 3_000, queueLimit: 2)) == 2)
        #expect(accepted(try await store.submit(sender: alice, envelopes: [Self.envelope(5, to: bob)], atMs: 3_000, queueLimit: 2)) == 0)
        // A recovery empties bob's queue; his new device starts at 0.
        let recovered = try await store.recover(
            handle: "bob", expectedRecoveryCodeHash: Self.bytes(7, 32), accountIdentityKey: Self.bytes(3, 32),
            newRecoveryCodeHash: Self.bytes(4, 32), device: Self.newDevice(5), atMs: 4_000, receiptExpiresAtMs: 90_000)
        let newBob = DeviceAddress(handle: "bob", deviceID: recovered.deviceID)
        #expect(accepted(try await store.submit(
            sender: alice, envelopes: [Self.envelope(6, to: newBob), Self.envelope(7, to: newBob), Self.envelope(8, to: newBob)], atMs: 5_000,
            queueLimit: 2)) == 2)
    }

    @Test(arguments: StoreKind.allCases) func submissionIsIdempotentAndConflictsAreRefused(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        let carol = try await Self.register(store, "carol")
        let first = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 5_000)
        #expect(first == [.accepted(acceptedAtMs: 5_000, expiresAtMs: 100_000, newlyQueued: true)])
        let again = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 6_000)
        #expect(again == [.accepted(acceptedAtMs: 5_000, expiresAtMs: 100_000, newlyQueued: false)])
        let items = try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 6_000, limit: 100)
        #expect(Self.envelopeIDs(items) == [Self.bytes(1, 16)])
        // Same id from someone else, or to someone else.
        let fromCarol = try await store.submit(sender: carol, envelopes: [Self.envelope(1, to: bob)], atMs: 6_000)
        let toCarol = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: carol)], atMs: 6_000)
        #expect(fromCarol == [.rejected(.envelopeIDConflict)])
        #expect(toCarol == [.rejected(.envelopeIDConflict)])
        let refused = try await store.submit(
            sender: alice,
            envelopes: [Self.envelope(2, to: DeviceAddress(handle: "nobody", deviceID: 1)), Self.envelope(3, to: DeviceAddress(handle: "bob", deviceID: 2))],
            atMs: 6_000)
        #expect(refused == [.rejected(.unknownRecipient), .rejected(.staleDevice)])
    }

    @Test(arguments: StoreKind.allCases) func queueKeepsSubmissionOrderAndPages(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        _ = try await store.submit(sender: alice, envelopes: (1...5).map { Self.envelope($0, to: bob) }, atMs: 1_000)
        _ = try await store.submit(sender: alice, envelopes: [Self.envelope(6, to: bob)], atMs: 1_001)
        let page1 = try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 4)
        #expect(Self.envelopeIDs(page1) == (1...4).map { Self.bytes($0, 16) })
        let page2 = try await store.pendingItems(for: bob, afterSequence: page1.last!.sequence, nowMs: 2_000, limit: 4)
        #expect(Self.envelopeIDs(page2) == [Self.bytes(5, 16), Self.bytes(6, 16)])
        #expect(zip(page1 + page2, (page1 + page2).dropFirst()).allSatisfy { $0.sequence < $1.sequence })
        guard case .envelope(let envelope) = page1[0].content else { Issue.record("not an envelope"); return }
        #expect(envelope.sender == alice)
        #expect(envelope.ciphertext == Self.bytes(0xAB, 40))
        #expect(envelope.acceptedAtMs == 1_000)
    }

    @Test(arguments: StoreKind.allCases) func acknowledgeDeletesCiphertextAndQueuesDeliveredReceipt(_ kind: StoreKind) async throws {
        let (store, location) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        let marker = Data("CIPHERTEXT-MARKER-7f3a9c".utf8)
        var submission = Self.envelope(1, to: bob)
        submission.ciphertext = marker
        _ = try await store.submit(sender: alice, envelopes: [submission], atMs: 1_000)
        // Only the recipient device can acknowledge: another device's id is refused and nothing changes.
        await #expect {
            try await store.acknowledge(device: alice, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 1_500, receiptExpiresAtMs: 90_000)
        } throws: { error in
            (error as? StoreError)?.code == .unknownEnvelope && (error as? StoreError)?.envelopeID == Self.bytes(1, 16)
        }
        #expect(Self.envelopeIDs(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 1_500, limit: 100)) == [Self.bytes(1, 16)])
        let notified = try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 2_000, receiptExpiresAtMs: 90_000)
        #expect(notified == [alice])
        #expect(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 100).isEmpty)
        let receipts = Self.receipts(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 2_000, limit: 100))
        #expect(receipts.map(\.kind) == [.delivered])
        #expect(receipts.first?.recipient == bob)
        #expect(receipts.first?.atMs == 2_000)
        // A second acknowledgement does nothing.
        #expect(try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 2_100, receiptExpiresAtMs: 90_000).isEmpty)
        // Acknowledging the receipt removes it.
        _ = try await store.acknowledge(device: alice, envelopeIDs: [], receiptIDs: receipts.map(\.receiptID), atMs: 2_200, receiptExpiresAtMs: 90_000)
        #expect(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 2_200, limit: 100).isEmpty)
        switch location {
        case .sqlite(let path):
            // The ciphertext is gone from the files.
            try await #require(store as? SQLiteRelayStore).checkpoint()
            for file in [path, path + "-wal"] {
                if let contents = FileManager.default.contents(atPath: file) {
                    #expect(contents.range(of: marker) == nil, "ciphertext found in \(file)")
                }
            }
        case .postgres:
            // No queued row holds it any more (cluster.md 5: queue_items).
            let postgres = try #require(store as? PostgresRelayStore)
            let rows = try await postgres.client.query(
                "SELECT count(*) FROM queue_items WHERE position(\(marker) in ciphertext) > 0", logger: StoreScope.logger
            ).collect()
            #expect(try rows.first?.decode(Int64.self) == 0)
        }
    }

    @Test(arguments: StoreKind.allCases) func seenReceiptIsQueuedOncePerEnvelope(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        _ = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 1_000)
        #expect(try await store.reportSeen(device: alice, envelopeIDs: [Self.bytes(1, 16)], atMs: 1_500, receiptExpiresAtMs: 90_000).isEmpty)
        #expect(try await store.reportSeen(device: bob, envelopeIDs: [Self.bytes(1, 16)], atMs: 2_000, receiptExpiresAtMs: 90_000) == [alice])
        #expect(try await store.reportSeen(device: bob, envelopeIDs: [Self.bytes(1, 16)], atMs: 2_100, receiptExpiresAtMs: 90_000).isEmpty)
        let receipts = Self.receipts(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 2_200, limit: 100))
        #expect(receipts.map(\.kind) == [.seen])
    }

    @Test(arguments: StoreKind.allCases) func expiredRowsAreNeverReturnedAndSweepReportsUndelivered(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        _ = try await store.submit(
            sender: alice, envelopes: [Self.envelope(1, to: bob, expiresAtMs: 10_000), Self.envelope(2, to: bob, expiresAtMs: 50_000)], atMs: 1_000)
        // Not swept yet, but past expiry: never returned.
        #expect(Self.envelopeIDs(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 10_000, limit: 100)) == [Self.bytes(2, 16)])
        let result = try await store.sweep(nowMs: 10_000, receiptExpiresAtMs: 90_000)
        #expect(result.expiredEnvelopes == 1)
        #expect(result.notifiedSenders == [alice])
        let receipts = Self.receipts(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 10_000, limit: 100))
        #expect(receipts.map(\.kind) == [.expired])
        #expect(receipts.map(\.envelopeID) == [Self.bytes(1, 16)])
        // A delivered envelope expires without an EXPIRED receipt.
        _ = try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(2, 16)], receiptIDs: [], atMs: 20_000, receiptExpiresAtMs: 90_000)
        let later = try await store.sweep(nowMs: 60_000, receiptExpiresAtMs: 150_000)
        #expect(later.expiredEnvelopes == 0)
        // Receipts expire too; routes are purged after retention.
        let final = try await store.sweep(nowMs: 1_000_000, receiptExpiresAtMs: 2_000_000)
        #expect(final.purgedReceipts == 2)
        #expect(final.purgedRoutes == 2)
        #expect(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 0, limit: 100).isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func recoveryReplacesIdentityAndRemovesOldDevices(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        _ = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 1_000)
        await #expect(throws: StoreError(.recoveryFailed)) {
            try await store.recover(
                handle: "bob", expectedRecoveryCodeHash: Self.bytes(0, 32), accountIdentityKey: Self.bytes(3, 32),
                newRecoveryCodeHash: Self.bytes(4, 32), device: Self.newDevice(5), atMs: 2_000, receiptExpiresAtMs: 90_000)
        }
        await #expect(throws: StoreError(.recoveryFailed)) {
            try await store.recover(
                handle: "nobody", expectedRecoveryCodeHash: Self.bytes(7, 32), accountIdentityKey: Self.bytes(3, 32),
                newRecoveryCodeHash: Self.bytes(4, 32), device: Self.newDevice(5), atMs: 2_000, receiptExpiresAtMs: 90_000)
        }
        let result = try await store.recover(
            handle: "bob", expectedRecoveryCodeHash: Self.bytes(7, 32), accountIdentityKey: Self.bytes(3, 32),
            newRecoveryCodeHash: Self.bytes(4, 32), device: Self.newDevice(5), atMs: 2_000, receiptExpiresAtMs: 90_000)
        #expect(result.deviceID == 2)
        #expect(result.removedDeviceIDs == [1])
        #expect(result.notifiedSenders == [alice])
        #expect(try await store.device(bob) == nil)
        let account = try #require(try await store.account(handle: "bob"))
        #expect(account.accountIdentityKey == Self.bytes(3, 32))
        #expect(account.recoveryCodeHash == Self.bytes(4, 32))
        #expect(account.nextDeviceID == 3)
        let receipts = Self.receipts(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 2_000, limit: 100))
        #expect(receipts.map(\.kind) == [.expired])
        #expect(try await store.pendingItems(for: DeviceAddress(handle: "bob", deviceID: 2), afterSequence: 0, nowMs: 2_000, limit: 100).isEmpty)
        // Old device ids are never reused.
        let again = try await store.recover(
            handle: "bob", expectedRecoveryCodeHash: Self.bytes(4, 32), accountIdentityKey: Self.bytes(3, 32),
            newRecoveryCodeHash: Self.bytes(6, 32), device: Self.newDevice(5), atMs: 3_000, receiptExpiresAtMs: 90_000)
        #expect(again.deviceID == 3)
    }

    @Test(arguments: StoreKind.allCases) func reopeningMigratesAndKeepsData(_ kind: StoreKind) async throws {
        let (store, location) = try await StoreScope.make(kind)
        try await Self.register(store, "alice")
        let reopened = try await StoreScope.open(location)
        switch kind {
        case .sqlite:
            let names = ["v1", "v2-pqxdh", "v3-devices", "v4-origin-device", "v5-push", "v6-conversations", "v7-blobs"]
            #expect(try await #require(store as? SQLiteRelayStore).appliedMigrations() == names)
            #expect(try await #require(reopened as? SQLiteRelayStore).appliedMigrations() == names)
        case .postgres:
            let first = try #require(store as? PostgresRelayStore), second = try #require(reopened as? PostgresRelayStore)
            let names = try await first.appliedMigrations()
            #expect(!names.isEmpty)
            #expect(try await second.appliedMigrations() == names)
            #expect(try await second.migrate().isEmpty)
        }
        #expect(try await reopened.account(handle: "alice") != nil)
    }

    @Test func sqliteWriterUsesSynchronousFull() async throws {
        let (store, _) = try await StoreScope.makeSQLite()
        #expect(try await store.synchronousMode() == 2)
    }

    // MARK: Multi-device accounts and group commit

    @Test(arguments: StoreKind.allCases) func concurrentSubmitsShareCommitsAndOneFailureSparesTheOthers(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        let ghost = DeviceAddress(handle: "ghost", deviceID: 1)
        let results = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
            for index in 0..<64 {
                group.addTask {
                    // Every eighth caller is a sender that does not exist: its batch fails alone.
                    let sender = index % 8 == 7 ? ghost : alice
                    do {
                        let outcomes = try await store.submit(
                            sender: sender, envelopes: [Self.envelope(UInt8(index), to: bob)], atMs: 1_000, queueLimit: .max)
                        return (index, outcomes == [.accepted(acceptedAtMs: 1_000, expiresAtMs: 100_000, newlyQueued: true)])
                    } catch let error as StoreError where error.code == .unknownDevice {
                        return (index, false)
                    }
                }
            }
            var results: [Int: Bool] = [:]
            for try await (index, accepted) in group { results[index] = accepted }
            return results
        }
        #expect(results.filter(\.value).keys.sorted() == (0..<64).filter { $0 % 8 != 7 })
        // Queue sequences follow commit order: strictly increasing, one per accepted envelope.
        let items = try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 0, limit: 100)
        #expect(items.count == 56)
        #expect(zip(items, items.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
        if let sqlite = store as? SQLiteRelayStore {
            #expect(try await sqlite.synchronousMode() == 2)
            let statistics = sqlite.groupCommitStatistics()
            #expect(statistics.callers == 64)
            #expect(statistics.transactions >= 1 && statistics.transactions <= 64)
            print("group commit: \(statistics.callers) submit calls in \(statistics.transactions) transactions")
        }
    }

    @Test(arguments: StoreKind.allCases) func registerDeviceCountsDevicesAndAnswersRetries(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        try await Self.register(store, "alice")
        let key = Self.bytes(9, 32)
        #expect(try await store.registerDevice(handle: "alice", accountIdentityKey: key, device: Self.newDevice(2), atMs: 2_000, maxDevices: 3) == 2)
        #expect(try await store.registerDevice(handle: "alice", accountIdentityKey: key, device: Self.newDevice(2), atMs: 2_000, maxDevices: 3) == 2)
        #expect(try await store.registerDevice(handle: "alice", accountIdentityKey: key, device: Self.newDevice(3), atMs: 2_000, maxDevices: 3) == 3)
        await #expect(throws: StoreError(.tooManyDevices)) {
            try await store.registerDevice(handle: "alice", accountIdentityKey: key, device: Self.newDevice(4), atMs: 2_000, maxDevices: 3)
        }
        await #expect(throws: StoreError(.accountKeyChanged)) {
            try await store.registerDevice(handle: "alice", accountIdentityKey: Self.bytes(8, 32), device: Self.newDevice(4), atMs: 2_000, maxDevices: 9)
        }
        await #expect(throws: StoreError(.unknownRecipient)) {
            try await store.registerDevice(handle: "bob", accountIdentityKey: key, device: Self.newDevice(4), atMs: 2_000, maxDevices: 9)
        }
        #expect(try await store.devices(handle: "alice").map(\.address.deviceID) == [1, 2, 3])
        #expect(try await store.devices(handle: "alice").map(\.createdAtMs) == [1_000, 2_000, 2_000])
    }

    @Test(arguments: StoreKind.allCases) func deviceListRemovalAndCoverageInOneStore(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        let key = Self.bytes(9, 32)
        let bob2 = DeviceAddress(
            handle: "bob",
            deviceID: try await store.registerDevice(handle: "bob", accountIdentityKey: key, device: Self.newDevice(2), atMs: 2_000, maxDevices: 16))
        let entries = [DeviceListEntry(deviceID: 1, deviceIdentityKey: Self.bytes(1, 32)), DeviceListEntry(deviceID: 2, deviceIdentityKey: Self.bytes(2, 32))]
        let list = StoredDeviceList(payload: Self.bytes(0xD1, 105), signature: Self.bytes(0x51, 64), version: 3)
        // A wrong key for a listed device, an unlisted publisher, an old key: refused, nothing stored.
        for (badEntries, publisher, accountKey) in [
            ([DeviceListEntry(deviceID: 2, deviceIdentityKey: Self.bytes(7, 32))], bob2, key), ([entries[1]], bob, key), (entries, bob, Self.bytes(8, 32)),
        ] {
            await #expect {
                try await store.publishDeviceList(
                    handle: "bob", accountIdentityKey: accountKey, list: list, entries: badEntries, publisher: publisher, removeDeviceIDs: [], atMs: 3_000,
                    receiptExpiresAtMs: 90_000)
            } throws: { ($0 as? StoreError)?.code == .deviceListRejected }
        }
        #expect(try await store.deviceList(handle: "bob") == nil)
        _ = try await store.publishDeviceList(
            handle: "bob", accountIdentityKey: key, list: list, entries: entries, publisher: bob, removeDeviceIDs: [], atMs: 3_000, receiptExpiresAtMs: 90_000)
        #expect(try await store.deviceList(handle: "bob") == list)
        // Coverage: bob/1 alone misses bob/2; nothing is stored.
        let partial = try await store.submit(sender: alice, envelopes: [Self.envelope(1, to: bob)], atMs: 4_000, queueLimit: .max, checkCoverage: true)
        #expect(partial == .mismatched([DeviceMismatchRecord(handle: "bob", missingDeviceIDs: [2], staleDeviceIDs: [])]))
        var first = Self.envelope(1, to: bob), second = Self.envelope(2, to: bob2)
        first.group = 5
        second.group = 5
        guard case .stored(let outcomes) = try await store.submit(
            sender: alice, envelopes: [first, second], atMs: 4_000, queueLimit: .max, checkCoverage: true)
        else { throw StoreError(.corrupt, "refused") }
        #expect(outcomes.count == 2)
        // Bob removes device 2: its envelope expires and alice is told; bob/1's DELIVERED comes once per handle.
        let removal = try await store.publishDeviceList(
            handle: "bob", accountIdentityKey: key, list: StoredDeviceList(payload: Self.bytes(0xD2, 69 + 36), signature: Self.bytes(0x52, 64), version: 4),
            entries: [entries[0]], publisher: bob, removeDeviceIDs: [2], atMs: 5_000, receiptExpiresAtMs: 90_000)
        #expect(removal == DeviceRemovalResult(removedDeviceIDs: [2], notifiedSenders: [alice]))
        #expect(try await store.device(bob2) == nil)
        _ = try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 6_000, receiptExpiresAtMs: 90_000)
        let receipts = Self.receipts(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 0, limit: 10))
        #expect(receipts.map(\.kind) == [.expired, .delivered])
        #expect(receipts.map(\.envelopeID) == [Self.bytes(2, 16), Self.bytes(1, 16)])
    }

    @Test(arguments: StoreKind.allCases) func deletedAccountLeavesATombstoneUntilSwept(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await Self.register(store, "alice")
        let bob = try await Self.register(store, "bob")
        _ = try await store.submit(sender: bob, envelopes: [Self.envelope(1, to: alice)], atMs: 1_000)
        await #expect(throws: StoreError(.accountKeyChanged)) {
            try await store.deleteAccount(handle: "alice", accountIdentityKey: Self.bytes(8, 32), atMs: 2_000, tombstoneUntilMs: 50_000, receiptExpiresAtMs: 90_000)
        }
        let result = try await store.deleteAccount(
            handle: "alice", accountIdentityKey: Self.bytes(9, 32), atMs: 2_000, tombstoneUntilMs: 50_000, receiptExpiresAtMs: 90_000)
        #expect(result == DeviceRemovalResult(removedDeviceIDs: [1], notifiedSenders: [bob]))
        #expect(try await store.account(handle: "alice") == nil)
        #expect(try await store.takePreKeyBundle(handle: "alice", deviceIDs: nil) == nil)
        #expect(try await store.submit(sender: bob, envelopes: [Self.envelope(2, to: alice)], atMs: 3_000) == [.rejected(.unknownRecipient)])
        await #expect(throws: StoreError(.handleTaken, "deleted account")) { try await Self.register(store, "alice") }
        #expect(try await store.sweep(nowMs: 50_000, receiptExpiresAtMs: 90_000).purgedTombstones == 1)
        try await Self.register(store, "alice")
    }

    @Test(arguments: StoreKind.allCases) func pairingSlotsAreWrittenOnceAndReadOnce(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let id = Self.bytes(3, 16)
        try await store.putLinkMessage(rendezvousID: id, slot: 1, message: Self.bytes(1, 10), nowMs: 1_000, expiresAtMs: 2_000)
        await #expect(throws: StoreError(.linkSlotUsed)) {
            try await store.putLinkMessage(rendezvousID: id, slot: 1, message: Self.bytes(2, 10), nowMs: 1_000, expiresAtMs: 2_000)
        }
        #expect(try await store.takeLinkMessage(rendezvousID: id, slot: 1, nowMs: 1_500) == Self.bytes(1, 10))
        #expect(try await store.takeLinkMessage(rendezvousID: id, slot: 1, nowMs: 1_500) == nil)
        await #expect(throws: StoreError(.linkSlotUsed)) {
            try await store.putLinkMessage(rendezvousID: id, slot: 1, message: Self.bytes(2, 10), nowMs: 1_600, expiresAtMs: 2_000)
        }
        try await store.putLinkMessage(rendezvousID: id, slot: 2, message: Self.bytes(4, 10), nowMs: 1_000, expiresAtMs: 2_000)
        #expect(try await store.takeLinkMessage(rendezvousID: id, slot: 2, nowMs: 2_000) == nil)
        #expect(try await store.sweep(nowMs: 2_000, receiptExpiresAtMs: 90_000).purgedLinkMessages == 2)
    }
}
