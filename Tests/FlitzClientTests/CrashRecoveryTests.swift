import FlitzProtocol
import Foundation
import Testing

@testable import FlitzClient

@Suite(.serialized)
struct CrashRecoveryTests {
    /// Stored but not acknowledged (killed between commit and acknowledgement): the relay redelivers. A
    /// ratchet message (not a prekey message) fails in every session then, and must still be dropped quietly.
    @Test func aRedeliveredRatchetMessageIsDroppedQuietly() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "first")
        #expect(try await bob.receiveAll().texts == ["first"])
        _ = try await bob.send(to: "alice", text: "reply")
        #expect(try await alice.receiveAll().texts == ["reply"])
        // Alice has seen a reply, so this is a plain ratchet message.
        _ = try await alice.send(to: "bob", text: "second")
        let account = try #require(try bob.store.loadAccount())
        try await bob.withAuthenticatedConnection(account) { connection in
            while let frame = await connection.nextUnsolicited(timeout: .seconds(10)) {
                if case .deliver(let deliver) = frame.body {
                    for envelope in deliver.envelopes {
                        guard case .ratchet = try IncomingSessionMessage(parsing: envelope.ciphertext) else {
                            Issue.record("expected a ratchet message")
                            return
                        }
                        _ = try await bob.accept(envelope)
                    }
                    return
                }
            }
        }
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["second"])
        #expect(inbox.warnings.isEmpty, "\(inbox.warnings)")
        _ = try await alice.send(to: "bob", text: "third")
        #expect(try await bob.receiveAll().texts == ["third"])
        await relay.stop()
    }
}
