import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import FlitzRelay

/// Two relays on one real PostgreSQL database (`ClusterHarness`, `protocol/cluster.md` 4) deciding together what one
/// relay decides alone: push wake-ups (the ring limit, the urgent window, "connected" on the other node) through the
/// Web Push stand-in `PushReceiver`, one PATCH at a time per upload (`attachments.md` 4.3), and the held call signals
/// gauge counting every node's.
@Suite(.serialized) struct ClusterSharedStateTests {
    /// Alice submits one envelope per id to bob's device `bobDeviceID` with `urgency`, from `node`, each in its own Submit.
    func send(_ ids: [UInt8], urgency: WireUrgency, from node: RelayHarness, world: PushWorld, as sender: TestIdentity? = nil) async throws {
        let alice = sender ?? world.alice, bobDeviceID = world.bobDeviceID
        try await node.connect { connection in
            try await connection.authenticate(alice)
            for id in ids {
                var envelope = outgoing(id, to: "bob", device: bobDeviceID)
                envelope.urgency = urgency
                let outcomes = try await connection.submit([envelope])
                #expect(outcomes.count == 1 && !outcomes[0].hasError)
            }
        }
    }

    /// Waits until bob has no live claim on any node (his registering connection's release is committed).
    func waitUntilBobUnclaimed(_ nodes: [RelayHarness], world: PushWorld) async throws {
        guard let cluster = nodes[0].app.relay.cluster?.cluster else { throw Failure("not a cluster node") }
        let bob = DeviceAddress(handle: "bob", deviceID: world.bobDeviceID)
        let deadline = ContinuousClock.now + .seconds(60)
        while try await cluster.liveClaims([bob], nowMs: nodes[0].clock.nowMs())[bob] != nil {
            guard ContinuousClock.now < deadline else { throw TestTimeout() }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Waits until every node's push dispatcher has handled all it was handed.
    func idle(_ nodes: [RelayHarness]) async throws {
        for node in nodes {
            let monitor = node.app.relay.push.monitor
            try await within { await monitor.wait { $0.pending == 0 } }
        }
    }

    // MARK: Push (cluster.md 4, "Push")

    @Test func ringBurstIsSharedByTheNodes() async throws {
        try await PushReceiver.run { receiver in
            try await ClusterHarness.run(configure: allowPrivatePush) { nodes in
                let world = try await PushWorld.make(nodes[0], receiver: receiver)
                try await waitUntilBobUnclaimed(nodes, world: world)
                // Three rings through each node at one instant: one burst of 3 for bob in all, not 3 per node.
                try await send([1, 2, 3], urgency: .ring, from: nodes[0], world: world)
                try await idle(nodes)
                try await send([4, 5, 6], urgency: .ring, from: nodes[1], world: world)
                try await idle(nodes)
                #expect(receiver.count == 3)
                let sent = nodes.map { $0.app.relay.push.monitor.snapshot.sent }, coalesced = nodes.map { $0.app.relay.push.monitor.snapshot.coalesced }
                #expect(sent == [3, 0] && coalesced == [0, 3], "sent \(sent), coalesced \(coalesced)")
                // Just over one push.ringInterval (10 s) later the shared bucket has one more ring, for whichever node
                // asks (it refills continuously: 11 s is 1.1 rings).
                nodes[0].clock.advance(seconds: 11)
                try await send([7, 8], urgency: .ring, from: nodes[1], world: world)
                try await idle(nodes)
                #expect(receiver.count == 4)
                for request in receiver.requests {
                    #expect(try WebPush.decrypt(request.body, keys: world.bobKeys) == WakeClass.ring.payload)
                }
            }
        }
    }

    @Test func aDeviceConnectedToTheOtherNodeIsNotWoken() async throws {
        try await PushReceiver.run { receiver in
            try await ClusterHarness.run(configure: allowPrivatePush) { nodes in
                let world = try await PushWorld.make(nodes[0], receiver: receiver)
                try await waitUntilBobUnclaimed(nodes, world: world)
                try await nodes[1].connect { bob in
                    try await bob.authenticate(world.bob, deviceID: world.bobDeviceID)
                    // Accepted on node 0, which has no connection of bob's: his claim on node 1 says he is connected.
                    try await send([1], urgency: .urgent, from: nodes[0], world: world)
                    try await send([2], urgency: .ring, from: nodes[0], world: world)
                    try await idle(nodes)
                    var received: [Data] = []
                    while received.count < 2 {
                        let frame = try await bob.next(within: .seconds(60))
                        guard case .deliver(let deliver) = frame.body else { throw Failure("expected Deliver, got \(frame)") }
                        received += deliver.envelopes.map(\.envelopeID)
                    }
                    #expect(Set(received) == [Data(repeating: 1, count: 16), Data(repeating: 2, count: 16)])
                }
                #expect(receiver.count == 0)
                #expect(nodes.map { $0.app.relay.push.monitor.snapshot.sent } == [0, 0])
            }
        }
    }

    @Test func urgentWakesAreCoalescedAcrossNodes() async throws {
        try await PushReceiver.run { receiver in
            try await ClusterHarness.run(configure: allowPrivatePush) { nodes in
                let world = try await PushWorld.make(nodes[0], receiver: receiver)
                try await waitUntilBobUnclaimed(nodes, world: world)
                // Both nodes at once (alice on node 0, carol on node 1: one device cannot be connected twice): the
                // window's row lock lets exactly one of them send the first wake-up.
                let carol = TestIdentity("carol")
                try await nodes[1].connect { connection in _ = try await connection.register(carol) }
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await send([1, 2, 3], urgency: .urgent, from: nodes[0], world: world) }
                    group.addTask { try await send([4, 5, 6], urgency: .urgent, from: nodes[1], world: world, as: carol) }
                    try await group.waitForAll()
                }
                try await idle(nodes)
                #expect(receiver.count == 1)
                let counts = nodes.map { $0.app.relay.push.monitor.snapshot }
                #expect(counts.map(\.sent).reduce(0, +) == 1)
                #expect(counts.map(\.coalesced).reduce(0, +) == 5, "\(counts)")
                // Later urgent envelopes through the other node stay inside the same window.
                nodes[0].clock.advance(seconds: 30)
                try await send([7], urgency: .urgent, from: nodes[1], world: world)
                try await send([8], urgency: .urgent, from: nodes[0], world: world)
                try await idle(nodes)
                #expect(receiver.count == 1)
            }
        }
    }

    // MARK: Upload leases (cluster.md 4, attachments.md 4.3)

    @Test func aPatchOnTheOtherNodeWaitsForTheHolderAndThenGets409() async throws {
        try await ClusterHarness.run { nodes in
            try await nodes[0].withAccount("alice") { connection, _ in
                let token = try await connection.uploadCapability().token
                let data = blobBytes(262_144)
                let path = try await nodes[0].blobs.create(token: token, length: data.count)
                // Node 0: a PATCH of the whole upload that sends only its first half, holding the upload.
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: nodes[0].port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    }
                let first = try await channel.executeThenClose { inbound, outbound in
                    let head = "PATCH \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: \(data.count)\r\n"
                        + "Connection: close\r\n\r\n"
                    try await outbound.write(ByteBuffer(string: head))
                    try await outbound.write(ByteBuffer(bytes: data[0..<131_072]))
                    let holder = nodes[0].app.relay, waiter = nodes[1].app.relay
                    try await poll { holder.uploadLeaseEvents.withLock { $0.acquired } == 1 }
                    // Node 1: a concurrent PATCH of the same upload at the same offset waits for node 0's lease.
                    let second = Task { try await nodes[1].blobs.patch(path, token: token, offset: 0, data) }
                    try await poll { waiter.uploadLeaseEvents.withLock { $0.waited } == 1 }
                    #expect(waiter.uploadLeaseEvents.withLock { $0.acquired } == 0)
                    // Node 0's body completes: it commits; node 1's then finds the offset moved: 409, as on one relay.
                    try await outbound.write(ByteBuffer(bytes: data[131_072...]))
                    var received = ByteBuffer()
                    for try await var buffer in inbound { received.writeBuffer(&buffer) }
                    return (String(buffer: received), try await second.value)
                }
                #expect(first.0.hasPrefix("HTTP/1.1 204"), "\(first.0)")
                #expect(first.0.lowercased().contains("upload-offset: 262144"))
                #expect(first.1.status == 409, "\(first.1.text)")
                #expect(first.1.header("Upload-Offset") == "262144")
                #expect(nodes[1].app.relay.uploadLeaseEvents.withLock { $0.acquired } == 1)
                // The blob is node 0's bytes, readable through either node.
                let blob = try await nodes[1].blobs.send(.GET, "/v1/blobs/" + String(path.dropFirst("/v1/uploads/".count)), tus: false)
                #expect(blob.body == data)
            }
        }
    }

    // MARK: Metrics (cluster.md 4)

    @Test func heldCallSignalsGaugeCountsEveryNodesSignals() async throws {
        try await ClusterHarness.run { nodes in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await nodes[0].connect { connection in _ = try await connection.register(alice) }
            try await nodes[1].connect { connection in _ = try await connection.register(bob) }
            #expect(sample(await nodes[1].app.relay.metrics.exposition(), "flitz_call_signals_held") == 0)
            try await nodes[0].connect { connection in
                try await connection.authenticate(alice)
                // Bob is offline: the copy is held in the database, by node 0.
                let reply = try await connection.sendCallSignal(signal(.callOffer, callID(0xE1), to: "bob", devices: [1], sequence: 1))
                #expect(reply.callSignalResult?.heldDeviceIds == [1], "\(reply)")
            }
            // Node 1 accepted nothing, yet reports the cluster's held copy; so does node 0.
            for node in nodes {
                #expect(sample(await node.app.relay.metrics.exposition(), "flitz_call_signals_held") == 1)
            }
            // Expired copies are not counted.
            nodes[0].clock.advance(seconds: 3_600)
            #expect(sample(await nodes[1].app.relay.metrics.exposition(), "flitz_call_signals_held") == 0)
        }
    }
}
