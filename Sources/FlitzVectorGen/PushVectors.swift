import FlitzCrypto
import FlitzVectors
import Foundation

/// `vectors/push.json`: RFC 8291 Web Push encryption, RFC 8291 Appendix A and the wake-ups of push.md 6.
enum PushVectors {
    static let label = "flitz-vectors/push"

    static func b64url(_ text: String) -> Data {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64.append("=") }
        return Data(base64Encoded: base64)!
    }

    static func make() throws -> VectorFileBuilder {
        func encryptCase(
            _ comment: String, flags: [String], plaintext: Data, wakeClass: String?, subscriberPrivateKey: Data, authSecret: Data,
            ephemeralPrivateKey: Data, salt: Data, paddedLength: Int
        ) throws -> VectorTest {
            let trace = try WebPushReference.encrypt(
                plaintext: plaintext, subscriberPrivateKey: subscriberPrivateKey, authSecret: authSecret,
                ephemeralPrivateKey: ephemeralPrivateKey, salt: salt, paddedLength: paddedLength)
            // The generator's output is the library's; the reference must agree or generation stops.
            let keys = try WebPush.SubscriberKeys(privateKey: SecretBytes(subscriberPrivateKey), authSecret: SecretBytes(authSecret))
            let body = try WebPush.encrypt(
                plaintext, subscriberPublicKey: keys.publicKey, authSecret: keys.authSecret, paddedLength: paddedLength,
                ephemeralPrivateKey: SecretBytes(ephemeralPrivateKey), salt: salt)
            guard body == trace.body else { throw GeneratorError("WebPush.encrypt and the RFC 8291 reference disagree: \(comment)") }
            var fields: [String: JSONValue] = [
                "subscriberPrivateKey": .hex(subscriberPrivateKey), "subscriberPublicKey": .hex(trace.subscriberPublicKey),
                "authSecret": .hex(authSecret), "ephemeralPrivateKey": .hex(ephemeralPrivateKey),
                "ephemeralPublicKey": .hex(trace.ephemeralPublicKey), "salt": .hex(salt), "recordSize": .int(Int(WebPush.recordSize)),
                "paddedLength": .int(paddedLength), "plaintext": .hex(plaintext), "ecdhSecret": .hex(trace.ecdhSecret),
                "keyInfo": .hex(trace.keyInfo), "ikm": .hex(trace.ikm), "prk": .hex(trace.prk),
                "contentEncryptionKey": .hex(trace.contentEncryptionKey), "nonce": .hex(trace.nonce), "header": .hex(trace.header),
                "body": .hex(body),
            ]
            if let wakeClass { fields["wakeClass"] = .string(wakeClass) }
            return VectorTest(comment, flags: flags, fields)
        }

        // RFC 8291 Appendix A, byte for byte (its padding is the delimiter alone).
        let rfcPlaintext = Data("When I grow up, I want to be a watermelon".utf8)
        let rfcUAPrivate = b64url("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")
        let rfcAuth = b64url("BTBZMqHH6r4Tts7J_aSIgg")
        let rfcASPrivate = b64url("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")
        let rfcSalt = b64url("DGv6ra1nlYgDCS1FRnbzlw")
        let rfcBody = b64url(
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
        let rfc = try encryptCase(
            "RFC 8291 Appendix A", flags: ["RFC8291AppendixA"], plaintext: rfcPlaintext, wakeClass: nil,
            subscriberPrivateKey: rfcUAPrivate, authSecret: rfcAuth, ephemeralPrivateKey: rfcASPrivate, salt: rfcSalt,
            paddedLength: rfcPlaintext.count + 1)
        guard rfc.fields["body"] == .hex(rfcBody) else { throw GeneratorError("RFC 8291 Appendix A body not reproduced") }

        // Our wake-ups to one subscriber, each with its own ephemeral key and salt.
        let random = SeededRandom(label: label)
        let subscriberPrivateKey = random.bytes(32), authSecret = random.bytes(16)
        var encryptTests = [rfc]
        var wakeBodies: [Data] = []
        for wakeClass in ["urgent", "ring"] {
            let ephemeral = random.bytes(32), salt = random.bytes(16)
            let test = try encryptCase(
                "wake-up \(wakeClass), padded to 64 bytes", flags: ["WakeUp"], plaintext: WebPushReference.wakeUp(wakeClass),
                wakeClass: wakeClass, subscriberPrivateKey: subscriberPrivateKey, authSecret: authSecret, ephemeralPrivateKey: ephemeral,
                salt: salt, paddedLength: 64)
            encryptTests.append(test)
            if case .string(let hex)? = test.fields["body"], let body = Data(hexString: hex) { wakeBodies.append(body) }
        }
        let urgent = wakeBodies[0]

        func decryptCase(_ comment: String, flags: [String] = [], body: Data, error: FlitzCryptoError.Code?, plaintext: Data? = nil) -> VectorTest {
            var fields: [String: JSONValue] = ["subscriberPrivateKey": .hex(subscriberPrivateKey), "authSecret": .hex(authSecret), "body": .hex(body)]
            if let plaintext { fields["plaintext"] = .hex(plaintext) }
            return VectorTest(comment, flags: flags, result: error.map { .invalid(VectorErrorRef($0)) } ?? .valid, fields)
        }
        func flipped(_ index: Int) -> Data {
            var body = urgent
            body[index] ^= 0x01
            return body
        }
        // A record whose delimiter is 0x01 (not the last record) though it is the only one: well encrypted, refused.
        let badDelimiter = try WebPushReference.encrypt(
            plaintext: WebPushReference.wakeUp("urgent"), subscriberPrivateKey: subscriberPrivateKey, authSecret: authSecret,
            ephemeralPrivateKey: random.bytes(32), salt: random.bytes(16), paddedLength: 64, delimiter: 0x01)
        let otherAuth = random.bytes(16)
        let decryptTests = [
            decryptCase("the urgent wake-up opens", body: urgent, error: nil, plaintext: WebPushReference.wakeUp("urgent")),
            decryptCase("ciphertext byte flipped", flags: ["Tampered"], body: flipped(86), error: .authenticationFailed),
            decryptCase("tag byte flipped", flags: ["Tampered"], body: flipped(urgent.count - 1), error: .authenticationFailed),
            decryptCase("salt byte flipped", flags: ["Tampered"], body: flipped(0), error: .authenticationFailed),
            decryptCase("truncated to header and 16 bytes", flags: ["Truncated"], body: urgent.prefix(86 + 16), error: .invalidLength),
            decryptCase("padding delimiter 0x01 in the last record", flags: ["BadPadding"], body: badDelimiter.body, error: .authenticationFailed),
            VectorTest(
                "another auth secret", flags: ["WrongKeys"], result: .invalid(VectorErrorRef(FlitzCryptoError.Code.authenticationFailed)),
                ["subscriberPrivateKey": .hex(subscriberPrivateKey), "authSecret": .hex(otherAuth), "body": .hex(urgent)]),
        ]

        return VectorFileBuilder(
            topic: "push",
            description: "Web Push message encryption (RFC 8291, aes128gcm of RFC 8188, one record of size 4096) as the relay "
                + "encrypts wake-ups: RFC 8291 Appendix A, then both wake-ups of push.md 6 padded to 64 bytes, then bodies a "
                + "receiver must refuse. Draws of SeededRandom(label: \"\(label)\"), in order: the subscriber's P-256 private key (32) "
                + "and auth secret (16); per wake-up (urgent, ring) the ephemeral private key (32) and salt (16); the ephemeral key "
                + "and salt of the bad-padding body; another auth secret (16).",
            specification: "protocol/push.md sections 3.1 and 6; RFC 8291; RFC 8188",
            notes: [
                "RFC8291AppendixA": "The example of RFC 8291 Appendix A (padding: the 0x02 delimiter only).",
                "WakeUp": "A wake-up of push.md 6 padded to 64 bytes: every class has a 166-byte body.",
                "Tampered": "One bit of the urgent wake-up's body flipped: it must not open.",
                "Truncated": "Shorter than a header and a record with a tag.",
                "BadPadding": "The record's delimiter is 0x01 (RFC 8188: not the last record) though the body has one record.",
                "WrongKeys": "The body under another auth secret.",
            ],
            seeds: [label],
            groups: [VectorGroup(type: "encrypt", tests: encryptTests), VectorGroup(type: "decrypt", tests: decryptTests)])
    }
}
