import FlitzStore
import FlitzStorePostgres
import Foundation
import PostgresNIO
import Synchronization
import Testing

/// The concurrency cases of the conformance suite (issue 9; `protocol/cluster.md` 4-5): two stores on one database
/// stand for two relay nodes (on SQLite: two stores on one file; on PostgreSQL: two connection pools).
@Suite(.freshStores) struct StoreConcurrencyTests {
    /// A store of `kind` and a second one ("node 2") on the same database.
    static func twoNodes(_ kind: StoreKind) async throws -> (any RelayStore, any RelayStore) {
        let (first, location) = try await StoreScope.make(kind)
        return (first, try await StoreScope.open(location))
    }

    static func envelope(_ id: Data, to recipient: DeviceAddress) -> EnvelopeSubmission {
        EnvelopeSubmission(envelopeID: id, recipient: recipient, ciphertext: RelayStoreTests.bytes(0xAB, 40), expiresAtMs: 100_000, routeExpiresAtMs: 1_000_000)
    }

    static func id(_ high: Int, _ low: Int) -> Data {
        Data([UInt8(high), UInt8(low)] + [UInt8](repeating: 0x5A, count: 14))
    }

    @Test(arguments: StoreKind.allCases) func oneTimePreKeyIsHandedOutOnceUnderConcurrentFetchesFromTwoNodes(_ kind: StoreKind) async throws {
        let (one, two) = try await Self.twoNodes(kind)
        let bob = try await RelayStoreTests.register(one, "bob", oneTimePreKeys: 20)
        let taken = try await withThrowingTaskGroup(of: UInt32?.self) { group in
            for index in 0..<30 {
                let node = index.isMultiple(of: 2) ? one : two
                group.addTask { try await node.takePreKeyBundle(handle: "bob")?.devices.first?.oneTimePreKey?.id }
            }
            var ids: [UInt32] = []
            for try await id in group { if let id { ids.append(id) } }
            return ids
        }
        #expect(taken.count == 20)
        #expect(Set(taken) == Set(1...20))
        #expect(try await two.preKeyStock(device: bob).oneTime == 0)
    }

    @Test(arguments: StoreKind.allCases) func concurrentIdenticalSubmissionsOnTwoNodesStoreOneEnvelope(_ kind: StoreKind) async throws {
        let (one, two) = try await Self.twoNodes(kind)
        let alice = try await RelayStoreTests.register(one, "alice")
        let bob = try await RelayStoreTests.register(one, "bob")
        let submission = Self.envelope(Self.id(5, 5), to: bob)
        let outcomes = try await withThrowingTaskGroup(of: [SubmissionOutcome].self) { group in
            for index in 0..<16 {
                let node = index.isMultiple(of: 2) ? one : two
                group.addTask { try await node.submit(sender: alice, envelopes: [submission], atMs: 2_000 + Int64(index), queueLimit: .max) }
            }
            var all: [SubmissionOutcome] = []
            for try await outcome in group { all += outcome }
            return all
        }
        // Exactly one call queued it; every other one got the same answer (the first acceptance time), not an error.
        let first = try #require(outcomes.first { $0 == .accepted(acceptedAtMs: acceptedAt(outcomes), expiresAtMs: 100_000, newlyQueued: true) })
        #expect(outcomes.filter { $0 == first }.count == 1)
        #expect(outcomes.filter { $0 == .accepted(acceptedAtMs: acceptedAt(outcomes), expiresAtMs: 100_000, newlyQueued: false) }.count == 15)
        let items = try await two.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10)
        #expect(RelayStoreTests.envelopeIDs(items) == [submission.envelopeID])
    }

    /// The acceptance time of the one call that queued the envelope.
    private func acceptedAt(_ outcomes: [SubmissionOutcome]) -> Int64 {
        for case .accepted(let at, _, true) in outcomes { return at }
        return -1
    }

    @Test(arguments: StoreKind.allCases) func aReaderPollingWhileTwoNodesWriteNeverSkipsAnItem(_ kind: StoreKind) async throws {
        let (one, two) = try await Self.twoNodes(kind)
        let bob = try await RelayStoreTests.register(one, "bob")
        var senders: [DeviceAddress] = []
        for index in 0..<4 { senders.append(try await RelayStoreTests.register(one, "s\(index)")) }
        let writers = senders
        let done = Atomic<Bool>(false)
        // The reader reads from node 2 as a relay does: after the last sequence it has seen, again and again.
        let reader = Task {
            var cursor: Int64 = 0
            var seen: [QueuedItem] = []
            while true {
                let finished = done.load(ordering: .acquiring)
                let page = try await two.pendingItems(for: bob, afterSequence: cursor, nowMs: 2_000, limit: 7)
                seen += page
                cursor = page.last?.sequence ?? cursor
                if page.isEmpty && finished { return seen }
                await Task.yield()
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, sender) in writers.enumerated() {
                group.addTask {
                    for message in 0..<10 {
                        let node = (index + message).isMultiple(of: 2) ? one : two
                        let outcome = try await node.submit(
                            sender: sender, envelopes: [Self.envelope(Self.id(index, message), to: bob)], atMs: 2_000, queueLimit: .max)
                        #expect(outcome == [.accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true)])
                    }
                }
            }
            try await group.waitForAll()
        }
        done.store(true, ordering: .releasing)
        let seen = try await reader.value
        let expected = Set((0..<4).flatMap { index in (0..<10).map { Self.id(index, $0) } })
        #expect(seen.count == 40)
        #expect(Set(RelayStoreTests.envelopeIDs(seen)) == expected)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0.sequence < $1.sequence })
    }

    @Test(arguments: StoreKind.allCases) func sweepsAndReleasesOnTwoNodesActOnEachEnvelopeOnce(_ kind: StoreKind) async throws {
        let (one, two) = try await Self.twoNodes(kind)
        let alice = try await RelayStoreTests.register(one, "alice")
        let bob = try await RelayStoreTests.register(one, "bob")
        let expiring = (0..<30).map { Self.envelope(Self.id(1, $0), to: bob) }
        let scheduled = (0..<20).map { index in
            EnvelopeSubmission(
                envelopeID: Self.id(2, index), recipient: bob, ciphertext: RelayStoreTests.bytes(0xAB, 40), expiresAtMs: 210_000,
                routeExpiresAtMs: 1_150_000, notBeforeMs: 150_000, cancelTokenHash: RelayStoreTests.bytes(0xCC, 32), ttlMs: 60_000, urgency: 1)
        }
        _ = try await one.submit(sender: alice, envelopes: expiring + scheduled, atMs: 2_000, queueLimit: .max)
        let expired = try await withThrowingTaskGroup(of: Int.self) { group in
            for node in [one, two] { group.addTask { try await node.sweep(nowMs: 100_000, receiptExpiresAtMs: 900_000).expiredEnvelopes } }
            return try await group.reduce(0, +)
        }
        #expect(expired == 30)
        let receipts = RelayStoreTests.receipts(try await two.pendingItems(for: alice, afterSequence: 0, nowMs: 100_000, limit: 100))
        #expect(receipts.count == 30 && Set(receipts.map(\.envelopeID)) == Set(expiring.map(\.envelopeID)))
        let released = try await withThrowingTaskGroup(of: [Data].self) { group in
            for node in [one, two] {
                group.addTask {
                    var ids: [Data] = []
                    while true {
                        let release = try await node.releaseScheduled(
                            nowMs: 160_000, retentionMs: 1_000_000, receiptExpiresAtMs: 2_000_000, queueLimit: .max, batchSize: 3)
                        ids += release.released.map(\.envelopeID)
                        if !release.more { return ids }
                    }
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        #expect(released.count == 20 && Set(released) == Set(scheduled.map(\.envelopeID)))
        let queued = try await one.pendingItems(for: bob, afterSequence: 0, nowMs: 160_000, limit: 100)
        #expect(Set(RelayStoreTests.envelopeIDs(queued)) == Set(scheduled.map(\.envelopeID)) && queued.count == 20)
        #expect(try await two.nextScheduledRelease() == nil)
    }

    // MARK: PostgreSQL only

    /// Two nodes starting together on an empty database: the advisory lock lets one migrate, the other finds nothing
    /// left to do; both see the same schema.
    @Test func twoPostgresStoresMigratingAnEmptyDatabaseAtOnceDoNotRace() async throws {
        let url = try await StoreScope.makePostgresDatabase()
        let one = try await StoreScope.openPostgres(url: url, migrate: false)
        let two = try await StoreScope.openPostgres(url: url, migrate: false)
        async let first = one.migrate()
        async let second = two.migrate()
        let (a, b) = try await (first, second)
        let applied = try await one.appliedMigrations()
        #expect(!applied.isEmpty)
        #expect(Set(a).isDisjoint(with: b))
        #expect((a + b).sorted() == applied.sorted())
        #expect(try await two.appliedMigrations() == applied)
        #expect(try await one.migrate().isEmpty)
        // And the schema works from both.
        let alice = try await RelayStoreTests.register(one, "alice")
        #expect(try await two.device(alice) != nil)
    }

    /// Queue sequences follow commit order (cluster.md 5): writer 1 (node 1) takes bob's queue counter row and queues
    /// an item as the store does, and stays open; writer 2 (node 2), a real submission, starts later and would commit
    /// first, but waits for the counter row. A reader meanwhile sees neither, so it never remembers a sequence past an
    /// uncommitted one; after both commit it finds both, in commit order, skipping nothing.
    @Test func writersCommittingOutOfOrderNeverMakeAReaderSkip() async throws {
        let (anyOne, location) = try await StoreScope.make(.postgres)
        let one = try #require(anyOne as? PostgresRelayStore)
        guard case .postgres(let url) = location else { throw StoreScope.NoScope() }
        let two = try await StoreScope.openPostgres(url: url)
        let logger = StoreScope.logger
        let alice = try await RelayStoreTests.register(one, "alice")
        let bob = try await RelayStoreTests.register(one, "bob")
        _ = try await one.submit(sender: alice, envelopes: [Self.envelope(Self.id(0, 0), to: bob)], atMs: 2_000, queueLimit: .max)
        let before = try await two.pendingItems(for: bob, afterSequence: 0, nowMs: 2_000, limit: 10)
        let cursor = try #require(before.last?.sequence)

        let (queued, queuedSignal) = AsyncStream<Int64>.makeStream()
        let (commit, commitSignal) = AsyncStream<Void>.makeStream()
        let writer1 = Task {
            try await one.client.withTransaction(logger: logger) { connection in
                let sequence = try #require(
                    try await connection.query(
                        """
                        UPDATE queue_counters SET next_sequence = next_sequence + 1
                        WHERE handle = \(bob.handle) AND device_id = \(Int64(bob.deviceID)) RETURNING next_sequence - 1
                        """, logger: logger
                    ).collect().first?.decode(Int64.self))
                // A DELIVERED receipt for bob about an envelope of his, queued in this transaction.
                try await connection.query(
                    """
                    INSERT INTO queue_items (handle, device_id, sequence, kind, envelope_id, receipt_id, receipt_kind, receipt_at,
                        receipt_recipient_handle, receipt_recipient_device_id, expires_at_ms)
                    VALUES (\(bob.handle), \(Int64(bob.deviceID)), \(sequence), 2, \(Self.id(9, 9)), \(Self.id(9, 8)), \(Int64(ReceiptKind.delivered.rawValue)),
                        1500, \(alice.handle), \(Int64(alice.deviceID)), 100000)
                    """, logger: logger)
                queuedSignal.yield(sequence)
                for await _ in commit { break }
            }
        }
        var iterator = queued.makeAsyncIterator()
        let writer1Sequence = try #require(await iterator.next())
        let writer2 = Task {
            try await two.submit(sender: alice, envelopes: [Self.envelope(Self.id(1, 1), to: bob)], atMs: 2_000, queueLimit: .max)
        }
        #expect(try await Self.waitUntilASessionWaitsForALock(two))
        #expect(try await two.pendingItems(for: bob, afterSequence: cursor, nowMs: 2_000, limit: 10).isEmpty)
        commitSignal.yield()
        try await writer1.value
        #expect(try await writer2.value == [.accepted(acceptedAtMs: 2_000, expiresAtMs: 100_000, newlyQueued: true)])
        let after = try await two.pendingItems(for: bob, afterSequence: cursor, nowMs: 2_000, limit: 10)
        #expect(after.map(\.sequence) == [writer1Sequence, writer1Sequence + 1])
        guard case .receipt? = after.first?.content, case .envelope(let envelope)? = after.last?.content else {
            Issue.record("expected writer 1's receipt, then writer 2's envelope")
            return
        }
        #expect(envelope.envelopeID == Self.id(1, 1))
    }

    /// Asks until a session of the store's database waits for a lock (60 s failure guard; the waiting writer stays
    /// blocked until the test lets the other commit, so this is no timing assumption).
    static func waitUntilASessionWaitsForALock(_ store: PostgresRelayStore) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let rows = try await store.client.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
                logger: StoreScope.logger
            ).collect()
            if try rows.first?.decode(Int64.self) ?? 0 > 0 { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
