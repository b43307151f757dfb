import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation

/// `pqxdh.json`: PQXDH on both sides, KEM prekey verification, and prekey messages' KEM fields
/// (`protocol/crypto.md` §2, §3a, §7).
///
/// Group `agreement` (valid): parties `alice` and `bob` (with `kemPreKey`), `bundle`, `aliceEphemeralPrivateKey`,
/// `dhOutputs`, `kemCiphertext`, `kemSharedSecret`, `keyMaterial`, `salt`, `info`, `sharedSecret`,
/// `associatedData`. Group `bundle`: a `bundle` for `verified()`. Group `parse`: a `sessionMessage` for
/// `IncomingSessionMessage(parsing:)`.
enum PQXDHTopic {
    static let topic = VectorTopic(name: "pqxdh", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "agreement":
            try agreement(test)
            return .valid
        case "bundle":
            let bundle = try unverifiedBundle(try test.object("bundle"))
            if test.has("kemPreKeySeed") {
                // Independently: the key is KeyGen of the seed, and the signature covers the documented payload.
                let key = try KEMPrivateKey(seed: SecretBytes(try test.hex("kemPreKeySeed")))
                guard let kem = bundle.kemPreKey else { throw VectorCheckFailure("a bundle with a KEM prekey") }
                try check(key.publicKey.rawRepresentation, kem.publicKey, "KEM prekey from kemPreKeySeed")
                let payload = SignedPayload.kemPreKey(id: kem.id, lastResort: kem.lastResort, publicKey: kem.publicKey)
                try check(payload, try test.hex("kemPreKeySignaturePayload"), "kemPreKeySignaturePayload")
                let device = try Ed25519PublicKey(rawRepresentation: bundle.deviceIdentityKey)
                try require(device.isValidSignature(kem.signature, for: payload), "the KEM prekey signature verifies over the payload")
            }
            return try VectorOutcome.capture { _ = try bundle.verified() }
        case "parse":
            let bytes = try test.hex("sessionMessage")
            return try VectorOutcome.capture {
                guard case .preKey(let message) = try IncomingSessionMessage(parsing: bytes) else {
                    throw VectorCheckFailure("expected a prekey message")
                }
                try check(message.kemPreKeyID, try test.uint32("kemPreKeyId"), "kemPreKeyId")
                try check(message.kemCiphertext.count, MLKEMSizes.ciphertext, "kem ciphertext length")
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "pqxdh")
        }
    }

    static func agreement(_ test: JSONValue) throws {
        let ciphertext = try test.hex("kemCiphertext"), kemSecret = try test.hex("kemSharedSecret")
        let part = try X3DHTopic.checkAgreementInputs(test, info: "Flitz-PQXDH-v1", kemSharedSecret: kemSecret)
        guard let kemPreKey = part.bob.kemPreKey else { throw VectorCheckFailure("bob has no KEM prekey") }
        try check(try part.bundleJSON.hex("kemCiphertext"), ciphertext, "bundle kemCiphertext")
        try check(try part.bundleJSON.hex("kemSharedSecret"), kemSecret, "bundle kemSharedSecret")
        // The responder side by decapsulation: the fixed ciphertext opens to the fixed secret.
        try check(try kemPreKey.privateKey.decapsulate(ciphertext), kemSecret, "ML-KEM-1024 decapsulation of kemCiphertext")

        // Through the API, on both sides.
        let initiator = try PQXDH.initiate(
            identity: part.alice.device, ephemeralKey: part.ephemeral, bundle: part.bundle, encapsulation: (ciphertext, SecretBytes(kemSecret)))
        try check(initiator.dhOutputs.map(\.unsafeData), part.dhOutputs, "PQXDH.initiate DH outputs")
        try check(initiator.sharedSecret, part.sharedSecret, "PQXDH.initiate shared secret")
        try check(initiator.associatedData, part.associatedData, "PQXDH.initiate AD")
        let responder = try PQXDH.respond(
            identity: part.bob.device, signedPreKey: part.signedPreKey, oneTimePreKey: part.bob.oneTimePreKey, kemPreKey: kemPreKey,
            kemCiphertext: ciphertext, initiatorCertificate: part.alice.device.certificate, baseKey: part.ephemeral.publicKey)
        try check(responder.sharedSecret, part.sharedSecret, "PQXDH.respond shared secret (decapsulating)")
        try check(responder.associatedData, part.associatedData, "PQXDH.respond AD")
    }
}
