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
        let bundle = try unverifiedBundle(bundleJSON).verified()

        // Independently: each DH from the private keys in the file, then F || DHs, HKDF, AD.
        let dhOutputs = try test.hexArray("dhOutputs")
        var expected = [
            try x25519(try aliceJSON.hex("deviceIdentityX25519PrivateKey"), try bundleJSON.hex("signedPreKey")),
            try x25519(ephemeralSecret, try bobJSON.hex("deviceIdentityX25519PublicKey")),
            try x25519(ephemeralSecret, try bundleJSON.hex("signedPreKey")),
        ]
        if bundleJSON.has("oneTimePreKey") { expected.append(try x25519(ephemeralSecret, try bundleJSON.hex("oneTimePreKey"))) }
        try check(dhOutputs, expected, "dhOutputs from the private keys")
        let keyMaterial = try test.hex("keyMaterial")
        try check(keyMaterial, Data(repeating: 0xFF, count: 32) + expected.reduce(Data(), +), "keyMaterial")
        try check(try test.hex("salt"), Data(count: 32), "salt")
        try check(try test.hex("info"), Data("Flitz-X3DH-v1".utf8), "info")
        let sharedSecret = try test.hex("sharedSecret"), associatedData = try test.hex("associatedData")
        try check(try hkdf(salt: Data(count: 32), ikm: keyMaterial, info: Data("Flitz-X3DH-v1".utf8), length: 32), sharedSecret, "sharedSecret")
        try check(
            try aliceJSON.hex("deviceIdentityKey") + (try bobJSON.hex("deviceIdentityKey")) + (try aliceJSON.hex("accountIdentityKey"))
                + (try bobJSON.hex("accountIdentityKey")), associatedData, "associatedData = IK_A || IK_B || AccK_A || AccK_B")

        // Through the API, on both sides.
        let initiator = try X3DH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: bundle)
        try check(initiator.dhOutputs.map(\.unsafeData), dhOutputs, "X3DH.initiate DH outputs")
        try check(initiator.sharedSecret, sharedSecret, "X3DH.initiate shared secret")
        try check(initiator.associatedData, associatedData, "X3DH.initiate AD")
        let responder = try X3DH.respond(
            identity: bob.device, signedPreKey: spk, oneTimePreKey: bob.oneTimePreKey, initiatorCertificate: alice.device.certificate,
            baseKey: ephemeral.publicKey)
        try check(responder.dhOutputs.map(\.unsafeData), dhOutputs, "X3DH.respond DH outputs")
        try check(responder.sharedSecret, sharedSecret, "X3DH.respond shared secret")
        try check(responder.associatedData, associatedData, "X3DH.respond AD")
    }
}
