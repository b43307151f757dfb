import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation

/// `x3dh.json`: prekey bundle verification and X3DH on both sides (`protocol/crypto.md` §2, §3).
///
/// Group `agreement` (valid): parties `alice` and `bob`, `aliceEphemeralPrivateKey` / `PublicKey`, `bundle`,
/// `dhOutputs`, `keyMaterial`, `salt`, `info`, `sharedSecret`, `associatedData`. Group `bundle`: a `bundle`
/// that `verified()` refuses. Group `initiate`: party `alice`, `aliceEphemeralPrivateKey` and a bundle
/// that verifies but cannot be used. Group `respond`: party `bob`, `initiatorCertificate`, `baseKey`.
enum X3DHTopic {
    static let topic = VectorTopic(name: "x3dh", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "agreement":
            try agreement(test)
            return .valid
        case "bundle":
            let bundle = try unverifiedBundle(try test.object("bundle"))
            return try VectorOutcome.capture { _ = try bundle.verified() }
        case "initiate":
            let alice = try VectorPartyKeys(try test.object("alice"))
            let ephemeral = try X25519PrivateKey(rawRepresentation: SecretBytes(try test.hex("aliceEphemeralPrivateKey")))
            // The bundle must pass verification: these cases fail later, in the key agreement.
            let bundle = try unverifiedBundle(try test.object("bundle")).verified()
            return try VectorOutcome.capture { _ = try X3DH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: bundle) }
        case "respond":
            let bob = try VectorPartyKeys(try test.object("bob"))
            guard let signedPreKey = bob.signedPreKey else { throw VectorCheckFailure("bob has no signed prekey") }
            let certificateJSON = try test.object("initiatorCertificate")
            let certificate = DeviceCertificate(
                accountIdentityKey: try Ed25519PublicKey(rawRepresentation: try certificateJSON.hex("accountIdentityKey")),
                deviceIdentityKey: try Ed25519PublicKey(rawRepresentation: try certificateJSON.hex("deviceIdentityKey")),
                signature: try certificateJSON.hex("signature"))
            try certificate.verify()  // these cases fail in the key agreement, not at the certificate
            let baseKey = try X25519PublicKey(rawRepresentation: try test.hex("baseKey"))
            return try VectorOutcome.capture {
                _ = try X3DH.respond(
                    identity: bob.device, signedPreKey: signedPreKey, oneTimePreKey: bob.oneTimePreKey, initiatorCertificate: certificate,
                    baseKey: baseKey)
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "x3dh")
        }
    }

    static func agreement(_ test: JSONValue) throws {
        let part = try checkAgreementInputs(test, info: "Flitz-X3DH-v1", kemSharedSecret: Data())
        // Through the API, on both sides.
        let initiator = try X3DH.initiate(identity: part.alice.device, ephemeralKey: part.ephemeral, bundle: part.bundle)
        try check(initiator.dhOutputs.map(\.unsafeData), part.dhOutputs, "X3DH.initiate DH outputs")
        try check(initiator.sharedSecret, part.sharedSecret, "X3DH.initiate shared secret")
        try check(initiator.associatedData, part.associatedData, "X3DH.initiate AD")
        let responder = try X3DH.respond(
            identity: part.bob.device, signedPreKey: part.signedPreKey, oneTimePreKey: part.bob.oneTimePreKey,
            initiatorCertificate: part.alice.device.certificate, baseKey: part.ephemeral.publicKey)
        try check(responder.dhOutputs.map(\.unsafeData), part.dhOutputs, "X3DH.respond DH outputs")
        try check(responder.sharedSecret, part.sharedSecret, "X3DH.respond shared secret")
        try check(responder.associatedData, part.associatedData, "X3DH.respond AD")
    }

    /// What an `agreement` test of `x3dh.json` or `pqxdh.json` fixes, checked independently of the API.
    struct AgreementInputs {
        let alice: VectorPartyKeys, bob: VectorPartyKeys
        let signedPreKey: SignedPreKeyPair
        let ephemeral: X25519PrivateKey
        let bundleJSON: JSONValue
        let bundle: PreKeyBundle
        let dhOutputs: [Data]
        let sharedSecret: Data, associatedData: Data
    }

    /// Rebuilds both parties and EK_A, checks the bundle against bob's keys, every DH from the private keys
    /// in the file, keyMaterial = 32 × 0xff ‖ DHs ‖ `kemSharedSecret` (empty for X3DH), the salt, `info`,
    /// the HKDF output and the AD (`protocol/crypto.md` §3, §3a).
    static func checkAgreementInputs(_ test: JSONValue, info: String, kemSharedSecret: Data) throws -> AgreementInputs {
        let aliceJSON = try test.object("alice"), bobJSON = try test.object("bob")
        let alice = try VectorPartyKeys(aliceJSON), bob = try VectorPartyKeys(bobJSON)
        guard let spk = bob.signedPreKey else { throw VectorCheckFailure("bob has no signed prekey") }
        let ephemeralSecret = try test.hex("aliceEphemeralPrivateKey")
        // EK_A is alice's third draw, after her account and device seeds.
        let random = SeededRandom(label: try aliceJSON.string("randomLabel"))
        _ = random.bytes(32)
        _ = random.bytes(32)
        try check(random.bytes(32), ephemeralSecret, "aliceEphemeralPrivateKey (third draw of alice's randomLabel)")
        let ephemeral = try X25519PrivateKey(rawRepresentation: SecretBytes(ephemeralSecret))
        try check(ephemeral.publicKey.rawRepresentation, try test.hex("aliceEphemeralPublicKey"), "aliceEphemeralPublicKey")

        let bundleJSON = try test.object("bundle")
        try check(try bundleJSON.hex("accountIdentityKey"), bob.account.publicKey.rawRepresentation, "bundle.accountIdentityKey")
        try check(try bundleJSON.hex("deviceIdentityKey"), bob.device.publicKey.rawRepresentation, "bundle.deviceIdentityKey")
        try check(try bundleJSON.hex("signedPreKey"), spk.privateKey.publicKey.rawRepresentation, "bundle.signedPreKey")
        try check(bundleJSON.has("oneTimePreKey"), bob.oneTimePreKey != nil, "bundle has a one-time prekey")
        if let opk = bob.oneTimePreKey {
            try check(try bundleJSON.hex("oneTimePreKey"), opk.privateKey.publicKey.rawRepresentation, "bundle.oneTimePreKey")
        }
        if let kem = bob.kemPreKey {
            try check(try bundleJSON.hex("kemPreKey"), kem.privateKey.publicKey.rawRepresentation, "bundle.kemPreKey")
        }
        let bundle = try unverifiedBundle(bundleJSON).verified()

        // Independently: each DH from the private keys in the file, then F || DHs [|| SS], HKDF, AD.
        let dhOutputs = try test.hexArray("dhOutputs")
        var expected = [
            try x25519(try aliceJSON.hex("deviceIdentityX25519PrivateKey"), try bundleJSON.hex("signedPreKey")),
            try x25519(ephemeralSecret, try bobJSON.hex("deviceIdentityX25519PublicKey")),
            try x25519(ephemeralSecret, try bundleJSON.hex("signedPreKey")),
        ]
        if bundleJSON.has("oneTimePreKey") { expected.append(try x25519(ephemeralSecret, try bundleJSON.hex("oneTimePreKey"))) }
        try check(dhOutputs, expected, "dhOutputs from the private keys")
        let keyMaterial = try test.hex("keyMaterial")
        try check(keyMaterial, Data(repeating: 0xFF, count: 32) + expected.reduce(Data(), +) + kemSharedSecret, "keyMaterial")
        try check(try test.hex("salt"), Data(count: 32), "salt")
        try check(try test.hex("info"), Data(info.utf8), "info")
        let sharedSecret = try test.hex("sharedSecret"), associatedData = try test.hex("associatedData")
        try check(try hkdf(salt: Data(count: 32), ikm: keyMaterial, info: Data(info.utf8), length: 32), sharedSecret, "sharedSecret")
        try check(
            try aliceJSON.hex("deviceIdentityKey") + (try bobJSON.hex("deviceIdentityKey")) + (try aliceJSON.hex("accountIdentityKey"))
                + (try bobJSON.hex("accountIdentityKey")), associatedData, "associatedData = IK_A || IK_B || AccK_A || AccK_B")
        return AgreementInputs(
            alice: alice, bob: bob, signedPreKey: spk, ephemeral: ephemeral, bundleJSON: bundleJSON, bundle: bundle, dhOutputs: dhOutputs,
            sharedSecret: sharedSecret, associatedData: associatedData)
    }
}
