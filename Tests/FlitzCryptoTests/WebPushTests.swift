import FlitzCrypto
import Foundation
import Testing

/// RFC 8291 Appendix A: the fixed keys, salt and body every Web Push implementation reproduces.
enum RFC8291 {
    static func b64url(_ text: String) -> Data {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64)!
    }
    static let plaintext = Data("When I grow up, I want to be a watermelon".utf8)
    static let asPrivate = b64url("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
    static let uaPrivate = b64url("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")
    static let uaPublic = b64url("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
    static let salt = b64url("DGv6ra1nlYgDCS1FRnbzlw")
    static let auth = b64url("BTBZMqHH6r4Tts7J_aSIgg")
    static let body = b64url(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    static var keys: WebPush.SubscriberKeys { try! WebPush.SubscriberKeys(privateKey: SecretBytes(uaPrivate), authSecret: SecretBytes(auth)) }
}

@Suite struct WebPushTests {
    @Test func encryptReproducesRFC8291AppendixA() throws {
        let body = try WebPush.encrypt(
            RFC8291.plaintext, subscriberPublicKey: RFC8291.uaPublic, authSecret: SecretBytes(RFC8291.auth),
            paddedLength: RFC8291.plaintext.count + 1, ephemeralPrivateKey: SecretBytes(RFC8291.asPrivate), salt: RFC8291.salt)
        #expect(body == RFC8291.body)
    }

    @Test func decryptOpensRFC8291AppendixA() throws {
        #expect(RFC8291.keys.publicKey == RFC8291.uaPublic)
        #expect(try WebPush.decrypt(RFC8291.body, keys: RFC8291.keys) == RFC8291.plaintext)
    }

    @Test func aWakeUpIsPaddedTo64BytesAndRoundTrips() throws {
        let keys = WebPush.SubscriberKeys.generate()
        let urgent = try WebPush.encrypt(Data(#"{"v":1,"wake":"urgent"}"#.utf8), subscriberPublicKey: keys.publicKey, authSecret: keys.authSecret, paddedLength: 64)
        let ring = try WebPush.encrypt(Data(#"{"v":1,"wake":"ring"}"#.utf8), subscriberPublicKey: keys.publicKey, authSecret: keys.authSecret, paddedLength: 64)
        #expect(urgent.count == WebPush.headerLength + 64 + WebPush.tagLength)
        #expect(ring.count == urgent.count)
        #expect(try WebPush.decrypt(ring, keys: keys) == Data(#"{"v":1,"wake":"ring"}"#.utf8))
    }

    /// Salt, key id length, key id, ciphertext and tag are all bound; the record size (bytes 16 to 19) is not
    /// (RFC 8188 does not authenticate it) and only bounds the record.
    @Test func everyFlippedByteIsRefused() throws {
        for index in [0, 15, 20, 21, 60, 85, WebPush.headerLength, RFC8291.body.count - 1] {
            var tampered = RFC8291.body
            tampered[index] ^= 0x01
            #expect(throws: FlitzCryptoError.self, "byte \(index)") { try WebPush.decrypt(tampered, keys: RFC8291.keys) }
        }
    }

    @Test func anotherDevicesKeysCannotOpenIt() throws {
        let other = WebPush.SubscriberKeys.generate()
        #expect(throws: FlitzCryptoError(.authenticationFailed, "Web Push message does not authenticate")) {
            try WebPush.decrypt(RFC8291.body, keys: try WebPush.SubscriberKeys(privateKey: other.privateKey, authSecret: SecretBytes(RFC8291.auth)))
        }
    }

    @Test func badInputsGiveTypedErrors() throws {
        #expect(throws: FlitzCryptoError.self) { try WebPush.decrypt(Data(count: 20), keys: RFC8291.keys) }
        #expect(throws: FlitzCryptoError.self) { try WebPush.decrypt(RFC8291.body.prefix(90), keys: RFC8291.keys) }
        #expect(throws: FlitzCryptoError.self) {
            try WebPush.encrypt(Data("x".utf8), subscriberPublicKey: Data(count: 65), authSecret: SecretBytes(RFC8291.auth), paddedLength: 64)
        }
        #expect(throws: FlitzCryptoError.self) {
            try WebPush.encrypt(Data(count: 64), subscriberPublicKey: RFC8291.uaPublic, authSecret: SecretBytes(RFC8291.auth), paddedLength: 64)
        }
        #expect(!WebPush.isValidPublicKey(Data(count: 65)))
        #expect(WebPush.isValidPublicKey(RFC8291.uaPublic))
        #expect(throws: FlitzCryptoError.self) { try WebPush.SubscriberKeys(privateKey: SecretBytes(Data(count: 32)), authSecret: SecretBytes(RFC8291.auth)) }
    }
}
