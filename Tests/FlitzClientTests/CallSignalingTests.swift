import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Testing

@testable import FlitzClient

/// Call signals through the in-process relay (protocol/calls.md 3 and 4): encrypted per device (a prekey message
/// for a first contact), bound to their relay-visible fields, checked on receipt.
@Suite(.serialized) struct CallSignalingTests {
    static func callID(_ byte: UInt8) -> CallID { CallID(Data(repeating: byte, count: 16))! }

    static func offer(_ candidates: [CallCandidate] = []) -> CallMessage.Body {
        .offer(CallOffer(
            codecs: [.pcmu], ephemeralKey: X25519PrivateKey().publicKey, profiles: [.aeadAES256GCM, .aes128CMHMACSHA1_80], candidates: candidates))
    }

    /// The next call signal delivered to `client`'s device on a fresh connection (held ones come right after
    /// authentication), as delivered, undecrypted.
    static func nextDelivery(_ client: FlitzClient) async throws -> WireCallSignalDelivery? {
        let account = try #require(try client.store.loadAccount())
        return try await client.withAuthenticatedConnection(account, callSignals: true) { connection in
            await connection.nextCallSignal(timeout: .seconds(30))
        }
    }

    @Test func anOfferToAFirstContactIsHeldDecryptedAndChecked() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let aliceAccount = try #require(try alice.store.loadAccount())
        let bobAccount = try #require(try bob.store.loadAccount())
        let id = Self.callID(0x42)
        let candidate = CallCandidate(kind: .host, address: "127.0.0.1", port: 40_000, priority: 2_130_706_175)
        // Bob is offline: the offer (alice's first message to bob: a prekey message) is held for him.
        let sent = try await alice.withAuthenticatedConnection(aliceAccount) { connection in
            try await alice.sendCallSignal(Self.offer([candidate]), callID: id, to: "bob", devices: nil, sequence: 1, on: connection, account: aliceAccount)
        }
        #expect(sent.devices == [bobAccount.deviceID])
        #expect(sent.held == [bobAccount.deviceID] && sent.delivered.isEmpty)
        let delivery = try #require(try await Self.nextDelivery(bob))
        #expect(delivery.kind == .callOffer && delivery.sequence == 1 && delivery.senderHandle == "alice")
        #expect(delivery.expiresAtMs - delivery.receivedAtMs == 75_000, "an offer's default ttl")

        // A relay that changes any bound field is caught, and the session is left as it was.
        var moved = delivery
        moved.sequence = 2
        #expect(throws: CallSignalRefusal.self) {
            try bob.acceptCallSignal(moved, account: bobAccount, clockOffsetMilliseconds: 0, listChecked: true)
        }
        var otherCall = delivery
        otherCall.callID = Data(repeating: 0x43, count: 16)
        #expect(throws: CallSignalRefusal.self) {
            try bob.acceptCallSignal(otherCall, account: bobAccount, clockOffsetMilliseconds: 0, listChecked: true)
        }
        var longer = delivery
        longer.expiresAtMs += 5_000
        #expect(throws: CallSignalRefusal.self) {
            try bob.acceptCallSignal(longer, account: bobAccount, clockOffsetMilliseconds: 0, listChecked: true)
        }
        #expect(try bob.store.sessions(with: "alice").isEmpty, "no session from refused signals")

        // The genuine signal still decrypts (nothing advanced), exactly once.
        let signal = try bob.acceptCallSignal(delivery, account: bobAccount, clockOffsetMilliseconds: 0, listChecked: true)
        #expect(signal.callID == id && signal.senderDeviceID == aliceAccount.deviceID && signal.sequence == 1)
        #expect(signal.senderAccountIdentityKey == aliceAccount.accountIdentityKey)
        guard case .offer(let offer) = signal.message.body else {
            Issue.record("not an offer")
            return
        }
        #expect(offer.candidates == [candidate] && offer.profiles == [.aeadAES256GCM, .aes128CMHMACSHA1_80])
        #expect(try bob.store.sessions(with: "alice").count == 1)
        #expect(throws: CallSignalRefusal.self, "a replayed copy") {
            try bob.acceptCallSignal(delivery, account: bobAccount, clockOffsetMilliseconds: 0, listChecked: true)
        }
        await relay.stop()
    }

    @Test func aConnectedDeviceGetsSignalsAtOnceAndInOrder() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let aliceAccount = try #require(try alice.store.loadAccount())
        let bobAccount = try #require(try bob.store.loadAccount())
        let id = Self.callID(0x07)
        let received = try await bob.withAuthenticatedConnection(bobAccount, callSignals: true) { bobConnection in
            try await alice.withAuthenticatedConnection(aliceAccount) { connection in
                let offer = try await alice.sendCallSignal(Self.offer(), callID: id, to: "bob", devices: nil, sequence: 1, on: connection, account: aliceAccount)
                #expect(offer.delivered == [bobAccount.deviceID])
                _ = try await alice.sendCallSignal(
                    .ice(candidates: [], endOfCandidates: true), callID: id, to: "bob", devices: [bobAccount.deviceID], sequence: 2, on: connection,
                    account: aliceAccount)
                _ = try await alice.sendCallSignal(
                    .hangup(.noAnswer), callID: id, to: "bob", devices: [bobAccount.deviceID], sequence: 3, on: connection, account: aliceAccount)
            }
            var signals: [ReceivedCallSignal] = []
            for _ in 0..<3 {
                let delivery = try #require(await bobConnection.nextCallSignal(timeout: .seconds(30)))
                signals.append(try await bob.acceptCallSignal(delivery, on: bobConnection))
            }
            return signals
        }
        #expect(received.map(\.sequence) == [1, 2, 3])
        #expect(received.map(\.message.kind) == [.offer, .ice, .hangup])
        #expect(received.map(\.ttlSeconds) == [75, 90, 90])
        await relay.stop()
    }

    @Test func aCallMessageInAnEnvelopeIsRefused() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hi")
        #expect(try await bob.receiveAll().texts == ["hi"])
        let aliceAccount = try #require(try alice.store.loadAccount())
        let id = Self.callID(0x09)
        let message = CallMessage(callID: id.bytes, signalBinding: Data(count: 32), body: .hangup(.normal))
        // Alice's device encrypts it on its session with bob's device, as a text would be, and submits an envelope.
        let entry = try #require(try alice.store.sessions(with: "bob").first(where: \.active))
        var session = entry.session
        let ciphertext = try session.encrypt(MessageContent(messageID: SystemRandom().bytes(16), sentAtMilliseconds: 0, body: .call(message)).encoded())
        try alice.store.transaction { db in try ClientStore.save(session, handle: "bob", deviceID: entry.deviceID, makeActive: true, db) }
        try await alice.withAuthenticatedConnection(aliceAccount) { connection in
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = SystemRandom().bytes(16)
            envelope.recipientHandle = "bob"
            envelope.recipientDeviceID = entry.deviceID
            envelope.ciphertext = ciphertext
            var submit = WireSubmit()
            submit.envelopes = [envelope]
            submit.selectedDevices = true
            _ = try await connection.request(.submit(submit))
        }
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts.isEmpty)
        #expect(inbox.warnings.contains { $0.contains("ignored a call message from alice that arrived as an envelope") })
        await relay.stop()
    }
}
