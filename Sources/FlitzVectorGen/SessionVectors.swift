import FlitzCrypto
import FlitzProtocol
import Foundation

/// `vectors/session.json`: `SessionMessage` bytes of a prekey message, bob's reply and a following
/// ratchet message, each carrying encoded `Content`.
enum SessionVectors {
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000

    static func make() throws -> JSONValue {
        let label = "flitz-vectors/session"
        let alice = VectorParty(label: "\(label)/alice", signedPreKey: false, oneTimePreKey: false)
        let bob = VectorParty(label: "\(label)/bob", signedPreKey: true, oneTimePreKey: true)
        var aliceSession = try alice.initiate(to: bob)
        let initiationRandom = alice.random.take()
        var bobSession: Session?
        var out: [JSONValue] = []

        for (index, (fromAlice, text)) in [(true, "Hi Bob! Coffee on Friday?"), (false, "Yes, 10 am at the usual place."), (true, "See you there.")].enumerated() {
            let random = fromAlice ? alice.random : bob.random
            let content = MessageContent(messageID: random.bytes(16), sentAtMilliseconds: sentAt + Int64(index) * 60_000, body: .text(text))
            let encodedContent = content.encoded()
            let bytes = fromAlice ? try aliceSession.encrypt(encodedContent, random: random) : try bobSession!.encrypt(encodedContent, random: random)
            let consumed = random.take()
            let (ratchetBytes, preKey) = try ratchetMessage(of: bytes)
            var message: [String: JSONValue] = [
                "sender": .string(fromAlice ? "alice" : "bob"),
                "messageId": .hex(content.messageID),
                "sentAtMs": .int(Int(content.sentAtMilliseconds)),
                "text": .string(text),
                "contentEncoding": .hex(encodedContent),
                "sessionMessage": .hex(bytes),
                "kind": .string(preKey == nil ? "ratchetMessage" : "prekeyMessage"),
                "ratchetMessage": .hex(ratchetBytes),
                "randomBytes": .array(consumed.map { .hex($0) }),
            ]
            if let preKey {
                message["prekeyMessage"] = .object([
                    "accountIdentityKey": .hex(preKey.certificate.accountIdentityKey.rawRepresentation),
                    "deviceIdentityKey": .hex(preKey.certificate.deviceIdentityKey.rawRepresentation),
                    "deviceCertificateSignature": .hex(preKey.certificate.signature),
                    "baseKey": .hex(preKey.baseKey.rawRepresentation),
                    "signedPreKeyId": .uint(preKey.signedPreKeyID),
                    "oneTimePreKeyId": preKey.oneTimePreKeyID.map { .uint($0) } ?? .null,
                ])
            }
            // Deliver.
            let received: Data
            if fromAlice {
                if let preKey, bobSession == nil {
                    let (session, plaintext) = try bob.respond(to: preKey)
                    bobSession = session
                    received = plaintext
                } else {
                    received = try bobSession!.decrypt(ratchetBytes, random: bob.random)
                }
                message["receiverRandomBytes"] = .array(bob.random.take().map { .hex($0) })
            } else {
                received = try aliceSession.decrypt(ratchetBytes, random: alice.random)
                message["receiverRandomBytes"] = .array(alice.random.take().map { .hex($0) })
            }
            let decoded = try MessageContent(decoding: received)
            precondition(decoded == content, "content mismatch")
            out.append(.object(message))
        }
        return .object([
            "description": .string(
                "SessionMessage encodings (protocol/crypto.md, \"Session messages\"): alice's first message is a PreKeyMessage, "
                    + "bob replies with a ratchet message, and alice's next message, after decrypting the reply, is a plain ratchet "
                    + "message. Each plaintext is an encoded Content padded to a multiple of 64 bytes. Before encrypting, the sender "
                    + "draws the 16-byte messageId from its SeededRandom; randomBytes lists everything the sender drew for the "
                    + "message (message id, nonce), receiverRandomBytes what the receiver drew while decrypting."),
            "generator": .string(Generator.name),
            "alice": alice.json(),
            "bob": bob.json(),
            "aliceInitiationRandomBytes": .array(initiationRandom.map { .hex($0) }),
            "associatedData": .hex(aliceSession.associatedData),
            "kemCiphertext": .hex(try KEMFixtures.encapsulation(for: try bob.bundle().kemPreKey.publicKey).ciphertext),
            "kemSharedSecret": .hex(try KEMFixtures.encapsulation(for: try bob.bundle().kemPreKey.publicKey).sharedSecret),
            "messages": .array(out),
        ])
    }
}
