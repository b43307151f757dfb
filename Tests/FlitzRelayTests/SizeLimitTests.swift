import FlitzRelay
import FlitzWire
import Foundation
import Testing

/// Field limits of `protocol/relay.md`, "Limits", that this branch added checks for.
@Suite struct SizeLimitTests {
    @Test func aRecoveryCodeOver64BytesIsRefusedBeforeAnyWork() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let (_, code) = try await relay.connect { connection in try await connection.register(alice) }
            try await relay.connect { connection in
                var recover = WireRecover()
                recover.handle = "alice"
                // The right code padded past 64 bytes with spaces (which normalisation would otherwise drop).
                recover.recoveryCode = code + String(repeating: " ", count: 65 - code.utf8.count)
                recover.accountIdentityKey = alice.account.publicKey.rawRepresentation
                recover.device = alice.deviceKeys(startingAt: 100)
                recover.challengeSignature = alice.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                let tooLong = try await connection.request(.recover(recover))
                #expect(tooLong.errorCode == .recoveryFailed)
                recover.recoveryCode = code + String(repeating: " ", count: 64 - code.utf8.count)
                // The refused attempt consumed the nonce; sign the fresh one (relay.md, "Challenges").
                recover.challengeSignature = alice.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                let atTheLimit = try await connection.request(.recover(recover))
                #expect(atTheLimit.errorCode == nil, "\(atTheLimit)")
            }
        }
    }
}
