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
