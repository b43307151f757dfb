import FlitzStore
import FlitzStorePostgres
import FlitzTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// A fresh PostgreSQL database per test, made from the maintenance URL in `FLITZ_TEST_POSTGRES_URL` (the Makefile's
/// `test` target and `scripts/postgres.sh url` provide one) and dropped afterwards, with `count` migrated
/// `PostgresRelayStore`s on it ("nodes": each has its own connection pool).
enum PostgresTestDatabase {
    struct Missing: Error, CustomStringConvertible {
        var description: String { "FLITZ_TEST_POSTGRES_URL is not set: start a server with scripts/postgres.sh start and export its URL" }
    }

    static let logger = Logger(label: "flitz.test.postgres")

    /// `FLITZ_TEST_POSTGRES_URL`, or a server started through scripts/postgres.sh (`TestPostgres`).
    static func maintenanceURL() async throws -> String {
        try await TestPostgres.maintenanceURL()
    }

    /// `url` with its database replaced by `name`.
    static func url(_ url: String, database name: String) throws -> String {
        guard var components = URLComponents(string: url) else { throw Missing() }
        components.path = "/" + name
        return try #require(components.string)
    }

    @Sendable static func randomID() -> Data {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    /// Runs `body` with `count` stores on a new database; the stores' clients run for the duration of `body`.
    static func withStores(count: Int = 1, _ body: @Sendable ([PostgresRelayStore]) async throws -> Void) async throws {
        let maintenance = try await maintenanceURL()
        // Hex only: the name is safe to put into the SQL text (CREATE DATABASE takes no bind parameters).
        let name = "flitz_core_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await withAdmin(maintenance) { admin in
            _ = try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        }
        do {
            let configuration = try PostgresRelayStore.configuration(url: url(maintenance, database: name))
            let stores = (0..<count).map { _ in PostgresRelayStore(configuration: configuration, makeID: randomID, logger: logger) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in stores { group.addTask { await store.client.run() } }
                defer { group.cancelAll() }
                for store in stores { try await store.migrate() }
                try await body(stores)
            }
        } catch {
            try? await withAdmin(maintenance) { admin in
                _ = try await admin.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger)
            }
            throw error
        }
        try await withAdmin(maintenance) { admin in
            _ = try await admin.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \(name) WITH (FORCE)"), logger: logger)
        }
    }

    private static func withAdmin(_ url: String, _ body: @Sendable (PostgresClient) async throws -> Void) async throws {
        let client = PostgresClient(configuration: try PostgresRelayStore.configuration(url: url), backgroundLogger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            try await body(client)
        }
    }
}

/// The core `RelayStore` methods of `PostgresRelayStore` on a real PostgreSQL server: the schema, queue sequences and
/// the concurrency cases of issue 9 with two stores ("nodes") on one database. The conformance suite (pg-test) runs
/// every SQLite case on PostgreSQL too.
@Suite struct PostgresCoreTests {
    static func bytes(_ byte: UInt8, _ count: Int) -> Data { Data(repeating: byte, count: count) }

    static func newDevice(_ seed: UInt8, oneTimePreKeys: Int = 3) -> NewDevice {
        NewDevice(
            deviceIdentityKey: bytes(seed, 32), deviceCertificateSignature: bytes(seed, 64),
            signedPreKey: SignedPreKeyRecord(id: 1, publicKey: bytes(seed &+ 1, 32), signature: bytes(seed &+ 2, 64)),
            oneTimePreKeys: (0..<oneTimePreKeys).map { OneTimePreKeyRecord(id: UInt32($0 + 1), publicKey: bytes(UInt8($0), 32)) })
    }

    static func register(_ store: PostgresRelayStore, _ handle: String, oneTimePreKeys: Int = 3) async throws -> DeviceAddress {
        let id = try await store.register(
            handle: handle, accountIdentityKey: bytes(9, 32), recoveryCodeHash: bytes(7, 32), device: newDevice(1, oneTimePreKeys: oneTimePreKeys),
            atMs: 1_000)
        return DeviceAddress(handle: handle, deviceID: id)
    }

    static func envelope(_ id: Data, to recipient: DeviceAddress) -> EnvelopeSubmission {
        EnvelopeSubmission(envelopeID: id, recipient: recipient, ciphertext: bytes(0xAB, 40), expiresAtMs: 100_000, routeExpiresAtMs: 1_000_000)
    }

    @Test func migrationsCreateTheQueuePartitionsAndAreIdempotent() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            #expect(try await stores[1].migrate().isEmpty)
            #expect(try await stores[0].appliedMigrations().starts(with: ["core-v1"]))
            let partitions = try await stores[0].client.query(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'queue_items'::regclass", logger: PostgresTestDatabase.logger
            ).collect().first?.decode(Int64.self)
            #expect(partitions == 16)
            // core-v3: every queue partition and envelope_routes are vacuumed after a bounded number of dead rows.
            #expect(try await stores[0].appliedMigrations().contains("core-v3"))
            let tuned = try await stores[0].client.query(
                """
                SELECT count(*) FROM pg_class WHERE (relname = 'envelope_routes' OR relname IN (
                    SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'queue_items'::regclass))
                AND reloptions @> ARRAY['autovacuum_vacuum_scale_factor=0', 'autovacuum_vacuum_threshold=500']
                """, logger: PostgresTestDatabase.logger
            ).collect().first?.decode(Int64.self)
            #expect(tuned == 17)
        }
    }

    @Test func queueRoundTripWithReceiptsAndSweep() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            let alice = try await Self.register(store, "alice")
            let bob = try await Self.register(store, "bob")
            let outcomes = try await store.submit(
                sender: alice, envelopes: [Self.envelope(Self.bytes(1, 16), to: bob), Self.envelope(Self.bytes(2, 16), to: bob)], atMs: 2_000, queueLimit: .max)
            #expect(outcomes == [
                .accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true),
                .accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true),
            ])
            let items = try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10)
            #expect(items.map(\.sequence) == [1, 2])
            guard case .envelope(let first)? = items.first?.content else { throw PostgresTestDatabase.Missing() }
            #expect(first.sender == alice && first.ciphertext == Self.bytes(0xAB, 40) && first.acceptedAtMs == 2_000)
            // The queue limit counts undelivered envelopes.
            #expect(try await store.submit(sender: alice, envelopes: [Self.envelope(Self.bytes(3, 16), to: bob)], atMs: 2_000, queueLimit: 2)
                == [.rejected(.queueFull)])
            #expect(try await store.acknowledge(device: bob, envelopeIDs: [Self.bytes(1, 16)], receiptIDs: [], atMs: 3_000, receiptExpiresAtMs: 50_000)
                == [alice])
            #expect(try await store.submit(sender: alice, envelopes: [Self.envelope(Self.bytes(3, 16), to: bob)], atMs: 3_000, queueLimit: 2)
                == [.accepted(acceptedAtMs: 3_000, expiresAtMs: 100_000, newlyQueued: true)])
            let receipts = try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 3_000, limit: 10)
            guard case .receipt(let receipt)? = receipts.first?.content else { throw PostgresTestDatabase.Missing() }
            #expect(receipt.kind == .delivered && receipt.envelopeID == Self.bytes(1, 16) && receipt.recipient == bob)
            // Expiry: the two undelivered envelopes expire with a receipt each; the sequence keeps counting.
            let sweep = try await store.sweep(nowMs: 100_000, receiptExpiresAtMs: 200_000)
            #expect(sweep.expiredEnvelopes == 2 && sweep.notifiedSenders == [alice])
            #expect(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 100_000, limit: 10).isEmpty)
            let after = try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 100_000, limit: 10)
            #expect(after.map(\.sequence) == [2, 3])
        }
    }

    @Test func oneTimePreKeysAreHandedOutOnceAcrossNodes() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            _ = try await Self.register(stores[0], "bob", oneTimePreKeys: 20)
            let taken = try await withThrowingTaskGroup(of: UInt32?.self) { group in
                for index in 0..<30 {
                    group.addTask { try await stores[index % 2].takePreKeyBundle(handle: "bob")?.devices.first?.oneTimePreKey?.id }
                }
                var ids: [UInt32] = []
                for try await id in group { if let id { ids.append(id) } }
                return ids
            }
            #expect(taken.count == 20)
            #expect(Set(taken).count == 20)
            #expect(try await stores[1].preKeyStock(device: DeviceAddress(handle: "bob", deviceID: 1)).oneTime == 0)
        }
    }

    @Test func concurrentIdenticalSubmissionsStoreOneEnvelope() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let alice = try await Self.register(stores[0], "alice")
            let bob = try await Self.register(stores[0], "bob")
            let submission = Self.envelope(Self.bytes(5, 16), to: bob)
            let outcomes = try await withThrowingTaskGroup(of: [SubmissionOutcome].self) { group in
                for index in 0..<8 {
                    group.addTask { try await stores[index % 2].submit(sender: alice, envelopes: [submission], atMs: 2_000, queueLimit: .max) }
                }
                var all: [SubmissionOutcome] = []
                for try await outcome in group { all += outcome }
                return all
            }
            #expect(outcomes.filter { $0 == .accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true) }.count == 1)
            #expect(outcomes.filter { $0 == .accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: false) }.count == 7)
            #expect(try await stores[1].pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10).count == 1)
        }
    }

    @Test func concurrentWritersGetDistinctIncreasingSequences() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let bob = try await Self.register(stores[0], "bob")
            var senders: [DeviceAddress] = []
            for index in 0..<6 { senders.append(try await Self.register(stores[0], "s\(index)")) }
            let all = senders
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, sender) in all.enumerated() {
                    group.addTask {
                        for message in 0..<5 {
                            var id = Self.bytes(UInt8(index), 16)
                            id[15] = UInt8(message)
                            _ = try await stores[index % 2].submit(sender: sender, envelopes: [Self.envelope(id, to: bob)], atMs: 2_000, queueLimit: .max)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let items = try await stores[1].pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 100)
            #expect(items.map(\.sequence) == Array(1...30))
        }
    }

    @Test func sweepsOnTwoNodesExpireEachEnvelopeOnce() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let alice = try await Self.register(stores[0], "alice")
            let bob = try await Self.register(stores[0], "bob")
            let envelopes = (0..<40).map { Self.envelope(Self.bytes(UInt8($0), 16), to: bob) }
            _ = try await stores[0].submit(sender: alice, envelopes: envelopes, atMs: 2_000, queueLimit: .max)
            let expired = try await withThrowingTaskGroup(of: Int.self) { group in
                for store in stores { group.addTask { try await store.sweep(nowMs: 100_000, receiptExpiresAtMs: 200_000).expiredEnvelopes } }
                var total = 0
                for try await count in group { total += count }
                return total
            }
            #expect(expired == 40)
            let receipts = try await stores[0].pendingItems(for: alice, afterSequence: 0, nowMs: 100_000, limit: 100)
            #expect(receipts.count == 40)
            #expect(Set(receipts.map(\.sequence)).count == 40)
        }
    }

    @Test func scheduledReleasesOnTwoNodesReleaseEachEnvelopeOnce() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let alice = try await Self.register(stores[0], "alice")
            let bob = try await Self.register(stores[0], "bob")
            let envelopes = (0..<20).map { index in
                EnvelopeSubmission(
                    envelopeID: Self.bytes(UInt8(index), 16), recipient: bob, ciphertext: Self.bytes(0xAB, 40), expiresAtMs: 110_000,
                    routeExpiresAtMs: 1_050_000, notBeforeMs: 50_000, cancelTokenHash: Self.bytes(0xCC, 32), ttlMs: 60_000, urgency: 1)
            }
            _ = try await stores[0].submit(sender: alice, envelopes: envelopes, atMs: 2_000, queueLimit: .max)
            let released = try await withThrowingTaskGroup(of: [Data].self) { group in
                for store in stores {
                    group.addTask {
                        var ids: [Data] = []
                        while true {
                            let release = try await store.releaseScheduled(
                                nowMs: 60_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000, queueLimit: .max, batchSize: 3)
                            ids += release.released.map(\.envelopeID)
                            if !release.more { return ids }
                        }
                    }
                }
                var all: [Data] = []
                for try await ids in group { all += ids }
                return all
            }
            #expect(released.count == 20 && Set(released).count == 20)
            let items = try await stores[1].pendingItems(for: bob, afterSequence: 0, nowMs: 60_000, limit: 100)
            #expect(items.map(\.sequence) == Array(1...20))
            #expect(try await stores[1].nextScheduledRelease() == nil)
        }
    }

    @Test func aWriterHeldOpenMakesTheNextWriterWaitSoSequencesFollowCommitOrder() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let logger = PostgresTestDatabase.logger
            let alice = try await Self.register(stores[0], "alice")
            let bob = try await Self.register(stores[0], "bob")
            let (queued, queuedSignal) = AsyncStream<Int64>.makeStream()
            let (commit, commitSignal) = AsyncStream<Void>.makeStream()
            // Writer 1 (node 0): queues a receipt for bob as the store does (counter row first) and stays open.
            let first = Task {
                try await stores[0].client.withTransaction(logger: logger) { connection in
                    let sequence = try #require(
                        try await connection.query(
                            """
                            INSERT INTO queue_counters (handle, device_id, next_sequence) VALUES ('bob', 1, 2)
                            ON CONFLICT (handle, device_id) DO UPDATE SET next_sequence = queue_counters.next_sequence + 1
                            RETURNING next_sequence - 1
                            """, logger: logger
                        ).collect().first?.decode(Int64.self))
                    try await connection.query(
                        """
                        INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, receipt_id, receipt_kind, receipt_at,
                            receipt_recipient_handle, receipt_recipient_device_id, expires_at_ms)
                        VALUES ('bob', 1, \(sequence), 2, \(Self.bytes(7, 16)), \(Self.bytes(8, 16)), 1, 1500, 'alice', 1, 100000)
                        """, logger: logger)
                    queuedSignal.yield(sequence)
                    for await _ in commit { break }
                }
            }
            var iterator = queued.makeAsyncIterator()
            let firstSequence = try #require(await iterator.next())
            // Writer 2 (node 1) starts later and would commit first; it has to wait for writer 1's counter row.
            let second = Task {
                try await stores[1].submit(sender: alice, envelopes: [Self.envelope(Self.bytes(1, 16), to: bob)], atMs: 2_000, queueLimit: .max)
            }
            let blocked = try await Self.waitUntilSomeoneWaitsForALock(stores[1])
            #expect(blocked)
            // Neither is committed: a reader sees nothing, so it cannot remember a sequence past writer 1's.
            #expect(try await stores[1].pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10).isEmpty)
            commitSignal.yield()
            try await first.value
            #expect(try await second.value == [.accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true)])
            let items = try await stores[0].pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10)
            #expect(items.map(\.sequence) == [firstSequence, firstSequence + 1])
            guard case .receipt? = items.first?.content, case .envelope? = items.last?.content else {
                throw PostgresTestDatabase.Missing()
            }
        }
    }

    @Test func racingRegistrationsAndPairingSlotsHaveOneWinner() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            // Ten registrations of one handle on two nodes: one device 1, nine refusals.
            let registrations = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<10 {
                    group.addTask {
                        do {
                            _ = try await Self.register(stores[index % 2], "carol")
                            return true
                        } catch let error as StoreError where error.code == .handleTaken {
                            return false
                        }
                    }
                }
                var wins = 0
                for try await won in group where won { wins += 1 }
                return wins
            }
            #expect(registrations == 1)
            #expect(try await stores[1].devices(handle: "carol").count == 1)
            // A pairing slot written on both nodes at once: one write; read once across nodes.
            let rendezvous = Self.bytes(0x42, 16)
            let writes = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<6 {
                    group.addTask {
                        do {
                            try await stores[index % 2].putLinkMessage(
                                rendezvousID: rendezvous, slot: 1, message: Self.bytes(UInt8(index), 8), nowMs: 1_000, expiresAtMs: 9_000)
                            return true
                        } catch let error as StoreError where error.code == .linkSlotUsed {
                            return false
                        }
                    }
                }
                var wins = 0
                for try await won in group where won { wins += 1 }
                return wins
            }
            #expect(writes == 1)
            let reads = try await withThrowingTaskGroup(of: Data?.self) { group in
                for index in 0..<6 { group.addTask { try await stores[index % 2].takeLinkMessage(rendezvousID: rendezvous, slot: 1, nowMs: 2_000) } }
                var messages: [Data] = []
                for try await message in group { if let message { messages.append(message) } }
                return messages
            }
            #expect(reads.count == 1)
        }
    }

    /// The single `bigint` a query of the store's database returns (a count, a sequence).
    static func scalar(_ store: PostgresRelayStore, _ query: PostgresQuery) async throws -> Int64 {
        try #require(try await store.client.query(query, logger: PostgresTestDatabase.logger).collect().first?.decode(Int64.self))
    }

    /// Review finding 6: a receipt being queued for a device on one node while a device list removes that device on
    /// another. The removal waits for the receipt's share lock of the device row and then takes the receipt too:
    /// nothing stays queued for a removed device (it used to delete the queue before the device row, so an item
    /// committed in between stayed until it expired).
    @Test func aDeviceRemovalTakesAnItemQueuedForItWhileItWaited() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let logger = PostgresTestDatabase.logger
            let bob1 = try await Self.register(stores[0], "bob")
            let bob2 = DeviceAddress(
                handle: "bob",
                deviceID: try await stores[0].registerDevice(
                    handle: "bob", accountIdentityKey: Self.bytes(9, 32), device: Self.newDevice(2), atMs: 1_500, maxDevices: 5))
            let (queued, queuedSignal) = AsyncStream<Void>.makeStream()
            let (commit, commitSignal) = AsyncStream<Void>.makeStream()
            // Node 0 queues a receipt for bob's device 2 as the store does: the device row share-locked, then the
            // counter row and the item; it stays open.
            let receipt = Task {
                try await stores[0].client.withTransaction(logger: logger) { connection in
                    let found = try await connection.query(
                        "SELECT 1 FROM devices WHERE handle = 'bob' AND device_id = \(Int64(bob2.deviceID)) FOR KEY SHARE", logger: logger
                    ).collect()
                    #expect(found.count == 1)
                    try await connection.query(
                        """
                        INSERT INTO queue_counters (handle, device_id, next_sequence) VALUES ('bob', \(Int64(bob2.deviceID)), 2)
                        ON CONFLICT (handle, device_id) DO UPDATE SET next_sequence = queue_counters.next_sequence + 1
                        """, logger: logger)
                    try await connection.query(
                        """
                        INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, receipt_id, receipt_kind, receipt_at,
                            receipt_recipient_handle, receipt_recipient_device_id, expires_at_ms)
                        VALUES ('bob', \(Int64(bob2.deviceID)), 1, 2, \(Self.bytes(7, 16)), \(Self.bytes(8, 16)), 1, 1500, 'alice', 1, 100000)
                        """, logger: logger)
                    queuedSignal.yield()
                    for await _ in commit { break }
                }
            }
            var iterator = queued.makeAsyncIterator()
            _ = await iterator.next()
            // Node 1 removes device 2 through a new device list; it has to wait for node 0's share lock.
            let removal = Task {
                try await stores[1].publishDeviceList(
                    handle: "bob", accountIdentityKey: Self.bytes(9, 32),
                    list: StoredDeviceList(payload: Self.bytes(3, 20), signature: Self.bytes(4, 64), version: 1),
                    entries: [DeviceListEntry(deviceID: bob1.deviceID, deviceIdentityKey: Self.bytes(1, 32))], publisher: bob1,
                    removeDeviceIDs: [bob2.deviceID], atMs: 2_000, receiptExpiresAtMs: 100_000)
            }
            #expect(try await Self.waitUntilSomeoneWaitsForALock(stores[1]))
            commitSignal.yield()
            try await receipt.value
            #expect(try await removal.value.removedDeviceIDs == [bob2.deviceID])
            #expect(try await Self.scalar(stores[0], "SELECT count(*) FROM queue_items WHERE handle = 'bob' AND device_id = \(Int64(bob2.deviceID))") == 0)
            // Finding 10: the removed device's counter row goes too, its sequence kept in the floor.
            #expect(try await Self.scalar(stores[0], "SELECT count(*) FROM queue_counters WHERE handle = 'bob' AND device_id = \(Int64(bob2.deviceID))") == 0)
            #expect(try await Self.scalar(stores[0], "SELECT next_sequence FROM queue_sequence_floor") == 2)
        }
    }

    /// Review finding 7: two submits of different senders (different submit locks) to a device that has no queue
    /// counter row yet, with a queue limit of 1. The second waits for the first's counter row and then reads its
    /// depth: refused with `queueFull` (it used to lock only existing rows, read depth 0 and queue a second envelope).
    @Test func theQueueLimitHoldsForADeviceWithoutACounterRowYet() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            let logger = PostgresTestDatabase.logger
            _ = try await Self.register(stores[0], "alice")
            let bob = try await Self.register(stores[0], "bob")
            let carol = try await Self.register(stores[0], "carol")
            #expect(try await Self.scalar(stores[0], "SELECT count(*) FROM queue_counters WHERE handle = 'bob'") == 0)
            let (queued, queuedSignal) = AsyncStream<Void>.makeStream()
            let (commit, commitSignal) = AsyncStream<Void>.makeStream()
            // Alice's submit on node 0, as the store queues one envelope (the counter row made by the insert), held open.
            let first = Task {
                try await stores[0].client.withTransaction(logger: logger) { connection in
                    try await connection.query(
                        """
                        INSERT INTO queue_counters (handle, device_id, next_sequence, envelopes) VALUES ('bob', 1, 2, 1)
                        ON CONFLICT (handle, device_id) DO UPDATE
                            SET next_sequence = queue_counters.next_sequence + 1, envelopes = queue_counters.envelopes + 1
                        """, logger: logger)
                    try await connection.query(
                        """
                        INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, ciphertext, expires_at_ms)
                        VALUES ('bob', 1, 1, 1, \(Self.bytes(5, 16)), \(Self.bytes(0xAB, 40)), 100000)
                        """, logger: logger)
                    queuedSignal.yield()
                    for await _ in commit { break }
                }
            }
            var iterator = queued.makeAsyncIterator()
            _ = await iterator.next()
            let second = Task {
                try await stores[1].submit(sender: carol, envelopes: [Self.envelope(Self.bytes(6, 16), to: bob)], atMs: 2_000, queueLimit: 1)
            }
            #expect(try await Self.waitUntilSomeoneWaitsForALock(stores[1]))
            commitSignal.yield()
            try await first.value
            #expect(try await second.value == [.rejected(.queueFull)])
            #expect(try await Self.scalar(stores[0], "SELECT count(*) FROM queue_items WHERE handle = 'bob' AND kind = 1") == 1)
        }
    }

    /// Review finding 10: a deleted account's counter rows go with it (not kept for ever), and when its handle is
    /// registered again after the tombstone's purge, the new device 1's sequences start above the old ones.
    @Test func counterRowsGoWithTheAccountAndSequencesNeverGoBackwards() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            let alice = try await Self.register(store, "alice")
            let dave = try await Self.register(store, "dave")
            for byte in UInt8(1)...3 {
                _ = try await store.submit(sender: alice, envelopes: [Self.envelope(Self.bytes(byte, 16), to: dave)], atMs: 2_000, queueLimit: .max)
            }
            let old = try await store.pendingItems(for: dave, afterSequence: 0, nowMs: 2_000, limit: 10).map(\.sequence)
            #expect(old.count == 3)
            _ = try await store.deleteAccount(
                handle: "dave", accountIdentityKey: Self.bytes(9, 32), atMs: 3_000, tombstoneUntilMs: 5_000, receiptExpiresAtMs: 100_000)
            #expect(try await Self.scalar(store, "SELECT count(*) FROM queue_counters WHERE handle = 'dave'") == 0)
            #expect(try await store.sweep(nowMs: 6_000, receiptExpiresAtMs: 100_000).purgedTombstones == 1)
            let again = try await Self.register(store, "dave")
            #expect(again == dave)
            _ = try await store.submit(sender: alice, envelopes: [Self.envelope(Self.bytes(9, 16), to: again)], atMs: 7_000, queueLimit: .max)
            let new = try await store.pendingItems(for: again, afterSequence: 0, nowMs: 7_000, limit: 10).map(\.sequence)
            #expect(new.count == 1)
            #expect(new.allSatisfy { $0 > (old.max() ?? .max) })
        }
    }

    /// The sweep works in bounded transactions: with batches of 10, 25 expired envelopes are expired in 3
    /// transactions and their 25 expired receipts purged in 3 (a trigger of the test's own logs each changed row's
    /// transaction id), with the same results as one sweep.
    @Test func theSweepWorksInBoundedBatches() async throws {
        try await PostgresTestDatabase.withStores { stores in
            let store = stores[0]
            let alice = try await Self.register(store, "alice")
            let bob = try await Self.register(store, "bob")
            for statement: PostgresQuery in [
                "CREATE TABLE sweep_log (what TEXT NOT NULL, txid BIGINT NOT NULL)",
                """
                CREATE FUNCTION log_expired() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO sweep_log VALUES ('expired', txid_current()); RETURN NULL; END $$
                """,
                """
                CREATE TRIGGER log_expired AFTER UPDATE ON envelope_routes FOR EACH ROW WHEN (NEW.state = 2) EXECUTE FUNCTION log_expired()
                """,
                """
                CREATE FUNCTION log_purged() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO sweep_log VALUES ('purged', txid_current()); RETURN NULL; END $$
                """,
                "CREATE TRIGGER log_purged AFTER DELETE ON queue_items FOR EACH ROW WHEN (OLD.kind = 2) EXECUTE FUNCTION log_purged()",
            ] {
                try await store.client.query(statement, logger: PostgresTestDatabase.logger)
            }
            let envelopes = (0..<25).map { Self.envelope(Data([UInt8($0)]) + Self.bytes(0xEE, 15), to: bob) }
            let outcomes = try await store.submit(sender: alice, envelopes: envelopes, atMs: 2_000, queueLimit: .max)
            #expect(outcomes.allSatisfy { $0 == .accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true) })
            let expired = try await store.sweep(nowMs: 200_000, receiptExpiresAtMs: 300_000, batchSize: 10)
            #expect(expired.expiredEnvelopes == 25)
            #expect(expired.notifiedSenders == [alice])
            #expect(try await store.pendingItems(for: bob, afterSequence: 0, nowMs: 200_000, limit: 100).isEmpty)
            #expect(try await store.pendingItems(for: alice, afterSequence: 0, nowMs: 200_000, limit: 100).count == 25)
            #expect(try await Self.scalar(store, "SELECT envelopes FROM queue_counters WHERE handle = 'bob'") == 0)
            #expect(try await Self.scalar(store, "SELECT count(*) FROM sweep_log WHERE what = 'expired'") == 25)
            #expect(try await Self.scalar(store, "SELECT count(DISTINCT txid) FROM sweep_log WHERE what = 'expired'") == 3)
            let purged = try await store.sweep(nowMs: 400_000, receiptExpiresAtMs: 500_000, batchSize: 10)
            #expect(purged.purgedReceipts == 25)
            #expect(purged.expiredEnvelopes == 0)
            #expect(try await Self.scalar(store, "SELECT count(*) FROM sweep_log WHERE what = 'purged'") == 25)
            #expect(try await Self.scalar(store, "SELECT count(DISTINCT txid) FROM sweep_log WHERE what = 'purged'") == 3)
            #expect(try await store.sweep(nowMs: 2_000_000, receiptExpiresAtMs: 2_100_000, batchSize: 10).purgedRoutes == 25)
            #expect(try await Self.scalar(store, "SELECT count(*) FROM envelope_routes") == 0)
        }
    }

    /// Whether a session of the store's database waits for a lock, asked until it does (a failure guard of 60 s,
    /// never a timing assumption: the waiting writer is blocked until the test lets the other commit).
    static func waitUntilSomeoneWaitsForALock(_ store: PostgresRelayStore) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let waiting = try await store.client.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                logger: PostgresTestDatabase.logger
            ).collect().first?.decode(Int64.self) ?? 0
            if waiting > 0 { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

}
