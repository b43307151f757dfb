import FlitzStore
import FlitzWire
import Foundation
import Testing

@testable import FlitzRelay

/// Two relays in this process on one real PostgreSQL database (`protocol/cluster.md`): what one node accepts for a
/// device connected to the other reaches it (envelopes by notice, and by the periodic check when the notice is lost;
/// call signals; online-only envelopes), a device connecting to the second node takes over from the first, and a rate
/// limit spent on one node holds on the other.
@Suite(.serialized) struct ClusterRelayTests {
    /// Registers `identity` on `node` and leaves.
    func register(_ identity: TestIdentity, on node: RelayHarness) async throws {
        try await node.connect { connection in _ = try await connection.register(identity) }
    }

    @Test func envelopeFromNodeZeroReachesADeviceOnNodeOne() async throws {
        try await ClusterHarness.run { nodes in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await register(alice, on: nodes[0])
            try await register(bob, on: nodes[1])
            try await nodes[1].connect { bobConnection in
                try await bobConnection.authenticate(bob)
                try await nodes[0].connect { aliceConnection in
                    try await aliceConnection.authenticate(alice)
                    let outcomes = try await aliceConnection.submit([outgoing(1, to: "bob")])
                    #expect(outcomes.count == 1 && !outcomes[0].hasError)
                }
                // Delivered by node 1, woken by node 0's `queued` notice.
                let frame = try await bobConnection.next(within: .seconds(60))
                guard case .deliver(let deliver) = frame.body else { throw Failure("expected Deliver, got \(frame)") }
                #expect(deliver.envelopes.map(\.envelopeID) == [Data(repeating: 1, count: 16)])
                #expect(deliver.envelopes.first?.senderHandle == "alice")
                #expect(deliver.envelopes.first?.ciphertext == Data("ciphertext-1".utf8))
            }
        }
    }

    @Test func periodicCheckDeliversWhatNoNoticeAnnounced() async throws {
        try await ClusterHarness.run { nodes in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await register(alice, on: nodes[0])
            try await register(bob, on: nodes[1])
            try await nodes[1].connect { bobConnection in
                try await bobConnection.authenticate(bob)
                // Queued straight in the database: no node wakes anything or publishes a notice (a lost notice).
                let now = nodes[0].clock.nowMs()
                let outcomes = try await nodes[0].app.relay.store.submit(
                    sender: DeviceAddress(handle: "alice", deviceID: 1),
                    envelopes: [
                        EnvelopeSubmission(
                            envelopeID: Data(repeating: 7, count: 16), recipient: DeviceAddress(handle: "bob", deviceID: 1),
                            ciphertext: Data("unannounced".utf8), expiresAtMs: now + 60_000, routeExpiresAtMs: now + 60_000)
                    ], atMs: now, queueLimit: 100)
                guard case .accepted = outcomes.first else { throw Failure("not accepted: \(outcomes)") }
                // Node 1's periodic check finds bob's queue past what his connection was sent and wakes it.
                await nodes[1].app.relay.clusterCheck()
                let frame = try await bobConnection.next(within: .seconds(60))
                guard case .deliver(let deliver) = frame.body else { throw Failure("expected Deliver, got \(frame)") }
                #expect(deliver.envelopes.map(\.ciphertext) == [Data("unannounced".utf8)])
            }
        }
    }

    /// Queues one envelope for bob straight in the database (no wake, no notice), `byte` its id's bytes.
    func queueUnannounced(_ byte: UInt8, on node: RelayHarness) async throws {
        let now = node.clock.nowMs()
        let outcomes = try await node.app.relay.store.submit(
            sender: DeviceAddress(handle: "alice", deviceID: 1),
            envelopes: [
                EnvelopeSubmission(
                    envelopeID: Data(repeating: byte, count: 16), recipient: DeviceAddress(handle: "bob", deviceID: 1),
                    ciphertext: Data("unannounced-\(byte)".utf8), expiresAtMs: now + 60_000, routeExpiresAtMs: now + 60_000)
            ], atMs: now, queueLimit: 100)
        guard case .accepted = outcomes.first else { throw Failure("not accepted: \(outcomes)") }
    }

    /// An `Acknowledge` of nothing: its `Ok` comes after every frame (and pump) the connection handled before it.
    func roundTrip(_ connection: TestConnection) async throws {
        let reply = try await connection.request(.acknowledge(WireAcknowledge()))
        #expect(reply.body == .ok(WireOk()))
    }

    @Test func periodicCheckLeavesAnIdleConnectionWithAnEmptyQueueAlone() async throws {
        try await ClusterHarness.run { nodes in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await register(alice, on: nodes[0])
            try await register(bob, on: nodes[1])
            // Bob receives and acknowledges one item: his queue is empty, its head (highest sequence) is 1.
            try await queueUnannounced(7, on: nodes[0])
            try await nodes[1].connect { connection in
                let delivered = try await connection.authenticate(bob)
                #expect(delivered.flatMap(\.envelopes).count == 1)
                var ack = WireAcknowledge()
                ack.envelopeIds = delivered.flatMap(\.envelopes).map(\.envelopeID)
                #expect(try await connection.request(.acknowledge(ack)).body == .ok(WireOk()))
            }
            // A new connection has sent nothing (0 < head 1) and its queue is empty.
            try await nodes[1].connect { connection in
                #expect(try await connection.authenticate(bob).isEmpty)
                let monitor = nodes[1].app.relay.registry.monitor
                let base = monitor.snapshot.queueReads
                // The first check wakes it once: it reads and finds nothing.
                await nodes[1].app.relay.clusterCheck()
                try await roundTrip(connection)
                #expect(monitor.snapshot.queueReads == base + 1)
                // Later checks with the head unchanged read nothing.
                await nodes[1].app.relay.clusterCheck()
                await nodes[1].app.relay.clusterCheck()
                try await roundTrip(connection)
                #expect(monitor.snapshot.queueReads == base + 1)
                // A new item (head 2, still no notice): the next check wakes it and it is delivered.
                try await queueUnannounced(8, on: nodes[0])
                await nodes[1].app.relay.clusterCheck()
                let frame = try await connection.next(within: .seconds(60))
                guard case .deliver(let deliver) = frame.body else { throw Failure("expected Deliver, got \(frame)") }
                #expect(deliver.envelopes.map(\.envelopeID) == [Data(repeating: 8, count: 16)])
                #expect(monitor.snapshot.queueReads == base + 2)
            }
        }
    }

    @Test func aCancelledWaitForAnUploadLeaseGivesUpWithoutRunningTheUpload() async throws {
        try await ClusterHarness.run { nodes in
            guard let other = nodes[1].app.relay.cluster?.cluster else { throw Failure("not a cluster node") }
            let id = Data(repeating: 0x42, count: 16)
            let now = nodes[1].clock.nowMs()
            // Node 1 holds the upload's lease for ten minutes.
            #expect(try await other.acquireUploadLease(blobID: id, holder: "node-1-patch", nowMs: now, untilMs: now + 600_000))
            let relay = nodes[0].app.relay
            let waiting = Task { await relay.withUploadLock(id) { 1 } }
            waiting.cancel()
            #expect(await waiting.value == nil)
            // Once node 1 lets go, node 0 takes the lease and runs the upload.
            try await other.releaseUploadLease(blobID: id, holder: "node-1-patch")
            #expect(await relay.withUploadLock(id) { 2 } == 2)
        }
    }

    @Test func framesThisNodeRefusesNeverReachTheSharedBuckets() async throws {
        try await ClusterHarness.run { nodes in
            let limiter = nodes[0].app.relay.limiter
            let burst = limiter.limits.registerAddress.burst
            let before = limiter.sharedTakes
            try await nodes[0].connect { connection in
                var limited = 0
                for index in 0..<(2 * burst) {
                    var register = WireRegister()
                    register.handle = "flood\(index)"
                    let reply = try await connection.request(.register(register))
                    if case .error(let error) = reply.body, error.code == .rateLimited { limited += 1 }
                }
                // One source address: the first `burst` are admitted (and asked of the database), the rest are
                // refused by this node's own buckets without a database round trip.
                #expect(limited == burst)
            }
            #expect(limiter.sharedTakes - before == burst)
        }
    }

    @Test func invalidHandlesShareOneBucketKey() {
        #expect(RateLimiter.handleKey("alice") == "alice")
        #expect(RateLimiter.handleKey(String(repeating: "a", count: 5_000)) == "invalid")
        #expect(RateLimiter.handleKey("Alice") == "invalid" && RateLimiter.handleKey("a\u{0}b") == "invalid")
        var register = WireRegister()
        register.handle = String(repeating: "x", count: 10_000)
        #expect(RateLimiter.takes(unauthenticated: .register(register), source: "10.0.0.1").map(\.1) == ["10.0.0.1", "invalid"])
    }

    @Test func periodicCheckHandsOverACallSignalWhoseNoticeWasLost() async throws {
        try await ClusterHarness.run { nodes in
            let bob = TestIdentity("bob")
            try await register(TestIdentity("alice"), on: nodes[0])
            try await register(bob, on: nodes[1])
            try await nodes[1].connect { bobConnection in
                _ = try await bobConnection.authenticateCollecting(bob.authenticate(nonce: bobConnection.nonce, deviceID: 1, callSignals: true))
                // Held straight in the database: no notice (a lost `s` notice).
                let now = nodes[0].clock.nowMs()
                var delivery = WireCallSignalDelivery()
                delivery.callID = callID(0xD1)
                delivery.kind = .callOffer
                delivery.senderHandle = "alice"
                delivery.senderDeviceID = 1
                delivery.recipientDeviceID = 1
                delivery.sequence = 1
                delivery.expiresAtMs = now + 60_000
                delivery.ciphertext = Data("held".utf8)
                let held = HeldCallSignal(
                    callID: callID(0xD1), sender: DeviceAddress(handle: "alice", deviceID: 1), recipient: DeviceAddress(handle: "bob", deviceID: 1),
                    sequence: 1, isOffer: true, receivedAtMs: now, expiresAtMs: now + 60_000, delivery: try delivery.serializedData())
                guard let signals = nodes[0].app.relay.cluster?.cluster.callSignals else { throw Failure("not a cluster node") }
                #expect(try await signals.hold([held], nowMs: now) == 0)
                await nodes[1].app.relay.clusterCheck()
                let frame = try await bobConnection.next(within: .seconds(60))
                guard let received = frame.callSignalDelivery else { throw Failure("expected CallSignalDelivery, got \(frame)") }
                #expect(received.callID == callID(0xD1) && received.ciphertext == Data("held".utf8))
            }
        }
    }

    @Test func secondNodeTakesOverAndTheFirstClosesTheOlderConnection() async throws {
        try await ClusterHarness.run { nodes in
            let bob = TestIdentity("bob")
            try await register(bob, on: nodes[0])
            try await nodes[0].connect { first in
                try await first.authenticate(bob)
                #expect(nodes[0].app.relay.isConnected(handle: "bob", deviceID: 1))
                try await nodes[1].connect { second in
                    try await second.authenticate(bob)
                    // Node 0 closes its older connection on node 1's `claimed` notice (cluster.md 1.1).
                    try await first.waitUntilClosedByRelay()
                    #expect(!nodes[0].app.relay.isConnected(handle: "bob", deviceID: 1))
                    #expect(nodes[1].app.relay.isConnected(handle: "bob", deviceID: 1))
                    // The newer connection stays usable, and a check on node 1 keeps it (its claim is the live one).
                    await nodes[1].app.relay.clusterCheck()
                    let reply = try await second.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                    guard case .pushEndpointStatus = reply.body else { throw Failure("expected PushEndpointStatus, got \(reply)") }
                    #expect(nodes[1].app.relay.isConnected(handle: "bob", deviceID: 1))
                }
            }
        }
    }

    @Test func periodicCheckClosesAConnectionWhoseClaimMovedWithoutANotice() async throws {
        try await ClusterHarness.run { nodes in
            let bob = TestIdentity("bob")
            try await register(bob, on: nodes[0])
            try await nodes[0].connect { connection in
                try await connection.authenticate(bob)
                // Node 1 claims bob without telling anyone (a lost `claimed` notice).
                guard let other = nodes[1].app.relay.cluster?.cluster else { throw Failure("not a cluster node") }
                _ = try await other.claimConnection(DeviceAddress(handle: "bob", deviceID: 1), nowMs: nodes[1].clock.nowMs())
                #expect(nodes[0].app.relay.isConnected(handle: "bob", deviceID: 1))
                await nodes[0].app.relay.clusterCheck()
                try await connection.waitUntilClosedByRelay()
                #expect(!nodes[0].app.relay.isConnected(handle: "bob", deviceID: 1))
            }
        }
    }

    @Test func callSignalAndOnlineOnlyEnvelopeCrossNodes() async throws {
        try await ClusterHarness.run { nodes in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await register(alice, on: nodes[0])
            try await register(bob, on: nodes[1])
            try await nodes[1].connect { bobConnection in
                _ = try await bobConnection.authenticateCollecting(bob.authenticate(nonce: bobConnection.nonce, deviceID: 1, callSignals: true))
                try await nodes[0].connect { aliceConnection in
                    try await aliceConnection.authenticate(alice)
                    let reply = try await aliceConnection.sendCallSignal(signal(.callOffer, callID(0xC1), to: "bob", devices: [1], sequence: 1))
                    guard let result = reply.callSignalResult else { throw Failure("expected CallSignalResult, got \(reply)") }
                    // Not connected to node 0: held there, announced to node 1.
                    #expect(result.heldDeviceIds == [1])
                    var submit = WireSubmit()
                    submit.envelopes = [onlineOnly(9, to: "bob", device: 1, ciphertext: Data("typing".utf8))]
                    submit.selectedDevices = true
                    let typing = try await aliceConnection.request(.submit(submit))
                    guard case .submitResult(let typed) = typing.body else { throw Failure("expected SubmitResult, got \(typing)") }
                    #expect(typed.outcomes.count == 1 && !typed.outcomes[0].hasError, "\(typed)")
                    // A replay of the call signal's sequence is refused by the shared sequence memory.
                    let replay = try await aliceConnection.sendCallSignal(signal(.callOffer, callID(0xC1), to: "bob", devices: [1], sequence: 1))
                    #expect(replay.errorCode == .invalidArgument)
                }
                // Two frames, from two notices handled in order (their order on the wire is not what is tested).
                let frames = [try await bobConnection.next(within: .seconds(60)), try await bobConnection.next(within: .seconds(60))]
                guard let delivery = frames.compactMap(\.callSignalDelivery).first else { throw Failure("no CallSignalDelivery in \(frames)") }
                #expect(delivery.callID == callID(0xC1) && delivery.kind == .callOffer && delivery.senderHandle == "alice")
                #expect(delivery.ciphertext == ciphertext(.callOffer, 1, 1))
                let delivers = frames.compactMap { frame -> WireDeliver? in if case .deliver(let deliver) = frame.body { deliver } else { nil } }
                #expect(delivers.count == 1 && delivers.first?.envelopes.count == 1 && delivers.first?.envelopes.first?.onlineOnly == true)
                #expect(delivers.first?.envelopes.first?.ciphertext == Data("typing".utf8))
                // Taken once: nothing stays held for bob.
                #expect(try await nodes[0].app.relay.cluster?.cluster.callSignals.isOfferWaiting(
                    DeviceAddress(handle: "bob", deviceID: 1), nowMs: nodes[0].clock.nowMs()) == false)
            }
        }
    }

    @Test func rateLimitSpentOnOneNodeHoldsOnTheOther() async throws {
        try await ClusterHarness.run(configure: { $0.rateLimits.device = RateLimit(perMinute: 1, burst: 3) }) { nodes in
            let alice = TestIdentity("alice")
            try await register(alice, on: nodes[0])
            try await nodes[0].connect { connection in
                try await connection.authenticate(alice)
                for _ in 0..<3 {
                    let reply = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                    #expect(reply.errorCode == nil)
                }
            }
            try await nodes[1].connect { connection in
                try await connection.authenticate(alice)
                let reply = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                #expect(reply.errorCode == .rateLimited)
                if case .error(let error) = reply.body { #expect(error.retryAfterMs > 0) }
            }
        }
    }
}
