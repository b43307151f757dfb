import FlitzCrypto
import FlitzProtocol
import Foundation

/// `vectors/ratchet.json`: a Double Ratchet conversation between alice (initiator) and bob with
/// out-of-order delivery and several DH ratchet steps.
enum RatchetVectors {
    enum Event {
        case send(String)
        case receive(String)
    }

    /// Message ids start with the sender ("a" alice, "b" bob).
    static let script: [Event] = [
        .send("a0"), .send("a1"), .send("a2"),
        .receive("a0"), .receive("a2"),
        .send("b0"), .send("b1"),
        .receive("b1"), .receive("b0"),
        .send("a3"), .send("a4"), .send("a5"),
        .receive("a4"), .receive("a1"), .receive("a3"), .receive("a5"),
        .send("b2"), .send("b3"),
        .send("a6"),
        .receive("b3"), .receive("a6"),
        .send("a7"),
        .receive("b2"), .receive("a7"),
        .send("b4"), .receive("b4"),
    ]

    static func plaintext(_ id: String) -> Data {
        Data("message \(id) from \(id.hasPrefix("a") ? "alice" : "bob")".utf8)
    }

    static func make() throws -> JSONValue {
        let label = "flitz-vectors/ratchet"
        let alice = VectorParty(label: "\(label)/alice", signedPreKey: false, oneTimePreKey: false)
        let bob = VectorParty(label: "\(label)/bob", signedPreKey: true, oneTimePreKey: true)
        var aliceSession = try alice.initiate(to: bob)
        let initiationRandom = alice.random.take()
        let bundle = try bob.bundle()
        let agreement = try PQXDH.initiate(
            identity: alice.device, ephemeralKey: X25519PrivateKey(rawRepresentation: SecretBytes(initiationRandom[0])),
            bundle: bundle, encapsulation: try KEMFixtures.encapsulation(for: bundle.kemPreKey.publicKey))
        var bobSession: Session?

        var messages: [String: JSONValue] = [:]
        var sent: [String: Data] = [:]
        var events: [JSONValue] = []
        var deliveryOrder: [JSONValue] = []

        func states() -> JSONValue {
            .object([
                "alice": ratchetStateJSON(aliceSession.ratchetState),
                "bob": bobSession.map { ratchetStateJSON($0.ratchetState) } ?? .null,
            ])
        }

        for (index, event) in script.enumerated() {
            switch event {
            case .send(let id):
                let fromAlice = id.hasPrefix("a")
                let before = fromAlice ? aliceSession.ratchetState : bobSession!.ratchetState
                let (nextChainKey, messageKey) = RatchetKDF.chainStep(chainKey: SecretBytes(before.sendingChainKey))
                let random = fromAlice ? alice.random : bob.random
                let bytes = fromAlice
                    ? try aliceSession.encrypt(plaintext(id), random: random) : try bobSession!.encrypt(plaintext(id), random: random)
                let consumed = random.take()
                let after = fromAlice ? aliceSession.ratchetState : bobSession!.ratchetState
                precondition(after.sendingChainKey == nextChainKey.unsafeData, "chain key mismatch")
                let (ratchetBytes, preKey) = try ratchetMessage(of: bytes)
                let parts = split(ratchetMessage: ratchetBytes)
                precondition(consumed == [parts.nonce], "nonce is the only random input of encrypt")
                let header = try RatchetHeader(decoding: ratchetBytes)
                let encryptionKey = RatchetKDF.encryptionKey(messageKey: messageKey)
                sent[id] = bytes
                messages[id] = .object([
                    "id": .string(id),
                    "sender": .string(fromAlice ? "alice" : "bob"),
                    "plaintext": .hex(plaintext(id)),
                    "header": .object([
                        "version": .int(Int(ProtocolConstants.version)),
                        "ratchetKey": .hex(header.ratchetKey.rawRepresentation),
                        "previousChainLength": .uint(header.previousChainLength),
                        "messageNumber": .uint(header.messageNumber),
                    ]),
                    "encodedHeader": .hex(parts.header),
                    "nonce": .hex(parts.nonce),
                    "chainKey": .hex(before.sendingChainKey),
                    "messageKey": .hex(messageKey),
                    "encryptionKey": .hex(encryptionKey),
                    "aeadAssociatedData": .hex(aliceSession.associatedData + parts.header),
                    "ciphertext": .hex(parts.ciphertext),
                    "ratchetMessage": .hex(ratchetBytes),
                    "sessionMessageKind": .string(preKey == nil ? "ratchetMessage" : "prekeyMessage"),
                    "sessionMessage": .hex(bytes),
                ])
                events.append(
                    .object([
                        "index": .int(index), "action": .string("send"), "party": .string(fromAlice ? "alice" : "bob"),
                        "message": .string(id), "randomBytes": .array(consumed.map { .hex($0) }), "statesAfter": states(),
                    ]))
            case .receive(let id):
                let toBob = id.hasPrefix("a")
                let (ratchetBytes, preKey) = try ratchetMessage(of: sent[id]!)
                let random = toBob ? bob.random : alice.random
                let receivingKeyBefore = toBob ? bobSession?.ratchetState.receivingRatchetKey : aliceSession.ratchetState.receivingRatchetKey
                let plaintextOut: Data
                if toBob {
                    if bobSession == nil {
                        let (session, out) = try bob.respond(to: preKey!)
                        bobSession = session
                        plaintextOut = out
                    } else {
                        plaintextOut = try bobSession!.decrypt(ratchetBytes, random: random)
                    }
                } else {
                    plaintextOut = try aliceSession.decrypt(ratchetBytes, random: random)
                }
                precondition(plaintextOut == plaintext(id), "decryption mismatch")
                let consumed = random.take()
                let receivingKeyAfter = toBob ? bobSession!.ratchetState.receivingRatchetKey : aliceSession.ratchetState.receivingRatchetKey
                deliveryOrder.append(.string(id))
                events.append(
                    .object([
                        "index": .int(index), "action": .string("receive"), "party": .string(toBob ? "bob" : "alice"),
                        "message": .string(id), "randomBytes": .array(consumed.map { .hex($0) }),
                        "dhRatchetStep": .bool(receivingKeyBefore != receivingKeyAfter), "statesAfter": states(),
                    ]))
            }
        }

        return .object([
            "description": .string(
                "A Double Ratchet conversation (protocol/crypto.md, \"Double Ratchet\") between alice (initiator) and bob, "
                    + "started by X3DH with bob's signed prekey and one-time prekey. events is the script in order: each send "
                    + "encrypts messages[id].plaintext, each receive decrypts it; randomBytes are the outputs the party's "
                    + "SeededRandom gave during the event (a 24-byte nonce per send, a 32-byte ratchet private key per DH "
                    + "ratchet step). statesAfter are both parties' RatchetState after the event (bob is null before his "
                    + "session exists). Per message: messageKey, nextChainKey = KDF_CK(chainKey); encryptionKey from "
                    + "messageKey; ciphertext = XChaCha20-Poly1305(encryptionKey, nonce, plaintext, aeadAssociatedData) "
                    + "including the 16-byte tag; ratchetMessage = encodedHeader || nonce || ciphertext."),
            "generator": .string(Generator.name),
            "alice": alice.json(),
            "bob": bob.json(),
            "aliceInitiationRandomBytes": .array(initiationRandom.map { .hex($0) }),
            "aliceBaseKey": .hex(aliceSession.baseKey.rawRepresentation),
            "bobRatchetPrivateKey": .hex(bob.signedPreKey!.privateKey.secret),
            "bobRatchetKey": .hex(bob.signedPreKey!.privateKey.publicKey.rawRepresentation),
            "sharedSecret": .hex(agreement.sharedSecret),
            "associatedData": .hex(agreement.associatedData),
            "kemCiphertext": .hex(agreement.kemCiphertext!),
            "kemSharedSecret": .hex(agreement.kemSharedSecret!),
            "messages": .array(script.compactMap { if case .send(let id) = $0 { messages[id] } else { nil } }),
            "events": .array(events),
            "deliveryOrder": .array(deliveryOrder),
        ])
    }
}
