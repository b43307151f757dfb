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
