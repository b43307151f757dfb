@testable import FlitzRelay
import FlitzCrypto
import FlitzWire
import Foundation
import Testing

/// Delivery rules over real WebSockets and a real SQLite file (`protocol/relay.md`, "Delivery window",
/// "Acknowledge", "Connections"): a bounded window, redelivery of what was not acknowledged (same id, same
/// bytes, queue order), acknowledgements on later connections, idempotent acknowledgements, and a newer
/// connection replacing an older one.
@Suite struct DeliveryTests {
    /// Registers alice and bob (device 1 each), each on its own connection.
    func registerAliceAndBob(_ relay: RelayHarness) async throws -> (TestIdentity, TestIdentity) {
        let alice = TestIdentity("alice"), bob = TestIdentity("bob")
        try await relay.connect { _ = try await $0.register(alice) }
        try await relay.connect { _ = try await $0.register(bob) }
        return (alice, bob)
    }

    /// `count` envelopes to `handle` with distinct ids (index big-endian in the last bytes) and distinct
    /// random ciphertexts of `size` bytes.
    func envelopes(_ range: Range<Int>, to handle: String, size: Int = 40) -> [WireOutgoingEnvelope] {
        range.map { index in
            var envelope = WireOutgoingEnvelope()
            var id = Data(repeating: 0xE0, count: 8)
            withUnsafeBytes(of: UInt64(index).bigEndian) { id.append(contentsOf: $0) }
            envelope.envelopeID = id
            envelope.recipientHandle = handle
            envelope.recipientDeviceID = 1
            envelope.ciphertext = SystemRandom().bytes(size)
            return envelope
        }
    }

    /// Submits `envelopes` as `sender` in Submits of at most `batch`; every one must be accepted.
    func submit(_ envelopes: [WireOutgoingEnvelope], as sender: TestIdentity, _ relay: RelayHarness, batch: Int = 100) async throws {
        try await relay.connect { connection in
            try await connection.authenticate(sender)
            for start in stride(from: 0, to: envelopes.count, by: batch) {
                let outcomes = try await connection.submit(Array(envelopes[start..<min(start + batch, envelopes.count)]))
                #expect(outcomes.allSatisfy { !$0.hasError }, "\(outcomes.filter(\.hasError))")
            }
        }
    }

    func acknowledge(_ envelopes: some Sequence<WireEnvelope>, on connection: TestConnection) async throws {
        var ack = WireAcknowledge()
        ack.envelopeIds = envelopes.map(\.envelopeID)
        let reply = try await connection.request(.acknowledge(ack))
        #expect(reply.body == .ok(WireOk()), "\(reply)")
    }

    /// A request every relay answers `Ok` without side effects: when its answer arrives, every frame the
    /// relay sent before handling it has arrived too (one connection's frames are handled in order).
    func roundTrip(_ connection: TestConnection) async throws {
        let reply = try await connection.request(.acknowledge(WireAcknowledge()))
        #expect(reply.body == .ok(WireOk()))
    }

    @Test func theWindowBoundsItemsInFlightAndAcknowledgementsReopenIt() async throws {
        try await RelayHarness.run(configure: { $0.deliveryWindow = 50 }) { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let queued = envelopes(0..<130, to: "bob")
            try await submit(queued, as: alice, relay)
            let monitor = relay.app.relay.registry.monitor
            try await relay.connect { connection in
                let reply = try await connection.request(bob.authenticate(nonce: connection.nonce, deviceID: 1))
                guard case .authenticateResult = reply.body else { Issue.record("\(reply)"); return }
                var received: [WireEnvelope] = []
                while received.count < 50 { received += try await connection.nextDeliver().envelopes }
                try await roundTrip(connection)
                #expect(received.count == 50, "exactly the window is sent")
                #expect(connection.stashedFrames.isEmpty, "no Deliver and no QueueDrained while the window is full")
                #expect(monitor.snapshot.maxInFlight == 50)
                #expect(monitor.snapshot.windowsFull == 1)

                // Acknowledging 20 opens 20 places, and no more.
                try await acknowledge(received[0..<20], on: connection)
                while received.count < 70 { received += try await connection.nextDeliver().envelopes }
                try await roundTrip(connection)
                #expect(received.count == 70)
                #expect(connection.stashedFrames.isEmpty)

                // Acknowledging as they come drains everything, in queue order, then QueueDrained.
                try await acknowledge(received[20..<70], on: connection)
                drain: while true {
                    let frame = try await connection.next()
                    switch frame.body {
                    case .deliver(let deliver):
                        received += deliver.envelopes
                        try await acknowledge(deliver.envelopes, on: connection)
                    case .queueDrained: break drain
                    default: Issue.record("unexpected \(frame)")
                    }
                }
                #expect(received.map(\.envelopeID) == queued.map(\.envelopeID))
                #expect(received.map(\.ciphertext) == queued.map(\.ciphertext))
                #expect(monitor.snapshot.maxInFlight == 50, "never more than the window in flight")
            }
            // Everything was acknowledged: nothing comes again.
            let again = try await relay.connect { try await $0.authenticate(bob) }
            #expect(again.flatMap(\.envelopes).isEmpty)
        }
    }

    @Test func aLostAcknowledgementRedeliversTheSameEnvelopesInQueueOrderBeforeNewerOnes() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let first = envelopes(0..<3, to: "bob", size: 300)
            try await submit(first, as: alice, relay)
            // Received, then the connection drops before the acknowledgement.
            let seen = try await relay.connect { try await $0.authenticate(bob) }.flatMap(\.envelopes)
            #expect(seen.map(\.envelopeID) == first.map(\.envelopeID))
            let newer = envelopes(3..<5, to: "bob", size: 300)
            try await submit(newer, as: alice, relay)
            let redelivered = try await relay.connect { connection in
                let delivered = try await connection.authenticate(bob).flatMap(\.envelopes)
                try await acknowledge(delivered, on: connection)
                return delivered
            }
            #expect(redelivered.map(\.envelopeID) == (first + newer).map(\.envelopeID), "the old ones first, in queue order")
            #expect(Array(redelivered.prefix(3)) == seen, "same ids, same bytes, same times")
            #expect(redelivered.map(\.ciphertext) == (first + newer).map(\.ciphertext))
            #expect(try await relay.connect { try await $0.authenticate(bob) }.isEmpty)
        }
    }

    @Test func anAcknowledgementOnALaterConnectionCountsAndIsIdempotent() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let queued = envelopes(0..<2, to: "bob")
            try await submit(queued, as: alice, relay)
            // Delivered on the first connection, acknowledged on the second, twice, and again on a third.
            let delivered = try await relay.connect { try await $0.authenticate(bob) }.flatMap(\.envelopes)
            #expect(delivered.count == 2)
            try await relay.connect { connection in
                var ack = WireAcknowledge()
                ack.envelopeIds = delivered.map(\.envelopeID)
                // Sent before reading the drain: it refers to the first connection's delivery.
                let reply = try await connection.request(bob.authenticate(nonce: connection.nonce, deviceID: 1))
                guard case .authenticateResult = reply.body else { Issue.record("\(reply)"); return }
                #expect(try await connection.request(.acknowledge(ack)).body == .ok(WireOk()))
                #expect(try await connection.request(.acknowledge(ack)).body == .ok(WireOk()), "acknowledging twice is fine")
            }
            try await relay.connect { connection in
                var ack = WireAcknowledge()
                ack.envelopeIds = delivered.map(\.envelopeID)
                let again = try await connection.authenticate(bob)
                #expect(again.isEmpty, "acknowledged: not delivered again")
                #expect(try await connection.request(.acknowledge(ack)).body == .ok(WireOk()), "and again on a later connection")
            }
            // Alice gets exactly one DELIVERED receipt per envelope.
            let receipts = try await relay.connect { try await $0.authenticate(alice) }.flatMap(\.receipts)
            #expect(receipts.map(\.envelopeID).sorted(by: { $0.lexicographicallyPrecedes($1) }) == queued.map(\.envelopeID))
            #expect(receipts.allSatisfy { $0.kind == .delivered })
        }
    }

    @Test func orderIsKeptAfterReconnectingWithSomeAcknowledged() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let queued = envelopes(0..<5, to: "bob")
            try await submit(queued, as: alice, relay)
            try await relay.connect { connection in
                let delivered = try await connection.authenticate(bob).flatMap(\.envelopes)
                #expect(delivered.map(\.envelopeID) == queued.map(\.envelopeID))
                try await acknowledge([delivered[1], delivered[3]], on: connection)
            }
            let later = envelopes(5..<6, to: "bob")
            try await submit(later, as: alice, relay)
            let again = try await relay.connect { try await $0.authenticate(bob) }.flatMap(\.envelopes)
            #expect(again.map(\.envelopeID) == [queued[0], queued[2], queued[4], later[0]].map(\.envelopeID))
        }
    }

    @Test func aNewConnectionReplacesTheOldOneAndGetsItsUnacknowledgedItems() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let queued = envelopes(0..<4, to: "bob")
            try await submit(queued, as: alice, relay)
            try await relay.connect { old in
                let onOld = try await old.authenticate(bob).flatMap(\.envelopes)
                #expect(onOld.count == 4)
                try await acknowledge(onOld.prefix(1), on: old)
                try await relay.connect { new in
                    let onNew = try await new.authenticate(bob).flatMap(\.envelopes)
                    #expect(try await old.isClosedByRelay(), "the old connection is closed")
                    #expect(onNew == Array(onOld.dropFirst()), "its unacknowledged items, same ids and bytes, in order")
                    // Later items go to the new connection.
                    let later = envelopes(4..<5, to: "bob")
                    try await submit(later, as: alice, relay)
                    #expect(try await new.nextDeliver().envelopes.map(\.envelopeID) == later.map(\.envelopeID))
                }
            }
        }
    }

    /// Another device's envelope cannot be deleted by acknowledging its id.
    @Test func aForeignAcknowledgementDeletesNothing() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let carol = TestIdentity("carol")
            try await relay.connect { _ = try await $0.register(carol) }
            let forCarol = envelopes(0..<1, to: "carol")
            try await submit(forCarol, as: alice, relay)
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                var ack = WireAcknowledge()
                ack.envelopeIds = forCarol.map(\.envelopeID)
                _ = try await connection.request(.acknowledge(ack))
            }
            let delivered = try await relay.connect { try await $0.authenticate(carol) }.flatMap(\.envelopes)
            #expect(delivered.map(\.ciphertext) == forCarol.map(\.ciphertext))
        }
    }

    /// An id never queued for this device is refused with UNKNOWN_ENVELOPE (relay.md, "Acknowledge").
    @Test func aForeignAcknowledgementIsRejected() async throws {
        try await RelayHarness.run { relay in
            let (alice, bob) = try await registerAliceAndBob(relay)
            let carol = TestIdentity("carol")
            try await relay.connect { _ = try await $0.register(carol) }
            let forCarol = envelopes(0..<1, to: "carol")
            try await submit(forCarol, as: alice, relay)
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                var ack = WireAcknowledge()
                ack.envelopeIds = forCarol.map(\.envelopeID)
                #expect(try await connection.request(.acknowledge(ack)).errorCode == .unknownEnvelope)
            }
        }
    }
}
