import FlitzStore
@testable import FlitzStorePostgres
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// The fixes of the review of pg-more (issue 9), each on a real PostgreSQL server: a restarted node forgets its
/// earlier process's claims, a newer schema is refused, the blob quota holds across nodes, deadlocks are retried,
/// liveness uses the database clock, a bucket pruned under a take keeps its debit, the migration lock is
/// transaction-scoped, and a call-signal take waits for a hold of the same device.
@Suite struct PostgresReviewFixTests {
    static let alice = DeviceAddress(handle: "alice", deviceID: 1)
    static let bob = DeviceAddress(handle: "bob", deviceID: 2)
    static var logger: Logger { ClusterTestDatabase.logger }

    /// Set once an operation under test finished (so a wait for it to block ends at once when it did not block).
    final class DoneFlag: Sendable {
        private let value = Mutex(false)
        func set() { value.withLock { $0 = true } }
        var isSet: Bool { value.withLock { $0 } }
    }

    /// Whether a session of the store's database waits for a lock, asked until one does; false as soon as `done` is
    /// set (the operation that should have waited finished instead) or after a 60 s failure guard.
    static func waitsForALock(_ store: PostgresRelayStore, unless done: DoneFlag) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, !done.isSet {
            let waiting = try await ClusterTestDatabase.count(
                store, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            if waiting > 0 { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Runs `body` in a transaction of `store` on a task of its own, which waits after `body` until `release()`.
    struct HeldTransaction: Sendable {
        let task: Task<Void, any Error>
        let release: @Sendable () -> Void

        static func open(
            _ store: PostgresRelayStore, _ body: @escaping @Sendable (PostgresConnection) async throws -> Void,
            afterRelease: @escaping @Sendable (PostgresConnection) async throws -> Void = { _ in }
        ) async throws -> HeldTransaction {
            let (ready, readySignal) = AsyncStream<Void>.makeStream()
            let (go, goSignal) = AsyncStream<Void>.makeStream()
            let task = Task {
                try await store.client.withTransaction(logger: PostgresReviewFixTests.logger) { connection in
                    try await body(connection)
                    readySignal.yield()
                    for await _ in go { break }
                    try await afterRelease(connection)
                }
            }
            var iterator = ready.makeAsyncIterator()
            _ = await iterator.next()
            return HeldTransaction(task: task, release: { goSignal.yield() })
        }
    }

    // Finding 1: a node killed and restarted under the same id.
    @Test func aRestartedNodeForgetsTheClaimsOfItsEarlierProcess() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            try await a.cluster.heartbeat(nowMs: 1_000, staleAfterMs: 15_000)
            let first = try await a.cluster.claimConnection(Self.alice, nowMs: 1_000)
            #expect(try await b.cluster.liveClaims([Self.alice], nowMs: 1_000) == [Self.alice: ConnectionClaim(node: "node-a", epoch: first)])
            // node-a is killed (no release) and started again: a new PostgresCluster with the same node id.
            let restarted = try a.store.cluster(nodeID: "node-a")
            try await restarted.heartbeat(nowMs: 2_000, staleAfterMs: 15_000)
            // Its heartbeat is fresh, but alice is connected nowhere: push must wake her.
            #expect(try await b.cluster.liveClaims([Self.alice], nowMs: 2_000).isEmpty)
            let second = try await restarted.claimConnection(Self.alice, nowMs: 2_000)
            #expect(second > first)
            #expect(try await b.cluster.liveClaims([Self.alice], nowMs: 2_000) == [Self.alice: ConnectionClaim(node: "node-a", epoch: second)])
        }
    }

    // Finding 2: a binary older than the schema refuses to start.
    @Test func aSchemaNewerThanThisRelayIsRefused() async throws {
        try await ClusterTestDatabase.withNodes { a, _ in
            try await a.store.client.query("INSERT INTO flitz_migrations (name) VALUES ('cluster-v99-from-a-newer-relay')", logger: Self.logger)
            do {
                let applied = try await a.store.migrate()
                Issue.record("migrated a newer schema: \(applied)")
            } catch let error as StoreError {
                #expect(error.code == .backend)
                #expect(error.detail.contains("newer than this relay") && error.detail.contains("cluster-v99-from-a-newer-relay"))
            }
        }
    }

    // Finding 3: the blob quota across concurrent creations of one account.
    @Test func blobQuotaHoldsForConcurrentCreationsOnTwoNodes() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            for seed in UInt8(1)...8 { try await stores[0].storeUploadToken(PostgresPushBlobTests.token(seed), atMs: 1_000) }
            let creations = try await withThrowingTaskGroup(of: UploadCreation.self) { group in
                for seed in UInt8(1)...8 {
                    let node = stores[Int(seed) % 2]
                    group.addTask {
                        try await node.createUpload(
                            tokenHash: PostgresPushBlobTests.bytes(seed, 32), blobID: PostgresPushBlobTests.bytes(seed, 16), length: 60, nowMs: 1_000,
                            uploadExpiresAtMs: 50_000, quotaBytes: 100)
                    }
                }
                return try await group.reduce(into: [UploadCreation]()) { $0.append($1) }
            }
            let created = creations.filter { if case .created = $0 { true } else { false } }
            #expect(created.count == 1)
            #expect(creations.filter { $0 == .overQuota(usedBytes: 60) }.count == 7)
            #expect(try await stores[1].blobQuotaUsage(handle: "alice", nowMs: 1_000) == 60)
        }
    }

    @Test func aCreationWaitsForTheAccountsQuotaLockAndCountsWhatCommittedMeanwhile() async throws {
        try await PostgresTestDatabase.withStores(count: 2) { stores in
            try await stores[0].storeUploadToken(PostgresPushBlobTests.token(1), atMs: 1_000)
            // Another node's creation for alice, holding her quota lock with its 60-byte upload not yet committed.
            let other = try await HeldTransaction.open(stores[0]) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('flitz.quota:alice', 0))", logger: Self.logger)
                try await connection.query(
                    """
                    INSERT INTO blobs (blob_id, token_hash, handle, device_id, length, committed_offset, completed, expires_at,
                        upload_expires_at, unsend_token_hash, created_at)
                    VALUES (\(PostgresPushBlobTests.bytes(9, 16)), \(PostgresPushBlobTests.bytes(9, 32)), 'alice', 1, 60, 0, FALSE, 100000,
                        50000, '\\x'::BYTEA, 1000)
                    """, logger: Self.logger)
            }
            let done = DoneFlag()
            let creation = Task {
                defer { done.set() }
                return try await stores[1].createUpload(
                    tokenHash: PostgresPushBlobTests.bytes(1, 32), blobID: PostgresPushBlobTests.bytes(1, 16), length: 60, nowMs: 1_000,
                    uploadExpiresAtMs: 50_000, quotaBytes: 100)
            }
            #expect(try await Self.waitsForALock(stores[1], unless: done))
            other.release()
            try await other.task.value
            #expect(try await creation.value == .overQuota(usedBytes: 60))
        }
    }

    // Finding 4: a transaction PostgreSQL aborts to break a deadlock is run again.
    @Test func aTakeAbortedForADeadlockIsRunAgain() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let k1 = Data("k1".utf8), k2 = Data("k2".utf8)
            try await a.store.client.query(
                "INSERT INTO rate_buckets (key, tokens, updated_at_ms, full_at_ms) VALUES (\(k1), 3, 1000, 1000), (\(k2), 3, 1000, 1000)",
                logger: Self.logger)
            // A transaction locks k2, then (once the take holds k1 and waits for k2) k1: a deadlock. Its own deadlock
            // check waits 60 s, the take's 1 s (the default), so PostgreSQL aborts the take's transaction.
            let other = try await HeldTransaction.open(
                a.store,
                { connection in
                    try await connection.query("SET LOCAL deadlock_timeout = '60s'", logger: Self.logger)
                    try await connection.query("SELECT 1 FROM rate_buckets WHERE key = \(k2) FOR UPDATE", logger: Self.logger)
                },
                afterRelease: { connection in
                    try await connection.query("SELECT 1 FROM rate_buckets WHERE key = \(k1) FOR UPDATE", logger: Self.logger)
                })
            let done = DoneFlag()
            let take = Task {
                defer { done.set() }
                return try await b.cluster.takeTokens(
                    [TokenTake(key: "k1", cost: 1, perMinute: 60, burst: 3), TokenTake(key: "k2", cost: 1, perMinute: 60, burst: 3)], nowMs: 1_000)
            }
            #expect(try await Self.waitsForALock(a.store, unless: done))
            other.release()
            try await other.task.value
            #expect(try await take.value == 0)
            let tokens = try await a.store.client.query("SELECT tokens FROM rate_buckets ORDER BY key", logger: Self.logger).collect()
                .map { try $0.decode(Double.self) }
            #expect(tokens == [2, 2])  // debited once
        }
    }

    // Finding 5: liveness on the database clock.
    @Test func nodesWithSkewedClocksDoNotDeclareEachOtherDead() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            // node-b's clock is an hour behind node-a's.
            try await b.cluster.heartbeat(nowMs: 1_000_000, staleAfterMs: 15_000)
            _ = try await b.cluster.claimConnection(Self.bob, nowMs: 1_000_000)
            try await a.cluster.heartbeat(nowMs: 4_600_000, staleAfterMs: 15_000)
            #expect(try await a.cluster.liveClaims([Self.bob], nowMs: 4_600_000)[Self.bob]?.node == "node-b")
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM relay_nodes") == 2)
        }
    }

    // Finding 8: a bucket the heartbeat prunes while a take waits for it keeps the take's debit.
    @Test func aBucketPrunedWhileATakeWaitsKeepsTheDebit() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let key = Data("k".utf8)
            let take = TokenTake(key: "k", cost: 1, perMinute: 1, burst: 1)
            try await a.store.client.query(
                "INSERT INTO rate_buckets (key, tokens, updated_at_ms, full_at_ms) VALUES (\(key), 1, 0, 0)", logger: Self.logger)
            // The pruning transaction has the full bucket's row locked when the take arrives, and deletes it after.
            let prune = try await HeldTransaction.open(
                a.store,
                { connection in
                    try await connection.query("SELECT 1 FROM rate_buckets WHERE key = \(key) FOR UPDATE", logger: Self.logger)
                },
                afterRelease: { connection in
                    try await connection.query("DELETE FROM rate_buckets WHERE key = \(key)", logger: Self.logger)
                })
            let done = DoneFlag()
            let first = Task {
                defer { done.set() }
                return try await b.cluster.takeTokens([take], nowMs: 1_000)
            }
            #expect(try await Self.waitsForALock(a.store, unless: done))
            prune.release()
            try await prune.task.value
            #expect(try await first.value == 0)
            // The bucket's one token is spent: a second take at the same moment waits a minute.
            #expect(try await a.cluster.takeTokens([take], nowMs: 1_000) == 60_000)
        }
    }

    // Finding 9: the migration lock ends with the migration's transaction.
    @Test func theMigrationLockIsTransactionScoped() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let other = try await HeldTransaction.open(a.store) { connection in
                try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresRelayStore.migrationLockKey))", logger: Self.logger)
            }
            let done = DoneFlag()
            let migration = Task {
                defer { done.set() }
                return try await b.store.migrate()
            }
            #expect(try await Self.waitsForALock(a.store, unless: done))
            other.release()
            try await other.task.value
            #expect(try await migration.value.isEmpty)
            // No advisory lock is left on any connection of either pool.
            #expect(try await ClusterTestDatabase.count(a.store, """
                    SELECT count(*) FROM pg_locks
                    WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                    """) == 0)
        }
    }

    // Finding 12: a take of a device's call signals waits for a hold of the same device.
    @Test func aCallSignalTakeWaitsForAHoldOfTheSameDevice() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let signal = PostgresClusterTests.signal(from: Self.alice, to: Self.bob, sequence: 1)
            #expect(try await a.cluster.callSignals.hold([signal], nowMs: 1_000) == 0)
            // A hold for bob in progress (its advisory lock taken, the caps being applied).
            let hold = try await HeldTransaction.open(a.store) { connection in
                try await connection.query(
                    "SELECT pg_advisory_xact_lock(\(PostgresCallSignalStore.lockClass), hashtext(\(Self.bob.description)))", logger: Self.logger)
            }
            let done = DoneFlag()
            let take = Task {
                defer { done.set() }
                return try await b.cluster.callSignals.take(Self.bob, nowMs: 1_000)
            }
            #expect(try await Self.waitsForALock(a.store, unless: done))
            hold.release()
            try await hold.task.value
            #expect(try await take.value == [signal])
        }
    }
}
