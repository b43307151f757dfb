import FlitzCrypto
import FlitzProtocol
import Foundation
import Testing

@Suite struct X3DHTests {
    @Test(arguments: [true, false])
    func initiatorAndResponderAgree(withOneTimePreKey: Bool) throws {
        let alice = TestDevice("x3dh/alice")
        let bob = TestDevice("x3dh/bob")
        let ephemeral = X25519PrivateKey(random: alice.random)
        let initiator = try X3DH.initiate(
            identity: alice.identity, ephemeralKey: ephemeral, bundle: try bob.bundle(withOneTimePreKey: withOneTimePreKey))
        let responder = try X3DH.respond(
            identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: withOneTimePreKey ? bob.oneTimePreKey : nil,
            initiatorCertificate: alice.identity.certificate, baseKey: ephemeral.publicKey)
        #expect(initiator.sharedSecret.count == 32)
        #expect(initiator.sharedSecret.constantTimeEquals(responder.sharedSecret))
        #expect(
            initiator.associatedData
                == alice.identity.publicKey.rawRepresentation + bob.identity.publicKey.rawRepresentation
                + alice.account.publicKey.rawRepresentation + bob.account.publicKey.rawRepresentation)
        #expect(initiator.associatedData.count == X3DH.associatedDataLength)
        #expect(responder.associatedData == initiator.associatedData)
        #expect(initiator.dhOutputs.count == (withOneTimePreKey ? 4 : 3))
        #expect(initiator.dhOutputs.map(\.unsafeData) == responder.dhOutputs.map(\.unsafeData))
        // SK = HKDF(salt 0^32, 0xFF^32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], "Flitz-X3DH-v1").
        var ikm = Data(repeating: 0xff, count: 32)
        for dh in initiator.dhOutputs { ikm += dh.unsafeData }
        let expected = try HKDF.deriveKey(
            inputKeyMaterial: SecretBytes(ikm), salt: Data(count: 32), info: Data("Flitz-X3DH-v1".utf8), length: 32)
        #expect(initiator.sharedSecret.unsafeData == expected.unsafeData)
        // DH1 = DH(IK_A, SPK_B) computed independently.
        let dh1 = try alice.identity.privateKey.x25519PrivateKey().sharedSecret(with: bob.signedPreKey.privateKey.publicKey)
        #expect(initiator.dhOutputs[0].unsafeData == dh1.unsafeData)
    }

    @Test func withAndWithoutOneTimePreKeyDiffer() throws {
        let alice = TestDevice("x3dh/alice")
        let bob = TestDevice("x3dh/bob")
        let ephemeral = X25519PrivateKey(random: alice.random)
        let with = try X3DH.initiate(identity: alice.identity, ephemeralKey: ephemeral, bundle: try bob.bundle(withOneTimePreKey: true))
        let without = try X3DH.initiate(identity: alice.identity, ephemeralKey: ephemeral, bundle: try bob.bundle(withOneTimePreKey: false))
        #expect(!with.sharedSecret.constantTimeEquals(without.sharedSecret))
    }

    @Test func respondingWithTheWrongOneTimePreKeyGivesAnotherSecret() throws {
        let alice = TestDevice("x3dh/alice")
        let bob = TestDevice("x3dh/bob")
        let ephemeral = X25519PrivateKey(random: alice.random)
        let initiator = try X3DH.initiate(identity: alice.identity, ephemeralKey: ephemeral, bundle: try bob.bundle())
        let responder = try X3DH.respond(
            identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: OneTimePreKeyPair(id: 100, random: bob.random),
            initiatorCertificate: alice.identity.certificate, baseKey: ephemeral.publicKey)
        #expect(!initiator.sharedSecret.constantTimeEquals(responder.sharedSecret))
    }

    @Test func badSignedPreKeySignatureIsRejected() throws {
        let bob = TestDevice("x3dh/bob")
        var bundle = bob.unverifiedBundle()
        bundle.signedPreKeySignature[0] ^= 0x01
        expectProtocolError(.authenticationFailed) { try bundle.verified() }
    }

    @Test func signedPreKeySignedByAnotherDeviceIsRejected() throws {
        let bob = TestDevice("x3dh/bob")
        let mallory = TestDevice("x3dh/mallory")
        var bundle = bob.unverifiedBundle()
        bundle.signedPreKey = mallory.signedPreKey.privateKey.publicKey.rawRepresentation
        bundle.signedPreKeySignature = mallory.signedPreKey.signature
        expectProtocolError(.authenticationFailed) { try bundle.verified() }
    }

    @Test func replacedSignedPreKeyIsRejected() throws {
        let bob = TestDevice("x3dh/bob")
        var bundle = bob.unverifiedBundle()
        bundle.signedPreKey[31] ^= 0x01
        expectProtocolError(.authenticationFailed) { try bundle.verified() }
    }

    @Test func badCertificateSignatureIsRejected() throws {
        let bob = TestDevice("x3dh/bob")
        var bundle = bob.unverifiedBundle()
        bundle.deviceCertificateSignature[63] ^= 0x01
        expectProtocolError(.authenticationFailed) { try bundle.verified() }
    }

    @Test func certificateFromAnotherAccountIsRejected() throws {
        let bob = TestDevice("x3dh/bob")
        let mallory = TestDevice("x3dh/mallory")
        var bundle = bob.unverifiedBundle()
        bundle.accountIdentityKey = mallory.account.publicKey.rawRepresentation
        expectProtocolError(.authenticationFailed) { try bundle.verified() }
        // A certificate the attacker made for bob's device key under their own account verifies as theirs only.
        bundle.deviceCertificateSignature = mallory.account.certify(bob.identity.publicKey).signature
        let verified = try bundle.verified()
        #expect(verified.certificate.accountIdentityKey == mallory.account.publicKey)
    }

    @Test func badKeySizesAreMalformed() throws {
        let bob = TestDevice("x3dh/bob")
        var bundle = bob.unverifiedBundle()
        bundle.accountIdentityKey = Data(count: 31)
        expectProtocolError(.malformedMessage) { try bundle.verified() }
        bundle = bob.unverifiedBundle()
        bundle.oneTimePreKey = (id: 1, publicKey: Data(count: 33))
        expectProtocolError(.malformedMessage) { try bundle.verified() }
    }

    @Test func verifiedBundleKeepsFields() throws {
        let bob = TestDevice("x3dh/bob")
        let bundle = try bob.bundle()
        #expect(bundle.deviceID == 7)
        #expect(bundle.signedPreKeyID == 1)
        #expect(bundle.signedPreKey == bob.signedPreKey.privateKey.publicKey)
        #expect(bundle.oneTimePreKey?.id == 100)
        #expect(bundle.oneTimePreKey?.publicKey == bob.oneTimePreKey.privateKey.publicKey)
        #expect(bundle.certificate == bob.identity.certificate)
        #expect(try bob.bundle(withOneTimePreKey: false).oneTimePreKey == nil)
    }

    @Test func deviceIdentityRejectsForeignCertificate() throws {
        let bob = TestDevice("x3dh/bob")
        let mallory = TestDevice("x3dh/mallory")
        expectProtocolError(.authenticationFailed) {
            try DeviceIdentity(privateKey: bob.identity.privateKey, certificate: mallory.identity.certificate)
        }
        let restored = try DeviceIdentity(privateKey: bob.identity.privateKey, certificate: bob.identity.certificate)
        #expect(restored.publicKey == bob.identity.publicKey)
    }

    @Test func certificateSignsTheDocumentedPayload() throws {
        let bob = TestDevice("x3dh/bob")
        let payload = Data("FlitzDeviceCertificate-v1".utf8) + Data([0]) + bob.account.publicKey.rawRepresentation
            + bob.identity.publicKey.rawRepresentation
        #expect(payload.count == 26 + 64)
        #expect(bob.account.publicKey.isValidSignature(bob.identity.certificate.signature, for: payload))
        // The signed prekey signature covers exactly the raw 32-byte public key.
        #expect(bob.identity.publicKey.isValidSignature(bob.signedPreKey.signature, for: bob.signedPreKey.privateKey.publicKey.rawRepresentation))
    }

    /// A relay that relabels IK_A as belonging to another account (a certificate anyone can make over
    /// someone else's device key) gets a different AD, so the first message does not decrypt.
    @Test func relabelledDeviceKeyDoesNotDecrypt() throws {
        let alice = TestDevice("x3dh/uks/alice")
        let bob = TestDevice("x3dh/uks/bob")
        let mallory = AccountIdentity(random: SeededRandom(label: "x3dh/uks/mallory"))
        var aliceSession = try Session.initiate(identity: alice.identity, bundle: try bob.bundle(), random: alice.random)
        let message = try aliceSession.encrypt(Data("hi".utf8), random: alice.random)
        guard case .preKey(let genuine) = try IncomingSessionMessage(parsing: message) else {
            Issue.record("expected a prekey message")
            return
        }
        let forged = mallory.certify(alice.identity.publicKey)
        #expect(throws: Never.self) { try forged.verify() }
        let agreement = try X3DH.respond(
            identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: bob.oneTimePreKey,
            initiatorCertificate: forged, baseKey: genuine.baseKey)
        var ratchet = DoubleRatchet(
            responderWith: agreement.sharedSecret, associatedData: agreement.associatedData, ratchetKey: bob.signedPreKey.privateKey)
        #expect {
            _ = try ratchet.decrypt(genuine.ratchetMessage, random: bob.random)
        } throws: { ($0 as? FlitzProtocolError)?.code == .authenticationFailed }
        // The genuine certificate decrypts.
        let (_, plaintext) = try Session.respond(
            to: genuine, identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey, random: bob.random)
        #expect(plaintext == Data("hi".utf8))
    }
}
