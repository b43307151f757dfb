import FlitzStore
@testable import FlitzStorePostgres
import FlitzTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// `PostgresCluster` on a real PostgreSQL server (`protocol/cluster.md`): two "nodes" (two stores, each with its own
/// connection pool, and a cluster each with its own node id) on one fresh database per test.
@Suite struct PostgresClusterTests {
    static let alice = DeviceAddress(handle: "alice", deviceID: 1)
    static let bob = DeviceAddress(handle: "bob", deviceID: 2)

    // MARK: Notices

    @Test func noticesCrossNodesInOrderWithIdsOnly() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let notices: [ClusterNotice] = [
                .queued([Self.alice, Self.bob]), .claimed(device: Self.alice, node: "node-a", epoch: 7), .removed([Self.bob]),
                .onlineOnly(device: Self.bob, id: 42), .callSignal(Self.alice),
            ]
            await a.cluster.publish(notices + [.resync])  // .resync is never published
            #expect(await b.inbox.wait { $0.count >= 6 })
            #expect(await b.inbox.received == [.resync] + notices)
            // A node hears its own notices too (cluster.md 3.1).
            #expect(await a.inbox.wait { $0.count >= 6 })
            #expect(await a.inbox.received == [.resync] + notices)
        }
    }

    @Test func payloadsAreSplitBelowTheLimitAndParseBack() async throws {
        // 600 devices of 40-character handles: about 26 000 bytes, so at least 4 payloads.
        let devices = (0..<600).map { DeviceAddress(handle: String(repeating: "h", count: 30) + String(format: "%010d", $0), deviceID: UInt32($0)) }
        let payloads = PostgresCluster.payloads(for: [.queued(devices)])
        #expect(payloads.count >= 4)
        #expect(payloads.allSatisfy { $0.utf8.count <= PostgresCluster.maxPayloadBytes })
        let parsed = payloads.flatMap(PostgresCluster.notices(fromPayload:))
        #expect(parsed.flatMap { notice -> [DeviceAddress] in
            if case .queued(let list) = notice { return list }
            return []
        } == devices)
        // Unknown or malformed payloads are ignored, not misread.
        for payload in ["x alice/1", "q", "q alice", "c alice/1 node", "o alice/1 nope", "s alice/1 extra", ""] {
            #expect(PostgresCluster.notices(fromPayload: payload).isEmpty, "\(payload)")
        }
        #expect(PostgresCluster.notices(fromPayload: "q we/ird/3") == [.queued([DeviceAddress(handle: "we/ird", deviceID: 3)])])

        // Over NOTIFY too: the split list arrives whole.
        try await ClusterTestDatabase.withNodes { a, b in
            await a.cluster.publish([.queued(devices)])
            #expect(await b.inbox.wait { $0.count >= 1 + payloads.count })
            let received = await b.inbox.received.flatMap { notice -> [DeviceAddress] in
                if case .queued(let list) = notice { return list }
                return []
            }
            #expect(received == devices)
        }
    }

    @Test func listenerReconnectsAfterItsConnectionIsKilledAndSaysResync() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            #expect(b.cluster.listenCount == 1)
            // Kill every listening backend (both nodes'): their last statement is the LISTEN.
            try await ClusterTestDatabase.withAdmin(b.url) { admin in
                let rows = try await admin.query(
                    """
                    SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                    WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'
                    """, logger: ClusterTestDatabase.logger)
                #expect(try await rows.collect().count == 2)
            }
            // Each node listens again on a fresh connection and says so with a second .resync.
            #expect(await b.inbox.wait { $0.filter { $0 == .resync }.count == 2 })
            #expect(await a.inbox.wait { $0.filter { $0 == .resync }.count == 2 })
            #expect(b.cluster.listenCount == 2)
            await a.cluster.publish([.callSignal(Self.bob)])
            #expect(await b.inbox.wait { $0.last == .callSignal(Self.bob) })
        }
    }

    // MARK: Claims

    @Test func claimsTakeLargerEpochsAndOnlyTheLiveOneIsReleased() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let now: Int64 = 1_000_000
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await b.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            let first = try await a.cluster.claimConnection(Self.alice, nowMs: now)
            #expect(try await b.cluster.liveClaims([Self.alice, Self.bob], nowMs: now) == [Self.alice: ConnectionClaim(node: "node-a", epoch: first)])
            // alice connects to node B: a larger epoch, B's claim.
            let second = try await b.cluster.claimConnection(Self.alice, nowMs: now + 1)
            #expect(second > first)
            #expect(try await a.cluster.liveClaims([Self.alice], nowMs: now + 1) == [Self.alice: ConnectionClaim(node: "node-b", epoch: second)])
            // Node A's older connection ends: its release leaves B's claim alone.
            try await a.cluster.releaseConnection(Self.alice, epoch: first)
            #expect(try await a.cluster.liveClaims([Self.alice], nowMs: now + 2)[Self.alice]?.epoch == second)
            try await b.cluster.releaseConnection(Self.alice, epoch: second)
            #expect(try await a.cluster.liveClaims([Self.alice], nowMs: now + 3).isEmpty)
            // The counter survives the release: the next claim is larger still.
            let third = try await a.cluster.claimConnection(Self.alice, nowMs: now + 4)
            #expect(third > second)

            // Concurrent claims of one device on both nodes get distinct epochs; the claim row names the largest.
            let epochs = try await withThrowingTaskGroup(of: Int64.self) { group in
                for index in 0..<20 {
                    let cluster = index % 2 == 0 ? a.cluster : b.cluster
                    group.addTask { try await cluster.claimConnection(Self.bob, nowMs: now + 5) }
                }
                return try await group.reduce(into: [Int64]()) { $0.append($1) }
            }
            #expect(Set(epochs).count == 20)
            #expect(try await a.cluster.liveClaims([Self.bob], nowMs: now + 5)[Self.bob]?.epoch == epochs.max())
        }
    }

    @Test func claimsOfADeadNodeStopCountingAndAreDeleted() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let now: Int64 = 2_000_000
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await b.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            _ = try await b.cluster.claimConnection(Self.bob, nowMs: now)
            _ = try await a.cluster.claimConnection(Self.alice, nowMs: now)
            // A claim of a node that has no relay_nodes row (it was deleted under a racing claim) goes too.
            try await a.store.client.query(
                "INSERT INTO connection_claims (handle, device_id, node_id, epoch, claimed_at_ms) VALUES ('carol', 1, 'node-gone', 1, 0)",
                logger: ClusterTestDatabase.logger)
            // Liveness is on the database clock: node B's heartbeat set back 60 s is too old, so A's heartbeat
            // (its own previous one fresh) deletes B's claim and row (never its own).
            try await a.store.client.query(
                "UPDATE relay_nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE node_id = 'node-b'", logger: ClusterTestDatabase.logger)
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            let live = try await a.cluster.liveClaims([Self.alice, Self.bob], nowMs: now)
            #expect(live == [Self.alice: ConnectionClaim(node: "node-a", epoch: 1)])
            let rows = try await a.store.client.query("SELECT node_id FROM connection_claims ORDER BY node_id", logger: ClusterTestDatabase.logger)
            var nodes: [String] = []
            for try await node in rows.decode(String.self) { nodes.append(node) }
            #expect(nodes == ["node-a"])
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM relay_nodes WHERE node_id = 'node-b'") == 0)
        }
    }

    // sec-claims, finding 1: recovery and account deletion delete the removed devices' claims (the periodic check
    // then closes their connections on every node), and a device that no longer exists cannot claim.
    @Test func removedDevicesLoseTheirClaimsAndCannotClaim() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let now: Int64 = 3_000_000
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await b.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            _ = try await b.cluster.claimConnection(Self.alice, nowMs: now)
            _ = try await b.cluster.claimConnection(Self.bob, nowMs: now)
            #expect(try await a.cluster.liveClaims([Self.alice, Self.bob], nowMs: now).count == 2)
            // Node A recovers alice's account: every old device of alice goes, with its claim.
            let recovered = try await a.store.recover(
                handle: "alice", expectedRecoveryCodeHash: RelayStoreTests.bytes(7, 32), accountIdentityKey: RelayStoreTests.bytes(10, 32),
                newRecoveryCodeHash: RelayStoreTests.bytes(8, 32), device: RelayStoreTests.newDevice(3), atMs: now, receiptExpiresAtMs: now + 60_000)
            #expect(recovered.removedDeviceIDs == [1])
            #expect(try await a.cluster.liveClaims([Self.alice, Self.bob], nowMs: now).keys.sorted { $0.handle < $1.handle } == [Self.bob])
            // Node A deletes bob's account (removal of every device): bob/2's claim goes.
            _ = try await a.store.deleteAccount(
                handle: "bob", accountIdentityKey: RelayStoreTests.bytes(9, 32), atMs: now, tombstoneUntilMs: now + 60_000,
                receiptExpiresAtMs: now + 60_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM connection_claims") == 0)
            // Finding 11: their epoch rows went too, the floor raised to the largest of them.
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM claim_epochs") == 0)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT epoch FROM claim_epoch_floor") == 1)
            // A claim racing the removal (authenticated before it committed) is refused and records nothing.
            for device in [Self.alice, Self.bob] {
                do {
                    _ = try await b.cluster.claimConnection(device, nowMs: now + 1)
                    Issue.record("a removed device claimed")
                } catch let error as StoreError {
                    #expect(error.code == .unknownDevice)
                }
            }
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM connection_claims") == 0)
            // The recovered account's new device claims as before.
            let fresh = DeviceAddress(handle: "alice", deviceID: recovered.deviceID)
            let epoch = try await b.cluster.claimConnection(fresh, nowMs: now + 2)
            #expect(epoch == 2)  // above the floor
            #expect(try await a.cluster.liveClaims([fresh], nowMs: now + 2) == [fresh: ConnectionClaim(node: "node-b", epoch: epoch)])
        }
    }

    // sec-claims, finding 4: after an outage (every heartbeat stale, this node's own too) a heartbeat reaps nothing;
    // a claim deleted anyway is put back for its connection while its epoch is the latest and the device exists.
    @Test func anOutageReapsNothingAndADeletedClaimOfALiveConnectionIsPutBack() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let now: Int64 = 4_000_000
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await b.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            let bobEpoch = try await b.cluster.claimConnection(Self.bob, nowMs: now)
            // The database was unreachable for 60 s: both nodes' heartbeats are 60 s old.
            try await a.store.client.query("UPDATE relay_nodes SET heartbeat_at_ms = heartbeat_at_ms - 60000", logger: ClusterTestDatabase.logger)
            try await a.cluster.heartbeat(nowMs: now + 60_000, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM connection_claims WHERE node_id = 'node-b'") == 1)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM relay_nodes") == 2)
            // node-b was really gone long enough to be reaped (A's own heartbeat fresh now): its claim goes.
            try await a.cluster.heartbeat(nowMs: now + 60_001, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM connection_claims") == 0)
            // node-b still holds bob's connection: its check puts the claim back (epoch still the latest).
            try await b.cluster.heartbeat(nowMs: now + 60_002, staleAfterMs: 15_000)
            try await b.cluster.reconcileClaims([(Self.bob, bobEpoch)], nowMs: now + 60_002, graceMs: 5_000)
            #expect(try await a.cluster.liveClaims([Self.bob], nowMs: now + 60_002) == [Self.bob: ConnectionClaim(node: "node-b", epoch: bobEpoch)])
            // A newer connection on node A releases: node B's older one gets nothing back.
            let newer = try await a.cluster.claimConnection(Self.bob, nowMs: now + 60_003)
            try await a.cluster.releaseConnection(Self.bob, epoch: newer)
            try await b.cluster.reconcileClaims([(Self.bob, bobEpoch)], nowMs: now + 60_004, graceMs: 5_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT count(*) FROM connection_claims") == 0)
        }
    }

    // sec-claims, finding 3: a claim whose release failed (its connection is gone) is deleted by this node's check,
    // once older than the grace; a fresh one (its connection still registering) and other nodes' claims stay.
    @Test func orphanedClaimsOfThisNodeAreDeletedAfterTheGrace() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let now: Int64 = 5_000_000
            try await a.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            try await b.cluster.heartbeat(nowMs: now, staleAfterMs: 15_000)
            _ = try await a.cluster.claimConnection(Self.alice, nowMs: now)
            let bobEpoch = try await b.cluster.claimConnection(Self.bob, nowMs: now)
            try await a.cluster.reconcileClaims([], nowMs: now + 1_000, graceMs: 5_000)
            #expect(try await a.cluster.liveClaims([Self.alice, Self.bob], nowMs: now).count == 2)
            try await a.cluster.reconcileClaims([], nowMs: now + 6_000, graceMs: 5_000)
            #expect(try await a.cluster.liveClaims([Self.alice, Self.bob], nowMs: now) == [Self.bob: ConnectionClaim(node: "node-b", epoch: bobEpoch)])
            // A held connection keeps its claim however old.
            try await b.cluster.reconcileClaims([(Self.bob, bobEpoch)], nowMs: now + 60_000, graceMs: 5_000)
            #expect(try await a.cluster.liveClaims([Self.bob], nowMs: now)[Self.bob]?.epoch == bobEpoch)
        }
    }

    // MARK: Online-only envelopes

    @Test func onlineOnlyRowIsTakenOnceAndNotAfterItsExpiry() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let frame = Data("typing".utf8)
            let id = try await a.cluster.putOnlineOnly(device: Self.bob, frame: frame, expiresAtMs: 30_000)
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask { try await a.cluster.takeOnlineOnly(id: id, nowMs: 1_000) != nil }
                group.addTask { try await b.cluster.takeOnlineOnly(id: id, nowMs: 1_000) != nil }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results.filter { $0 }.count == 1)
            let again = try await a.cluster.putOnlineOnly(device: Self.bob, frame: frame, expiresAtMs: 30_000)
            let taken = try await b.cluster.takeOnlineOnly(id: again, nowMs: 1_000)
            #expect(taken?.device == Self.bob && taken?.frame == frame)
            // Expired: not handed out; the heartbeat deletes what nobody took.
            let late = try await a.cluster.putOnlineOnly(device: Self.bob, frame: frame, expiresAtMs: 30_000)
            #expect(try await b.cluster.takeOnlineOnly(id: late, nowMs: 30_000) == nil)
            let stale = try await a.cluster.putOnlineOnly(device: Self.bob, frame: frame, expiresAtMs: 30_000)
            try await a.cluster.heartbeat(nowMs: 30_000, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT COUNT(*) FROM online_only") == 0)
            #expect(try await b.cluster.takeOnlineOnly(id: stale, nowMs: 1_000) == nil)
        }
    }

    // MARK: Token buckets

    @Test func tokenBucketsAreSharedAndAllOrNothing() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            // Keys as the relay makes them may hold NUL (TEXT cannot; the table keeps bytes).
            let pair = "pair:alice\u{0}bob"
            func take(_ key: String, cost: Int = 1) -> TokenTake { TokenTake(key: key, cost: cost, perMinute: 60, burst: 3) }
            let now: Int64 = 5_000_000
            for _ in 0..<3 { #expect(try await a.cluster.takeTokens([take(pair)], nowMs: now) == 0) }
            // Spent on A, refused on B: one token a second, so 1 000 ms.
            #expect(try await b.cluster.takeTokens([take(pair)], nowMs: now) == 1_000)
            #expect(try await b.cluster.takeTokens([take(pair)], nowMs: now + 400) == 600)
            // All or nothing: the device bucket is not debited when the pair bucket refuses.
            #expect(try await b.cluster.takeTokens([take("device:bob/2", cost: 3), take(pair)], nowMs: now + 400) == 600)
            #expect(try await a.cluster.takeTokens([take("device:bob/2", cost: 3)], nowMs: now + 400) == 0)
            // Refilled after a second; a cost above the burst counts as the burst; takes of one key add up.
            #expect(try await b.cluster.takeTokens([take(pair)], nowMs: now + 1_000) == 0)
            #expect(try await a.cluster.takeTokens([take("big", cost: 50)], nowMs: now) == 0)
            #expect(try await a.cluster.takeTokens([take("sum", cost: 2), take("sum", cost: 1)], nowMs: now) == 0)
            #expect(try await b.cluster.takeTokens([take("sum")], nowMs: now) == 1_000)
            // A limit that is off always admits and keeps nothing.
            #expect(try await a.cluster.takeTokens([TokenTake(key: "off", cost: 9, perMinute: 0, burst: 0)], nowMs: now) == 0)

            // 40 concurrent takes on both nodes of a bucket of 10 that barely refills: exactly 10 admitted.
            let admitted = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<40 {
                    let cluster = index % 2 == 0 ? a.cluster : b.cluster
                    group.addTask {
                        try await cluster.takeTokens([TokenTake(key: "race", cost: 1, perMinute: 0.001, burst: 10)], nowMs: now) == 0
                    }
                }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(admitted == 10)
            // A full bucket is pruned by the heartbeat (it equals a missing one).
            try await a.cluster.heartbeat(nowMs: now + 60_000, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT COUNT(*) FROM rate_buckets") == 1)  // "race" is still refilling
        }
    }

    // MARK: Upload leases

    @Test func uploadLeasesAreExclusiveAcrossNodes() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let blob = Data(repeating: 7, count: 16)
            #expect(try await a.cluster.acquireUploadLease(blobID: blob, holder: "1", nowMs: 0, untilMs: 10_000))
            // The same holder name on another node is another holder.
            #expect(try await !b.cluster.acquireUploadLease(blobID: blob, holder: "1", nowMs: 1_000, untilMs: 11_000))
            #expect(try await !a.cluster.acquireUploadLease(blobID: blob, holder: "2", nowMs: 1_000, untilMs: 11_000))
            #expect(try await a.cluster.acquireUploadLease(blobID: blob, holder: "1", nowMs: 1_000, untilMs: 11_000))  // renewed
            // A release by someone else changes nothing; the holder's release frees it.
            try await b.cluster.releaseUploadLease(blobID: blob, holder: "1")
            #expect(try await !b.cluster.acquireUploadLease(blobID: blob, holder: "9", nowMs: 2_000, untilMs: 12_000))
            try await a.cluster.releaseUploadLease(blobID: blob, holder: "1")
            #expect(try await b.cluster.acquireUploadLease(blobID: blob, holder: "9", nowMs: 2_000, untilMs: 12_000))
            // An expired lease is taken over; the heartbeat deletes ended ones.
            #expect(try await a.cluster.acquireUploadLease(blobID: blob, holder: "3", nowMs: 12_000, untilMs: 22_000))
            try await b.cluster.heartbeat(nowMs: 21_999, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT COUNT(*) FROM upload_leases") == 1)
            try await b.cluster.heartbeat(nowMs: 22_000, staleAfterMs: 15_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT COUNT(*) FROM upload_leases") == 0)

            let other = Data(repeating: 8, count: 16)
            let winners = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    let cluster = index % 2 == 0 ? a.cluster : b.cluster
                    group.addTask { try await cluster.acquireUploadLease(blobID: other, holder: "r\(index)", nowMs: 0, untilMs: 10_000) }
                }
                return try await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(winners == 1)
        }
    }

    // MARK: Call signals

    static func signal(
        from sender: DeviceAddress, to recipient: DeviceAddress = bob, sequence: UInt32, offer: Bool = false, expiresAtMs: Int64 = 100_000
    ) -> HeldCallSignal {
        HeldCallSignal(
            callID: Data(repeating: UInt8(truncatingIfNeeded: sender.deviceID), count: 16), sender: sender, recipient: recipient,
            sequence: sequence, isOffer: offer, receivedAtMs: 1_000, expiresAtMs: expiresAtMs, delivery: Data("d\(sequence)".utf8))
    }

    @Test func aFailedHoldRecordsNoSequence() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let signals = a.cluster.callSignals
            let callID = Data(repeating: 1, count: 16)
            // The copy's sender handle holds a NUL, which PostgreSQL text refuses: the hold fails after the sequence
            // upsert, inside the same transaction.
            let bad = Self.signal(from: DeviceAddress(handle: "a\u{0}", deviceID: 1), sequence: 1)
            await #expect(throws: (any Error).self) {
                _ = try await signals.admitAndHold(
                    callID: callID, sender: Self.alice, recipient: Self.bob, sequence: 1, nowMs: 1_000, rememberUntilMs: 200_000, [bad])
            }
            // Sequence 1 was not recorded: the retry is admitted and held once; then it is a replay.
            let good = Self.signal(from: Self.alice, sequence: 1)
            let retried = try await b.cluster.callSignals.admitAndHold(
                callID: callID, sender: Self.alice, recipient: Self.bob, sequence: 1, nowMs: 1_000, rememberUntilMs: 200_000, [good])
            #expect(retried == 0)
            let replayed = try await signals.admitAndHold(
                callID: callID, sender: Self.alice, recipient: Self.bob, sequence: 1, nowMs: 1_000, rememberUntilMs: 200_000, [good])
            #expect(replayed == nil)
            let taken = try await signals.take(Self.bob, nowMs: 1_000)
            #expect(taken.map(\.sequence) == [1])
        }
    }

    @Test func callSignalCapsDropTheOldestNonOfferAndNeverAnOfferForAnotherKind() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let signals = a.cluster.callSignals
            // 10 from one account: the 2 oldest are dropped (8 per sending account).
            let ten = (1...10).map { Self.signal(from: Self.alice, sequence: UInt32($0)) }
            #expect(try await signals.hold(ten, nowMs: 1_000) == 2)
            #expect(try await b.cluster.callSignals.take(Self.bob, nowMs: 1_000).map(\.sequence) == Array(3...10))
            #expect(try await b.cluster.callSignals.take(Self.bob, nowMs: 1_000).isEmpty)  // taken once

            // 8 offers held: another kind from that account is refused, another offer replaces the oldest offer.
            let offers = (1...8).map { Self.signal(from: Self.alice, sequence: UInt32($0), offer: true) }
            #expect(try await signals.hold(offers, nowMs: 1_000) == 0)
            #expect(try await b.cluster.callSignals.hold([Self.signal(from: Self.alice, sequence: 9)], nowMs: 1_000) == 1)
            #expect(try await b.cluster.callSignals.hold([Self.signal(from: Self.alice, sequence: 10, offer: true)], nowMs: 1_000) == 1)
            #expect(try await signals.isOfferWaiting(Self.bob, nowMs: 1_000))
            let held = try await signals.take(Self.bob, nowMs: 1_000)
            #expect(held.map(\.sequence) == Array(2...8) + [10])
            #expect(held.allSatisfy { $0.isOffer })
            #expect(held.last == Self.signal(from: Self.alice, sequence: 10, offer: true))
            #expect(try await !signals.isOfferWaiting(Self.bob, nowMs: 1_000))

            // 64 per device: 8 accounts with 8 each, then a ninth account's signal pushes out the oldest of the
            // account holding the most (all tie at 8: the one with the oldest signal, account 0).
            for account in 0..<8 {
                let sender = DeviceAddress(handle: "s\(account)", deviceID: 1)
                #expect(try await signals.hold((1...8).map { Self.signal(from: sender, sequence: UInt32($0)) }, nowMs: 1_000) == 0)
            }
            #expect(try await b.cluster.callSignals.hold([Self.signal(from: DeviceAddress(handle: "s8", deviceID: 1), sequence: 1)], nowMs: 1_000) == 1)
            let all = try await signals.take(Self.bob, nowMs: 1_000)
            #expect(all.count == 64)
            #expect(all.filter { $0.sender.handle == "s0" }.map(\.sequence) == Array(2...8))
            #expect(all.last?.sender.handle == "s8")
        }
    }

    @Test func callSignalsExpireAndAreTakenOnceAcrossNodes() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let signals = a.cluster.callSignals
            _ = try await signals.hold(
                [Self.signal(from: Self.alice, sequence: 1, offer: true, expiresAtMs: 5_000), Self.signal(from: Self.alice, sequence: 2)],
                nowMs: 1_000)
            #expect(try await !signals.isOfferWaiting(Self.bob, nowMs: 5_000))  // the offer expired
            #expect(try await signals.purge(nowMs: 5_000) == 1)
            let results = try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask { try await a.cluster.callSignals.take(Self.bob, nowMs: 5_000).count }
                group.addTask { try await b.cluster.callSignals.take(Self.bob, nowMs: 5_000).count }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(results.sorted() == [0, 1])
        }
    }

    @Test func callSequencesRejectReplaysUntilForgotten() async throws {
        try await ClusterTestDatabase.withNodes { a, b in
            let call = Data(repeating: 1, count: 16)
            func admit(_ cluster: PostgresCluster, _ sequence: UInt32, now: Int64 = 1_000, until: Int64 = 10_000) async throws -> Bool {
                try await cluster.callSignals.admitSequence(
                    callID: call, sender: Self.alice, recipient: Self.bob, sequence: sequence, nowMs: now, rememberUntilMs: until)
            }
            #expect(try await admit(a.cluster, 5))
            #expect(try await !admit(b.cluster, 5))
            #expect(try await !admit(b.cluster, 4))
            #expect(try await admit(b.cluster, 6, until: 8_000))  // the memory keeps the later end, 10 000
            #expect(try await !admit(a.cluster, 1, now: 9_999))
            #expect(try await admit(a.cluster, 1, now: 10_000))  // forgotten at its end
            // Another recipient device has its own sequence.
            #expect(
                try await a.cluster.callSignals.admitSequence(
                    callID: call, sender: Self.alice, recipient: DeviceAddress(handle: "bob", deviceID: 3), sequence: 1, nowMs: 1_000,
                    rememberUntilMs: 10_000))
            _ = try await a.cluster.callSignals.purge(nowMs: 20_000)
            #expect(try await ClusterTestDatabase.count(a.store, "SELECT COUNT(*) FROM call_sequences") == 0)
        }
    }

    @Test func clusterMigrationIsRecordedAndNodeIDsAreChecked() async throws {
        try await ClusterTestDatabase.withNodes { a, _ in
            let applied = try await a.store.appliedMigrations()
            #expect(applied.contains("cluster-v1") && applied.contains("cluster-v2"))
            let again = try await a.store.migrate()
            #expect(again.isEmpty)
            #expect(throws: StoreError.self) { try a.store.cluster(nodeID: "has space") }
            #expect(throws: StoreError.self) { try a.store.cluster(nodeID: "") }
            #expect(throws: StoreError.self) { try a.store.cluster(nodeID: String(repeating: "n", count: 65)) }
            #expect(PostgresCluster.isValidNodeID("relay-1.example_org"))
            // The dedicated listening connection's configuration: from the store's URL, errors never with the password.
            let listen = try PostgresRelayStore.listenConfiguration(url: "postgres://u:secret@db.example:6543/flitz?sslmode=require")
            #expect(listen.host == "db.example" && listen.port == 6543 && listen.username == "u" && listen.database == "flitz")
            #expect(listen.tls.isEnforced)
            #expect(!(try PostgresRelayStore.listenConfiguration(url: "postgres://u@h/flitz?sslmode=disable").tls.isAllowed))
            let socket = try PostgresRelayStore.listenConfiguration(url: "postgres://u@%2Fvar%2Frun%2Fpostgresql/flitz")
            #expect(socket.unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
            for bad in ["postgres://u:secret@h/flitz?sslmode=bogus", "mysql://u:secret@h/flitz", "postgres://u:secret@h/"] {
                do {
                    _ = try PostgresRelayStore.listenConfiguration(url: bad)
                    Issue.record("accepted \(bad)")
                } catch {
                    #expect(!"\(error)".contains("secret"))
                }
            }
        }
    }
}

/// Notices a node received, in order, and waits on them (never by sleeping: a waiter is resumed when a notice
/// arrives that satisfies it, or after a generous failure guard).
actor NoticeInbox {
    private(set) var received: [ClusterNotice] = []
    private var waiters: [UInt64: (predicate: @Sendable ([ClusterNotice]) -> Bool, continuation: CheckedContinuation<Bool, Never>)] = [:]
    private var nextWaiter: UInt64 = 0

    func append(_ notice: ClusterNotice) {
        received.append(notice)
        for (id, waiter) in waiters where waiter.predicate(received) {
            waiters[id] = nil
            waiter.continuation.resume(returning: true)
        }
    }

    /// Whether `predicate` holds of the notices received, now or within `timeout`.
    func wait(timeout: Duration = .seconds(90), _ predicate: @escaping @Sendable ([ClusterNotice]) -> Bool) async -> Bool {
        if predicate(received) { return true }
        nextWaiter += 1
        let id = nextWaiter
        let guardTask = Task {
            try? await Task.sleep(for: timeout)
            self.expire(id)
        }
        defer { guardTask.cancel() }
        return await withCheckedContinuation { continuation in waiters[id] = (predicate, continuation) }
    }

    private func expire(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.continuation.resume(returning: false)
    }
}

/// A fresh database per test on the server of `FLITZ_TEST_POSTGRES_URL` (a maintenance URL: `scripts/postgres.sh
/// start` prints one), with two migrated nodes whose store clients and clusters run for the test's duration.
/// node-a listens on a pooled connection, node-b on a dedicated one.
enum ClusterTestDatabase {
    struct Missing: Error, CustomStringConvertible {
        var description: String { "FLITZ_TEST_POSTGRES_URL is not set: start a server with scripts/postgres.sh start and export its URL" }
    }

    /// One node: its store, its cluster and what its cluster's `notices()` delivered.
    struct Node: Sendable {
        var store: PostgresRelayStore
        var cluster: PostgresCluster
        var inbox: NoticeInbox
        var url: String
    }

    static let logger = Logger(label: "flitz.test.postgres-cluster")

    static func url(_ url: String, database name: String) throws -> String {
        guard var components = URLComponents(string: url) else { throw Missing() }
        components.path = "/" + name
        return try #require(components.string)
    }

    /// Runs `body` with a client of `url` running.
    static func withAdmin<T: Sendable>(_ url: String, _ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let client = PostgresClient(configuration: try PostgresRelayStore.configuration(url: url), backgroundLogger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    static func count(_ store: PostgresRelayStore, _ sql: String) async throws -> Int64 {
        for try await count in try await store.client.query(PostgresQuery(unsafeSQL: sql), logger: logger).decode(Int64.self) { return count }
        return -1
    }

    /// Two nodes, "node-a" and "node-b", each listening (their first `.resync` received) before `body` runs.
    static func withNodes(_ body: @Sendable (Node, Node) async throws -> Void) async throws {
        let maintenance = try await TestPostgres.maintenanceURL()
        // Hex only: safe in the SQL text (CREATE DATABASE takes no bind parameters).
        let name = "flitz_cluster_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await withAdmin(maintenance) { admin in
            _ = try await admin.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(name)"), logger: logger)
        }
        let databaseURL = try url(maintenance, database: name)
        do {
            let configuration = try PostgresRelayStore.configuration(url: databaseURL)
            let stores = (0..<2).map { _ in
                PostgresRelayStore(configuration: configuration, makeID: { Data((0..<16).map { _ in UInt8.random(in: 0...255) }) }, logger: logger)
            }
            // node-a listens on a connection leased from its pool, node-b on a dedicated one (as the relay does).
            let nodes = try zip(stores, ["node-a", "node-b"]).map { store, id in
                Node(
                    store: store,
                    cluster: try PostgresCluster(
                        store: store, nodeID: id, staleAfterMs: 15_000,
                        listenConfiguration: id == "node-b" ? try PostgresRelayStore.listenConfiguration(url: databaseURL) : nil,
                        reconnectDelay: .milliseconds(50)),
                    inbox: NoticeInbox(), url: databaseURL)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in nodes {
                    let notices = node.cluster.notices()
                    group.addTask { for await notice in notices { await node.inbox.append(notice) } }
                    group.addTask { await node.store.client.run() }
                }
                defer { group.cancelAll() }
                for node in nodes { try await node.store.migrate() }
                // The devices the tests claim exist (a claim needs its device row, cluster.md 4): alice/1, bob/2.
                _ = try await RelayStoreTests.register(nodes[0].store, "alice")
                _ = try await RelayStoreTests.register(nodes[0].store, "bob")
                _ = try await nodes[0].store.registerDevice(
                    handle: "bob", accountIdentityKey: RelayStoreTests.bytes(9, 32), device: RelayStoreTests.newDevice(2), atMs: 1_000,
                    maxDevices: 5)
                for node in nodes { group.addTask { try await node.cluster.run() } }
                for node in nodes {
                    guard await node.inbox.wait({ $0.contains(.resync) }) else { throw StoreError(.backend, "node did not start listening") }
                }
                try await body(nodes[0], nodes[1])
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
}
