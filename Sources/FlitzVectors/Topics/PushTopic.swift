import Crypto
import FlitzCrypto
import Foundation

/// RFC 8291 message encryption (`aes128gcm`, RFC 8188, one record) written from RFC 8291 section 3.4's
/// pseudo-code with swift-crypto's P-256, HMAC-SHA-256 and AES-GCM, independently of `WebPush`: the generator
/// takes the intermediate values of `vectors/push.json` from it and the verifier holds both to them.
public enum WebPushReference {
    /// Every intermediate value of one encryption, named as in RFC 8291 Appendix A.
    public struct Trace: Sendable {
        /// 65-byte uncompressed P-256 keys: the subscriber's (`ua_public`) and the sender's ephemeral one (`as_public`).
        public var subscriberPublicKey: Data, ephemeralPublicKey: Data
        /// ECDH(as_private, ua_public), 32 bytes.
        public var ecdhSecret: Data
        /// `"WebPush: info" ‖ 0x00 ‖ ua_public ‖ as_public`, 144 bytes.
        public var keyInfo: Data
        /// HKDF(salt = auth_secret, ikm = ecdh_secret, info = key_info), 32 bytes.
        public var ikm: Data
        /// HKDF-Extract(salt, IKM), 32 bytes.
        public var prk: Data
        /// Content encryption key, 16 bytes, and nonce of record 0, 12 bytes.
        public var contentEncryptionKey: Data, nonce: Data
        /// The record plaintext: plaintext ‖ delimiter ‖ zeros, `paddedLength` bytes.
        public var paddedPlaintext: Data
        /// `salt ‖ rs (4 bytes, big-endian) ‖ idlen ‖ keyid`, 86 bytes.
        public var header: Data
        /// header ‖ AES-128-GCM(paddedPlaintext) ‖ tag.
        public var body: Data
    }

    /// Encrypts `plaintext` with the given keys; `delimiter` other than 0x02 makes a record a receiver must refuse.
    /// - Throws: `VectorCheckFailure` for a key that is not on P-256.
    public static func encrypt(
        plaintext: Data, subscriberPrivateKey: Data, authSecret: Data, ephemeralPrivateKey: Data, salt: Data, paddedLength: Int,
        recordSize: UInt32 = 4096, delimiter: UInt8 = 0x02
    ) throws(VectorCheckFailure) -> Trace {
        let ua: P256.KeyAgreement.PrivateKey, eph: P256.KeyAgreement.PrivateKey
        do {
            ua = try P256.KeyAgreement.PrivateKey(rawRepresentation: subscriberPrivateKey)
            eph = try P256.KeyAgreement.PrivateKey(rawRepresentation: ephemeralPrivateKey)
        } catch {
            throw VectorCheckFailure("a private key is not a P-256 scalar")
        }
        let uaPublic = ua.publicKey.x963Representation, asPublic = eph.publicKey.x963Representation
        let ecdh: Data
        do {
            ecdh = try eph.sharedSecretFromKeyAgreement(with: ua.publicKey).withUnsafeBytes { Data($0) }
        } catch {
            throw VectorCheckFailure("P-256 key agreement failed")
        }
        func hmac(_ key: Data, _ message: Data) -> Data { Data(HMAC<Crypto.SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key))) }
        // RFC 8291 section 3.4: PRK_key = HMAC(auth, ecdh); IKM = HMAC(PRK_key, key_info ‖ 0x01).
        let keyInfo = Data("WebPush: info".utf8) + [0x00] + uaPublic + asPublic
        let ikm = hmac(hmac(authSecret, ecdh), keyInfo + [0x01])
        // RFC 8188 section 2.2 and 2.3: PRK = HMAC(salt, IKM); CEK and NONCE are the first block, truncated.
        let prk = hmac(salt, ikm)
        let cek = hmac(prk, Data("Content-Encoding: aes128gcm".utf8) + [0x00, 0x01]).prefix(16)
        let nonce = hmac(prk, Data("Content-Encoding: nonce".utf8) + [0x00, 0x01]).prefix(12)
        var padded = plaintext + [delimiter]
        padded += Data(count: max(0, paddedLength - padded.count))
        var header = salt
        header += [UInt8(recordSize >> 24), UInt8(recordSize >> 16 & 0xff), UInt8(recordSize >> 8 & 0xff), UInt8(recordSize & 0xff)]
        header += [UInt8(asPublic.count)] + asPublic
        let sealed: AES.GCM.SealedBox
        do {
            sealed = try AES.GCM.seal(padded, using: SymmetricKey(data: cek), nonce: AES.GCM.Nonce(data: nonce))
        } catch {
            throw VectorCheckFailure("AES-GCM seal failed")
        }
        return Trace(
            subscriberPublicKey: uaPublic, ephemeralPublicKey: asPublic, ecdhSecret: ecdh, keyInfo: keyInfo, ikm: ikm, prk: prk,
            contentEncryptionKey: Data(cek), nonce: Data(nonce), paddedPlaintext: padded, header: header,
            body: header + sealed.ciphertext + sealed.tag)
    }

    /// The wake-up of `push.md` 6 for a class name: `{"v":1,"wake":"<class>"}`, UTF-8, no spaces.
    public static func wakeUp(_ wakeClass: String) -> Data { Data(#"{"v":1,"wake":"\#(wakeClass)"}"#.utf8) }
}

/// `push.json`: Web Push message encryption (RFC 8291, `aes128gcm` of RFC 8188) as the relay sends wake-ups
/// (`protocol/push.md` 3.1 and 6).
///
/// Group `encrypt` (valid): `subscriberPrivateKey`, `subscriberPublicKey`, `authSecret`, `ephemeralPrivateKey`,
/// `ephemeralPublicKey`, `salt`, `recordSize`, `paddedLength`, `plaintext` (and `wakeClass` for a wake-up),
/// the intermediates `ecdhSecret`, `keyInfo`, `ikm`, `prk`, `contentEncryptionKey`, `nonce`, `header`, and `body`.
/// Group `decrypt`: `subscriberPrivateKey`, `authSecret`, `body`; valid: `plaintext`; invalid: the error.
enum PushTopic {
    static let topic = VectorTopic(name: "push", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        let keys = try WebPush.SubscriberKeys(
            privateKey: SecretBytes(try test.hex("subscriberPrivateKey")), authSecret: SecretBytes(try test.hex("authSecret")))
        switch try vector.groupType() {
        case "encrypt":
            let plaintext = try test.hex("plaintext"), body = try test.hex("body"), salt = try test.hex("salt")
            let paddedLength = try test.int("paddedLength"), ephemeral = try test.hex("ephemeralPrivateKey")
            try check(try test.int("recordSize"), Int(WebPush.recordSize), "recordSize")
            if test.has("wakeClass") {
                let wakeClass = try test.string("wakeClass")
                try require(["urgent", "ring"].contains(wakeClass), "wakeClass must be urgent or ring")
                try check(plaintext, WebPushReference.wakeUp(wakeClass), "plaintext is the wake-up of push.md 6")
                try check(paddedLength, 64, "paddedLength of a wake-up (push.md 3.1)")
                try check(body.count, 86 + 64 + 16, "body length of a wake-up")
            }
            // Independently, from RFC 8291 section 3.4.
            let trace = try WebPushReference.encrypt(
                plaintext: plaintext, subscriberPrivateKey: try test.hex("subscriberPrivateKey"), authSecret: try test.hex("authSecret"),
                ephemeralPrivateKey: ephemeral, salt: salt, paddedLength: paddedLength)
            try check(trace.subscriberPublicKey, try test.hex("subscriberPublicKey"), "subscriberPublicKey")
            try check(trace.ephemeralPublicKey, try test.hex("ephemeralPublicKey"), "ephemeralPublicKey")
            try check(trace.ecdhSecret, try test.hex("ecdhSecret"), "ecdhSecret")
            try check(trace.keyInfo, try test.hex("keyInfo"), "keyInfo")
            try check(trace.ikm, try test.hex("ikm"), "ikm")
            try check(trace.prk, try test.hex("prk"), "prk")
            try check(trace.contentEncryptionKey, try test.hex("contentEncryptionKey"), "contentEncryptionKey")
            try check(trace.nonce, try test.hex("nonce"), "nonce")
            try check(trace.header, try test.hex("header"), "header")
            try check(trace.body, body, "body (reference RFC 8291 encryption)")
            // Through FlitzCrypto's API.
            try check(keys.publicKey, try test.hex("subscriberPublicKey"), "WebPush.SubscriberKeys public key")
            return try VectorOutcome.capture {
                let encrypted = try WebPush.encrypt(
                    plaintext, subscriberPublicKey: keys.publicKey, authSecret: keys.authSecret, paddedLength: paddedLength,
                    ephemeralPrivateKey: SecretBytes(ephemeral), salt: salt)
                try check(encrypted, body, "WebPush.encrypt output")
                try check(try WebPush.decrypt(body, keys: keys), plaintext, "WebPush.decrypt")
            }
        case "decrypt":
            let body = try test.hex("body")
            return try VectorOutcome.capture {
                let plaintext = try WebPush.decrypt(body, keys: keys)
                try check(plaintext, try test.hex("plaintext"), "WebPush.decrypt")
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "push")
        }
    }
}
