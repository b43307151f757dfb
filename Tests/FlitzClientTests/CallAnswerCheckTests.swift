import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Testing

@testable import FlitzClient

/// The caller checks an answer against the offer it sent (review finding 4, `CallAnswer.matches`). Bob here is a
/// hand-driven client that answers with a codec alice never offered, through the real relay and real sessions.
@Suite(.serialized) struct CallAnswerCheckTests {
    @Test func anAnswerNotMatchingTheSentOfferIsDroppedWithAWarning() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let aliceCalls = CallController(client: alice, options: CallControllerTests.options)
        let aliceLog = CallEventLog(aliceCalls)
        let bobAccount = try bob.requireAccount()
        let bobSide = Task {
            try await bob.withAuthenticatedConnection(bobAccount, callSignals: true) { connection -> CallID? in
                guard let delivery = await connection.nextCallSignal(timeout: .seconds(60)) else { return nil }
                let signal = try await bob.acceptCallSignal(delivery, on: connection)
                guard case .offer(let offer) = signal.message.body else { return nil }
                let opus = CallAudioCodec(name: "opus", payloadType: 111, clockRate: 48_000, frameMilliseconds: 20)
                let answer = CallAnswer(
                    codec: opus, ephemeralKey: X25519PrivateKey(random: bob.random).publicKey, profile: offer.profiles[0], candidates: [])
                #expect(!answer.matches(offer))
                _ = try await bob.sendCallSignal(
                    .answer(answer), callID: signal.callID, to: "alice", devices: [signal.senderDeviceID], sequence: 1, on: connection,
                    account: bobAccount)
                return signal.callID
            }
        }
        let (id, first, record) = try await alice.withCalls(aliceCalls) { controller in
            let id = try await controller.placeCall(to: "bob")
            // Whichever comes first: the answer taken (the bug) or dropped with a warning.
            let first = await aliceLog.next { event -> String? in
                switch event {
                case .answered: "answered"
                case .warning(let text) where text.contains("dropped an answer"): "dropped"
                default: nil
                }
            }
            #expect(await controller.activeCalls == [id], "still ringing")
            await controller.hangUp(id)
            return (id, first, await aliceLog.ended()?.0)
        }
        #expect(try await bobSide.value == id)
        #expect(first == "dropped")
        #expect(record?.outcome == .missed && record?.answeredAt == nil, "never answered: \(String(describing: record))")
        await relay.stop()
    }
}

/// Review finding 5: an outgoing call listens only to the account the offer went to.
@Suite(.serialized) struct CallImpostorTests {
    @Test func anAnswerFromAnotherIdentityKeyThanTheOfferWentToIsDropped() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice"), bob = try relay.client("bob")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        let code = try await bob.initialize(relayURL: relay.url, handle: "bob")
        let aliceCalls = CallController(client: alice, options: CallControllerTests.options)
        let aliceLog = CallEventLog(aliceCalls)
        let aliceDevice = try alice.requireAccount().deviceID
        let (outcome, first) = try await alice.withCalls(aliceCalls) { controller in
            let id = try await controller.placeCall(to: "bob")
            // Someone takes over bob's handle with his recovery code and "answers" the call alice placed.
            let impostor = try relay.client("bob-new-phone")
            _ = try await impostor.initialize(relayURL: relay.url, handle: "bob", recoveryCode: code)
            _ = try await impostor.send(to: "alice", text: "hi")  // a session with alice
            let account = try impostor.requireAccount()
            let answer = CallAnswer(codec: .pcmu, ephemeralKey: X25519PrivateKey(random: impostor.random).publicKey, profile: .aeadAES256GCM, candidates: [])
            try await impostor.withAuthenticatedConnection(account) { connection in
                _ = try await impostor.sendCallSignal(
                    .answer(answer), callID: id, to: "alice", devices: [aliceDevice], sequence: 1, on: connection, account: account)
            }
            let first = await aliceLog.next { event -> String? in
                switch event {
                case .answered: "answered"
                case .warning(let text) where text.contains("dropped"): text
                default: nil
                }
            }
            await controller.hangUp(id)
            return (await aliceLog.ended()?.0.outcome, first)
        }
        #expect(first?.contains("not the one trusted when the call was placed") == true, "\(String(describing: first))")
        #expect(outcome == .missed)
        await relay.stop()
    }
}
