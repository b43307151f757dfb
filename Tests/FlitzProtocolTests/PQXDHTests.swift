import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Testing

/// PQXDH (`protocol/crypto.md`, "PQXDH") and the checks around it: bundle verification with a KEM prekey,
/// no downgrade to X3DH, implicit rejection, low-order and malformed keys.
struct PQXDHTests {
    static let lowOrderPoints = [
        String(repeating: "00", count: 32),
        "01" + String(repeating: "00", count: 31),
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    ]

    @Test func kemKeysComeFromTheirSeedAndRoundTrip() throws {
        let seed = SecretBytes(Data((0..<64).map { UInt8($0) }))
        let a = try KEMPrivateKey(seed: seed), b = try KEMPrivateKey(seed: seed)
        #expect(a.publicKey == b.publicKey)
        #expect(a.publicKey.rawRepresentation.count == MLKEMSizes.publicKey)
        let (ciphertext, secret) = try a.publicKey.encapsulate()
        #expect(ciphertext.count == MLKEMSizes.ciphertext)
        #expect(try b.decapsulate(ciphertext).constantTimeEquals(secret))
        // Implicit rejection: a flipped ciphertext bit gives another secret, not an error.
        var flipped = ciphertext
        flipped[0] ^= 1
        #expect(!(try b.decapsulate(flipped).constantTimeEquals(secret)))
        #expect(throws: FlitzCryptoError.self) { try b.decapsulate(ciphertext.dropLast()) }
        #expect(throws: FlitzCryptoError.self) { try KEMPrivateKey(seed: SecretBytes(Data(count: 63))) }
        // FIPS 203 modulus check: coefficients of 0xFFF are not reduced mod q = 3329.
        #expect(throws: FlitzCryptoError.self) { try KEMPublicKey(rawRepresentation: Data(repeating: 0xFF, count: MLKEMSizes.publicKey)) }
    }

    @Test(arguments: [false, true])
    func bothSidesAgreeAndTheKEMSecretEntersTheKDF(withOneTimePreKey: Bool) throws {
        let alice = TestDevice("pqxdh/alice"), bob = TestDevice("pqxdh/bob")
        let bundle = try bob.bundle(withOneTimePreKey: withOneTimePreKey)
        let ephemeral = X25519PrivateKey(random: alice.random)
        let initiator = try PQXDH.initiate(identity: alice.identity, ephemeralKey: ephemeral, bundle: bundle)
        let ciphertext = try #require(initiator.kemCiphertext)
        let responder = try PQXDH.respond(
            identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: withOneTimePreKey ? bob.oneTimePreKey : nil,
            kemPreKey: bob.kemPreKey, kemCiphertext: ciphertext, initiatorCertificate: alice.identity.certificate,
            baseKey: ephemeral.publicKey)
        #expect(initiator.sharedSecret.constantTimeEquals(responder.sharedSecret))
        #expect(initiator.associatedData == responder.associatedData)
        // SK = HKDF(0^32, 0xFF^32 ‖ DH1..DH4 ‖ SS, "Flitz-PQXDH-v1"), recomputed from the parts.
        var ikm = Data(repeating: 0xFF, count: 32)
        for output in initiator.dhOutputs { ikm += output.unsafeData }
        ikm += try #require(initiator.kemSharedSecret).unsafeData
        let expected = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(ikm), salt: Data(count: 32), info: Data("Flitz-PQXDH-v1".utf8), length: 32)
        #expect(initiator.sharedSecret.constantTimeEquals(expected))
        // Not the X3DH secret of the same DHs.
        let classical = try X3DH.initiate(identity: alice.identity, ephemeralKey: ephemeral, bundle: bundle)
        #expect(!classical.sharedSecret.constantTimeEquals(initiator.sharedSecret))
        #expect(initiator.dhOutputs.count == (withOneTimePreKey ? 4 : 3))
    }

    @Test func aTamperedKEMCiphertextFailsTheFirstMessageAndBurnsNothing() throws {
        let alice = TestDevice("pqxdh-tamper/alice"), bob = TestDevice("pqxdh-tamper/bob")
        var session = try Session.initiate(identity: alice.identity, bundle: try bob.bundle())
        var message = try ProtoSessionMessage(serializedBytes: try session.encrypt(Data("hi".utf8)))
        guard case .prekeyMessage(var preKey) = message.kind else { Issue.record("expected a prekey message"); return }
        preKey.kemCiphertext[100] ^= 0x01
        message.kind = .prekeyMessage(preKey)
        guard case .preKey(let parsed) = try IncomingSessionMessage(parsing: try message.serializedData()) else { return }
        expectProtocolError(.authenticationFailed) {
            try Session.respond(
                to: parsed, identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey)
        }
    }

    @Test func noDowngradeToX3DH() throws {
        let alice = TestDevice("pqxdh-downgrade/alice"), bob = TestDevice("pqxdh-downgrade/bob")
        // A relay that strips the KEM prekey from the bundle: refused, no X3DH fallback.
        var stripped = bob.unverifiedBundle()
        stripped.kemPreKey = nil
        expectProtocolError(.missingKEMPreKey) { try stripped.verified() }
        // A prekey message without the KEM ciphertext: refused before any prekey is looked up.
        var session = try Session.initiate(identity: alice.identity, bundle: try bob.bundle())
        var message = try ProtoSessionMessage(serializedBytes: try session.encrypt(Data("hi".utf8)))
        guard case .prekeyMessage(var preKey) = message.kind else { Issue.record("expected a prekey message"); return }
        preKey.kemCiphertext = Data()
        message.kind = .prekeyMessage(preKey)
        expectProtocolError(.missingKEMPreKey) { try IncomingSessionMessage(parsing: try message.serializedData()) }
        preKey.kemCiphertext = Data(count: 1567)
        message.kind = .prekeyMessage(preKey)
        expectProtocolError(.malformedMessage) { try IncomingSessionMessage(parsing: try message.serializedData()) }
    }

    @Test func kemPreKeySignatureCoversKindAndID() throws {
        let bob = TestDevice("pqxdh-signature/bob")
        var relabelled = bob.unverifiedBundle()
        relabelled.kemPreKey!.lastResort = true  // signed as one-time
        expectProtocolError(.authenticationFailed) { try relabelled.verified() }
        var renumbered = bob.unverifiedBundle()
        renumbered.kemPreKey!.id += 1
        expectProtocolError(.authenticationFailed) { try renumbered.verified() }
        var forged = bob.unverifiedBundle()
        forged.kemPreKey!.signature[0] ^= 1
        expectProtocolError(.authenticationFailed) { try forged.verified() }
        var short = bob.unverifiedBundle()
        short.kemPreKey!.publicKey = short.kemPreKey!.publicKey.dropLast()
        expectProtocolError(.malformedMessage) { try short.verified() }
        // A correctly signed key that fails FIPS 203's modulus check.
        var unreduced = bob.unverifiedBundle()
        let bad = Data(repeating: 0xFF, count: MLKEMSizes.publicKey)
        unreduced.kemPreKey = (
            id: 7, publicKey: bad, signature: bob.identity.privateKey.signature(for: KEMPreKeyPair.signaturePayload(id: 7, kind: .oneTime, publicKey: bad)),
            lastResort: false
        )
        expectProtocolError(.invalidKey) { try unreduced.verified() }
    }

    @Test(arguments: lowOrderPoints)
    func lowOrderPrekeysAndBaseKeysAreRejected(_ point: String) throws {
        let alice = TestDevice("pqxdh-low/alice"), bob = TestDevice("pqxdh-low/bob")
        let lowOrder = Data(vectorHex: point)
        // A signed prekey of low order (validly signed, so only the DH catches it).
        var bundle = bob.unverifiedBundle()
        bundle.signedPreKey = lowOrder
        bundle.signedPreKeySignature = bob.identity.privateKey.signature(for: lowOrder)
        let verified = try bundle.verified()
        expectProtocolError(.invalidKey) { try Session.initiate(identity: alice.identity, bundle: verified) }
        var withLowOTPK = bob.unverifiedBundle()
        withLowOTPK.oneTimePreKey = (id: 100, publicKey: lowOrder)
        let verifiedOTPK = try withLowOTPK.verified()
        expectProtocolError(.invalidKey) { try Session.initiate(identity: alice.identity, bundle: verifiedOTPK) }
        // A low-order base key in a prekey message.
        let kem = try bob.bundle().kemPreKey.publicKey.encapsulate()
        expectProtocolError(.invalidKey) {
            try PQXDH.respond(
                identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey,
                kemCiphertext: kem.ciphertext, initiatorCertificate: alice.identity.certificate,
                baseKey: try X25519PublicKey(rawRepresentation: lowOrder))
        }
    }

    @Test func aLastResortSessionIsMarkedOnBothSides() throws {
        let alice = TestDevice("pqxdh-last/alice"), bob = TestDevice("pqxdh-last/bob")
        let lastResort = KEMPreKeyPair(id: 300, kind: .lastResort, device: bob.identity, random: bob.random)
        var unverified = bob.unverifiedBundle()
        unverified.kemPreKey = (300, lastResort.privateKey.publicKey.rawRepresentation, lastResort.signature, true)
        var session = try Session.initiate(identity: alice.identity, bundle: try unverified.verified())
        #expect(session.usedLastResortPreKey)
        guard case .preKey(let message) = try IncomingSessionMessage(parsing: try session.encrypt(Data("x".utf8))) else { return }
        let (bobSession, _) = try Session.respond(
            to: message, identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: bob.oneTimePreKey, kemPreKey: lastResort)
        #expect(bobSession.usedLastResortPreKey)
        #expect(try Session(serialized: bobSession.serialized()).usedLastResortPreKey)
        #expect(try !Session(serialized: Session.initiate(identity: alice.identity, bundle: try bob.bundle()).serialized()).usedLastResortPreKey)
    }
}
