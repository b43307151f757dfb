import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Testing

/// Pairing (devices.md sections 5.2 and 5.3): the code, the derived keys, offer / grant / done, fingerprints.
struct DeviceLinkingTests {
    /// Secret bytes 00 01 … 1f.
    static func exampleSecret() throws -> LinkSecret { try LinkSecret(secret: SecretBytes(Data(0..<32))) }

    @Test func codeIsPrefixAndUnpaddedBase32() throws {
        let secret = try Self.exampleSecret()
        // RFC 4648 base32 of 00 01 … 1f, without the "====" padding.
        #expect(secret.code == "FLITZLINK1:AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQTCQKRMFYYDENBWHA5DYPQ")
        #expect(secret.code.count == 63)
        let random = SeededRandom(label: "link secret")
        let drawn = LinkSecret(random: random)
        #expect(try LinkSecret(code: drawn.code).secret.constantTimeEquals(drawn.secret))
    }

    @Test func parsesWhatAUserTypes() throws {
        let secret = try Self.exampleSecret()
        let code = secret.code
        for typed in [
            code.lowercased(), "  " + code + "\n", "flitzlink1:aaaq-eaye-audaocajbifqydiob4ibceqtcqkrmfyydenbwha5dypq",
            "FLITZLINK1: AAAQ EAYE AUDA OCAJ BIFQ YDIO B4IB CEQT CQKR MFYY DENB WHA5 DYPQ",
        ] {
            #expect(try LinkSecret(code: typed).secret.constantTimeEquals(secret.secret), "\(typed)")
        }
    }

    @Test func refusesBadCodesWithClearErrors() throws {
        let code = try Self.exampleSecret().code
        let body = String(code.dropFirst(11))
        let shorter = String(body.dropLast())
        func parseError(_ text: String) -> FlitzProtocolError? {
            do {
                _ = try LinkSecret(code: text)
                return nil
            } catch { return error }
        }
        let cases: [(text: String, words: String)] = [
            (body, "starts with"), ("FLITZLINK2:" + body, "starts with"), ("", "starts with"),
            ("FLITZLINK1:" + shorter, "52 characters"), ("FLITZLINK1:" + body + "A", "52 characters"),
            ("FLITZLINK1:" + shorter + "1", "A-Z"), ("FLITZLINK1:" + shorter + "=", "A-Z"),
            // The last character carries 1 bit of the secret and 4 zero bits: "R" instead of "Q" sets one of them.
            ("FLITZLINK1:" + shorter + "R", "last character"),
        ]
        for (text, words) in cases {
            guard let failure = parseError(text) else {
                Issue.record("\(text) parsed")
                continue
            }
            #expect(failure.code == FlitzProtocolError.Code.invalidPairingCode)
            #expect(failure.detail.contains(words), "\(failure.detail)")
            #expect(!failure.detail.contains(String(body.prefix(8))))
        }
        #expect(throws: FlitzProtocolError.self) { try LinkSecret(secret: SecretBytes(Data(count: 31))) }
    }

    @Test func keysAreTheSpecHKDFSplit() throws {
        let secret = try Self.exampleSecret()
        let keys = LinkKeys(secret: secret)
        let out = try HKDF.deriveKey(inputKeyMaterial: secret.secret, salt: Data(count: 32), info: Data("Flitz-Link-v1".utf8), length: 48)
        #expect(keys.rendezvousID == out.unsafeData.prefix(16))
        #expect(keys.rendezvousID.count == 16)
        #expect(keys.macKey.unsafeData == out.unsafeData.suffix(32))
        let message = Data("m".utf8)
        #expect(keys.tag(message) == HMACSHA256.authenticate(message, key: keys.macKey).unsafeData)
        #expect(keys.verify(keys.tag(message), for: message))
        var bad = keys.tag(message)
        bad[31] ^= 1
        #expect(!keys.verify(bad, for: message))
        #expect(!keys.verify(keys.tag(message).prefix(31), for: message))
        #expect(try keys.open(keys.seal(message)) == message)
        #expect(throws: FlitzProtocolError(.malformedMessage, "pairing message shorter than its tag")) { try keys.open(Data(count: 31)) }
    }

    /// The whole flow of section 5.3 between P (shows the code) and D (enters it), with the checks at each step.
    @Test func fullPairingFlow() throws {
        let random = SeededRandom(label: "pairing flow")
        let account = AccountIdentity(random: random)
        // P: `flitz devices link` draws s and shows the code.
        let secretP = LinkSecret(random: random)
        let keysP = LinkKeys(secret: secretP)
        // D: `flitz init --link CODE`.
        let deviceKey = Ed25519PrivateKey(random: random)
        let keysD = LinkKeys(secret: try LinkSecret(code: secretP.code))
        #expect(keysD.rendezvousID == keysP.rendezvousID)
        // Step 3 / 4: the offer, and the fingerprint both screens show.
        let offerBytes = LinkOffer(deviceIdentityKey: deviceKey.publicKey).sealed(with: keysD)
        #expect(offerBytes.count == 18 + 32 + 32)
        let offer = try LinkOffer(opening: offerBytes, with: keysP)
        #expect(offer.deviceIdentityKey == deviceKey.publicKey)
        #expect(DeviceFingerprint.of(identityKey: offer.deviceIdentityKey) == DeviceFingerprint.of(identityKey: deviceKey.publicKey))
        // Step 5 / 6: the grant.
        let grantBytes = LinkGrant(certificate: account.certify(offer.deviceIdentityKey), handle: "alice").sealed(with: keysP)
        #expect(grantBytes.count == 18 + 32 + 32 + 64 + 2 + 5 + 32)
        let grant = try LinkGrant(opening: grantBytes, with: keysD, expectedDeviceIdentityKey: deviceKey.publicKey)
        #expect(grant.accountIdentityKey == account.publicKey)
        #expect(grant.handle == "alice")
        let identity = try DeviceIdentity(privateKey: deviceKey, certificate: grant.certificate)
        #expect(identity.certificate.accountIdentityKey == account.publicKey)
        // Step 7 / 8: done.
        let doneBytes = LinkDone(deviceID: 0x0102_0304, deviceIdentityKey: deviceKey.publicKey).sealed(with: keysD)
        #expect(doneBytes.count == 17 + 4 + 32 + 32)
        let done = try LinkDone(opening: doneBytes, with: keysP, expectedDeviceIdentityKey: offer.deviceIdentityKey)
        #expect(done.deviceID == 0x0102_0304)
    }

    @Test func everyMessageRefusesAWrongCodeOrATamperedByte() throws {
        let random = SeededRandom(label: "pairing tamper")
        let account = AccountIdentity(random: random)
        let keys = LinkKeys(secret: LinkSecret(random: random)), otherKeys = LinkKeys(secret: LinkSecret(random: random))
        let device = Ed25519PrivateKey(random: random).publicKey
        let messages: [(Data, (Data, LinkKeys) throws(FlitzProtocolError) -> Void)] = [
            (LinkOffer(deviceIdentityKey: device).sealed(with: keys), { b, k throws(FlitzProtocolError) in _ = try LinkOffer(opening: b, with: k) }),
            (
                LinkGrant(certificate: account.certify(device), handle: "alice").sealed(with: keys),
                { b, k throws(FlitzProtocolError) in _ = try LinkGrant(opening: b, with: k, expectedDeviceIdentityKey: device) }
            ),
            (
                LinkDone(deviceID: 2, deviceIdentityKey: device).sealed(with: keys),
                { b, k throws(FlitzProtocolError) in _ = try LinkDone(opening: b, with: k, expectedDeviceIdentityKey: device) }
            ),
        ]
        for (bytes, open) in messages {
            try open(bytes, keys)
            #expect(throws: FlitzProtocolError(.authenticationFailed, "pairing message tag")) { try open(bytes, otherKeys) }
            for index in [0, bytes.count / 2, bytes.count - 1] {
                var tampered = bytes
                tampered[index] ^= 0x20
                #expect(throws: FlitzProtocolError(.authenticationFailed, "pairing message tag")) { try open(tampered, keys) }
            }
        }
    }

    @Test func grantAndDoneCheckTheDeviceKeyCertificateAndLayout() throws {
        let random = SeededRandom(label: "pairing checks")
        let account = AccountIdentity(random: random), other = AccountIdentity(random: random)
        let keys = LinkKeys(secret: LinkSecret(random: random))
        let device = Ed25519PrivateKey(random: random).publicKey, stranger = Ed25519PrivateKey(random: random).publicKey
        func grantError(_ sealed: Data, expecting key: Ed25519PublicKey? = nil) -> FlitzProtocolError.Code? {
            do {
                _ = try LinkGrant(opening: sealed, with: keys, expectedDeviceIdentityKey: key ?? device)
                return nil
            } catch { return error.code }
        }
        let good = LinkGrant(certificate: account.certify(device), handle: "alice")
        #expect(grantError(good.sealed(with: keys)) == nil)
        // A grant for another device's key (correctly tagged: a confused or hostile primary).
        #expect(grantError(good.sealed(with: keys), expecting: stranger) == .authenticationFailed)
        // A certificate by another account presented under AccK: does not verify.
        let forged = DeviceCertificate(accountIdentityKey: account.publicKey, deviceIdentityKey: device, signature: other.certify(device).signature)
        #expect(grantError(LinkGrant(certificate: forged, handle: "alice").sealed(with: keys)) == .authenticationFailed)
        // Layout: a handle that is no handle, a length that disagrees, a wrong label.
        #expect(grantError(LinkGrant(certificate: account.certify(device), handle: "Alice").sealed(with: keys)) == .malformedMessage)
        #expect(grantError(LinkGrant(certificate: account.certify(device), handle: "al").sealed(with: keys)) == .malformedMessage)
        #expect(grantError(keys.seal(good.payload + Data("x".utf8))) == .malformedMessage)
        #expect(grantError(keys.seal(good.payload.dropLast())) == .malformedMessage)
        var label = good.payload
        label[5] ^= 1
        #expect(grantError(keys.seal(label)) == .malformedMessage)
        // Offer and done: layout, and done for another key.
        #expect(throws: FlitzProtocolError.self) { try LinkOffer(opening: keys.seal(LinkOffer(deviceIdentityKey: device).payload.dropLast()), with: keys) }
        #expect(throws: FlitzProtocolError(.authenticationFailed, "link done is for another device key")) {
            try LinkDone(opening: LinkDone(deviceID: 2, deviceIdentityKey: device).sealed(with: keys), with: keys, expectedDeviceIdentityKey: stranger)
        }
        #expect(throws: FlitzProtocolError(.malformedMessage, "link done")) {
            try LinkDone(opening: keys.seal(LinkDone(deviceID: 2, deviceIdentityKey: device).payload + Data([0])), with: keys, expectedDeviceIdentityKey: device)
        }
    }

    @Test func fingerprintIsTheFirstEightBytesOfTheLabelledHash() throws {
        let key = try Ed25519PublicKey(rawRepresentation: Data(repeating: 0x22, count: 32))
        let digest = SHA256.hash(Data("FlitzDeviceFingerprint-v1".utf8) + key.rawRepresentation)
        let hex = digest.prefix(8).map { String(format: "%02X", $0) }.joined()
        let fingerprint = DeviceFingerprint.of(identityKey: key)
        #expect(fingerprint.replacingOccurrences(of: " ", with: "") == hex)
        #expect(fingerprint.count == 19)
        #expect(fingerprint.split(separator: " ").map(\.count) == [4, 4, 4, 4])
    }
}
