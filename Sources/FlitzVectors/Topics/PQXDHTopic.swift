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
        let aliceJSON = try test.object("alice"), bobJSON = try test.object("bob")
        let alice = try VectorPartyKeys(aliceJSON), bob = try VectorPartyKeys(bobJSON)
        guard let spk = bob.signedPreKey, let kemPreKey = bob.kemPreKey else { throw VectorCheckFailure("bob has no signed or KEM prekey") }
        let ephemeralSecret = try test.hex("aliceEphemeralPrivateKey")
        let random = SeededRandom(label: try aliceJSON.string("randomLabel"))
        _ = random.bytes(32)
        _ = random.bytes(32)
        try check(random.bytes(32), ephemeralSecret, "aliceEphemeralPrivateKey (third draw of alice's randomLabel)")
        let ephemeral = try X25519PrivateKey(rawRepresentation: SecretBytes(ephemeralSecret))
        let bundleJSON = try test.object("bundle")
        let bundle = try unverifiedBundle(bundleJSON).verified()
        let ciphertext = try test.hex("kemCiphertext"), kemSecret = try test.hex("kemSharedSecret")
        try check(try bundleJSON.hex("kemCiphertext"), ciphertext, "bundle kemCiphertext")
        try check(try bundleJSON.hex("kemSharedSecret"), kemSecret, "bundle kemSharedSecret")
        // The responder side by decapsulation: the fixed ciphertext opens to the fixed secret.
        try check(try kemPreKey.privateKey.decapsulate(ciphertext), kemSecret, "ML-KEM-1024 decapsulation of kemCiphertext")

        // Independently of PQXDH: the DHs of X3DH, then HKDF over them and the KEM secret.
        let dhOutputs = try test.hexArray("dhOutputs")
        let ikA = alice.device.privateKey.x25519PrivateKey(), ikB = try bob.device.publicKey.x25519PublicKey()
        var expected = [
            try ikA.sharedSecret(with: spk.privateKey.publicKey).unsafeData, try ephemeral.sharedSecret(with: ikB).unsafeData,
            try ephemeral.sharedSecret(with: spk.privateKey.publicKey).unsafeData,
        ]
        if let opk = bob.oneTimePreKey { expected.append(try ephemeral.sharedSecret(with: opk.privateKey.publicKey).unsafeData) }
        try check(dhOutputs, expected, "dhOutputs")
        let keyMaterial = try test.hex("keyMaterial")
        try check(keyMaterial, Data(repeating: 0xFF, count: 32) + expected.reduce(Data(), +) + kemSecret, "keyMaterial")
        try check(try test.hex("salt"), Data(count: 32), "salt")
        try check(try test.hex("info"), Data("Flitz-PQXDH-v1".utf8), "info")
        let sharedSecret = try test.hex("sharedSecret"), associatedData = try test.hex("associatedData")
        try check(try hkdf(salt: Data(count: 32), ikm: keyMaterial, info: Data("Flitz-PQXDH-v1".utf8), length: 32), sharedSecret, "sharedSecret")
        try check(
            try aliceJSON.hex("deviceIdentityKey") + (try bobJSON.hex("deviceIdentityKey")) + (try aliceJSON.hex("accountIdentityKey"))
                + (try bobJSON.hex("accountIdentityKey")), associatedData, "associatedData = IK_A || IK_B || AccK_A || AccK_B")

        // Through the API, on both sides.
        let initiator = try PQXDH.initiate(
            identity: alice.device, ephemeralKey: ephemeral, bundle: bundle, encapsulation: (ciphertext, SecretBytes(kemSecret)))
        try check(initiator.dhOutputs.map(\.unsafeData), dhOutputs, "PQXDH.initiate DH outputs")
        try check(initiator.sharedSecret, sharedSecret, "PQXDH.initiate shared secret")
        try check(initiator.associatedData, associatedData, "PQXDH.initiate AD")
        let responder = try PQXDH.respond(
            identity: bob.device, signedPreKey: spk, oneTimePreKey: bob.oneTimePreKey, kemPreKey: kemPreKey, kemCiphertext: ciphertext,
            initiatorCertificate: alice.device.certificate, baseKey: ephemeral.publicKey)
        try check(responder.sharedSecret, sharedSecret, "PQXDH.respond shared secret (decapsulating)")
        try check(responder.associatedData, associatedData, "PQXDH.respond AD")
    }
}
