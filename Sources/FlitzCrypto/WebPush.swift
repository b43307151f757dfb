import Crypto
import Foundation

/// Web Push message encryption (RFC 8291) in the `aes128gcm` content coding (RFC 8188), one record:
/// P-256 and AES-128-GCM from swift-crypto, HKDF-SHA-256 from `HKDF` (libsodium). Used by the relay to
/// encrypt wake-ups and by clients to open them (`protocol/push.md` 3.1, `vectors/push.json`).
public enum WebPush {
    /// Length of an uncompressed P-256 public key (`0x04 ‖ x ‖ y`): 65 bytes.
    public static let publicKeyLength = 65
    /// Length of a P-256 private scalar: 32 bytes.
    public static let privateKeyLength = 32
    /// Length of the authentication secret (RFC 8291 section 2): 16 bytes.
    public static let authSecretLength = 16
    /// Length of the RFC 8188 salt: 16 bytes.
    public static let saltLength = 16
    /// Record size the relay writes (RFC 8188 `rs`): 4096 bytes.
    public static let recordSize: UInt32 = 4096
    /// Header length with a 65-byte key id: salt 16 ‖ rs 4 ‖ idlen 1 ‖ keyid 65 = 86 bytes.
    public static let headerLength = 16 + 4 + 1 + 65
    /// AES-GCM tag length: 16 bytes.
    public static let tagLength = 16

    /// A subscriber's (the device's) Web Push keys (RFC 8291 section 2).
    public struct SubscriberKeys: Sendable {
        /// 32-byte P-256 private scalar (raw representation). Secret.
        public let privateKey: SecretBytes
        /// 65-byte uncompressed P-256 public key (`ua_public`), registered with the relay as `p256dh`.
        public let publicKey: Data
        /// 16-byte authentication secret, registered with the relay as `auth_secret`. Secret.
        public let authSecret: SecretBytes

        /// Keys from stored bytes.
        /// - Throws: `FlitzCryptoError.invalidLength` for a private key that is not 32 bytes or a secret
        ///   that is not 16; `.invalidKey` for a scalar that is not a valid P-256 private key.
        public init(privateKey: SecretBytes, authSecret: SecretBytes) throws(FlitzCryptoError) {
            guard privateKey.count == WebPush.privateKeyLength else {
                throw FlitzCryptoError(.invalidLength, "Web Push private key must be 32 bytes, got \(privateKey.count)")
            }
            guard authSecret.count == WebPush.authSecretLength else {
                throw FlitzCryptoError(.invalidLength, "Web Push auth secret must be 16 bytes, got \(authSecret.count)")
            }
            let key: P256.KeyAgreement.PrivateKey
            do {
                key = try privateKey.withUnsafeBytes { try P256.KeyAgreement.PrivateKey(rawRepresentation: Data($0)) }
            } catch {
                throw FlitzCryptoError(.invalidKey, "not a P-256 private key")
            }
            self.privateKey = privateKey
            self.publicKey = key.publicKey.x963Representation
            self.authSecret = authSecret
        }

        /// Fresh keys: a P-256 key pair from swift-crypto and a 16-byte secret from `random`.
        public static func generate(random: any RandomSource = SystemRandom()) -> SubscriberKeys {
            let key = P256.KeyAgreement.PrivateKey()
            // Both lengths are fixed above, and the scalar came from swift-crypto, so this cannot throw.
            return try! SubscriberKeys(privateKey: SecretBytes(key.rawRepresentation), authSecret: SecretBytes(random.bytes(authSecretLength)))
        }
    }

    /// Checks that `publicKey` is a 65-byte uncompressed point on P-256 (what the relay checks at registration).
    public static func isValidPublicKey(_ publicKey: Data) -> Bool {
        publicKey.count == publicKeyLength && publicKey.first == 0x04
            && (try? P256.KeyAgreement.PublicKey(x963Representation: publicKey)) != nil
    }

    /// Encrypts `plaintext` for a subscriber as one `aes128gcm` record padded to `paddedLength` bytes
    /// (plaintext ‖ 0x02 ‖ zeros; RFC 8188 section 2), with record size 4096.
    /// - Parameters:
    ///   - subscriberPublicKey: 65-byte uncompressed P-256 public key (`ua_public`).
    ///   - authSecret: 16-byte authentication secret.
    ///   - paddedLength: length of the padded record plaintext; at least `plaintext.count + 1`, at most 3993
    ///     (4096 minus tag and header overhead). `push.md` uses 64.
    ///   - ephemeralPrivateKey: the 32-byte sender key (`as_private`); nil makes a fresh one. Fixed only by vectors.
    ///   - salt: 16 bytes; nil draws them from `random`. Fixed only by vectors.
    /// - Returns: the message body: header (86 bytes) ‖ ciphertext (`paddedLength` + 16 bytes).
    /// - Throws: `FlitzCryptoError.invalidKey` for a public key not on P-256 or a bad ephemeral key;
    ///   `.invalidLength` for wrong sizes.
    public static func encrypt(
        _ plaintext: Data, subscriberPublicKey: Data, authSecret: SecretBytes, paddedLength: Int,
        ephemeralPrivateKey: SecretBytes? = nil, salt: Data? = nil, random: any RandomSource = SystemRandom()
    ) throws(FlitzCryptoError) -> Data {
        guard authSecret.count == authSecretLength else {
            throw FlitzCryptoError(.invalidLength, "Web Push auth secret must be 16 bytes, got \(authSecret.count)")
        }
        guard paddedLength >= plaintext.count + 1, paddedLength <= Int(recordSize) - tagLength - headerLength - 1 else {
            throw FlitzCryptoError(.invalidLength, "padded length \(paddedLength) does not fit a \(plaintext.count)-byte plaintext in one record")
        }
        let salt = salt ?? random.bytes(saltLength)
        guard salt.count == saltLength else { throw FlitzCryptoError(.invalidLength, "salt must be 16 bytes") }
        guard subscriberPublicKey.count == publicKeyLength,
              let uaPublic = try? P256.KeyAgreement.PublicKey(x963Representation: subscriberPublicKey)
        else { throw FlitzCryptoError(.invalidKey, "subscriber key is not an uncompressed P-256 point") }
        let asPrivate: P256.KeyAgreement.PrivateKey
        if let ephemeralPrivateKey {
            guard let key = ephemeralPrivateKey.withUnsafeBytes({ try? P256.KeyAgreement.PrivateKey(rawRepresentation: Data($0)) }) else {
                throw FlitzCryptoError(.invalidKey, "ephemeral key is not a P-256 private key")
            }
            asPrivate = key
        } else {
            asPrivate = P256.KeyAgreement.PrivateKey()
        }
        let asPublic = asPrivate.publicKey.x963Representation
        let ecdhSecret = try sharedSecret(asPrivate, uaPublic)
        let (key, nonce) = try contentKeys(ecdhSecret: ecdhSecret, authSecret: authSecret, salt: salt, uaPublic: subscriberPublicKey, asPublic: asPublic)

        var record = plaintext
        record.append(0x02)  // delimiter of the last (only) record
        record.append(Data(count: paddedLength - plaintext.count - 1))
        let sealed: AES.GCM.SealedBox
        do {
            sealed = try AES.GCM.seal(record, using: key, nonce: AES.GCM.Nonce(data: nonce))
        } catch {
            throw FlitzCryptoError(.libraryFailure, "AES-GCM seal failed")
        }
        var body = header(salt: salt, keyID: asPublic)
        body.append(sealed.ciphertext)
        body.append(sealed.tag)
        return body
    }

    /// Opens a one-record `aes128gcm` body encrypted to `keys` and removes its padding.
    /// - Returns: the plaintext without delimiter and padding.
    /// - Throws: `FlitzCryptoError.invalidLength` for a body too short, a record size other than the body's
    ///   single record allows, or a key id that is not 65 bytes; `.invalidKey` for a key id not on P-256;
    ///   `.authenticationFailed` when the tag does not verify or the padding is not `0x02` then zeros.
    public static func decrypt(_ body: Data, keys: SubscriberKeys) throws(FlitzCryptoError) -> Data {
        let body = Data(body)  // index from 0
        guard body.count >= 16 + 4 + 1 else { throw FlitzCryptoError(.invalidLength, "body shorter than an aes128gcm header") }
        let salt = body.subdata(in: 0..<16)
        let rs = body.subdata(in: 16..<20).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let idLength = Int(body[20])
        guard idLength == publicKeyLength, body.count >= 21 + idLength + tagLength + 1 else {
            throw FlitzCryptoError(.invalidLength, "key id must be a 65-byte P-256 key and a record must follow")
        }
        let asPublic = body.subdata(in: 21..<(21 + idLength))
        let sealedBytes = body.subdata(in: (21 + idLength)..<body.count)
        guard rs >= 18, sealedBytes.count <= Int(rs) else {
            throw FlitzCryptoError(.invalidLength, "body holds more than one record of size \(rs)")
        }
        guard let asKey = try? P256.KeyAgreement.PublicKey(x963Representation: asPublic) else {
            throw FlitzCryptoError(.invalidKey, "key id is not an uncompressed P-256 point")
        }
        let uaPrivate: P256.KeyAgreement.PrivateKey
        do {
            uaPrivate = try keys.privateKey.withUnsafeBytes { try P256.KeyAgreement.PrivateKey(rawRepresentation: Data($0)) }
        } catch {
            throw FlitzCryptoError(.invalidKey, "not a P-256 private key")
        }
        let ecdhSecret = try sharedSecret(uaPrivate, asKey)
        let (key, nonce) = try contentKeys(ecdhSecret: ecdhSecret, authSecret: keys.authSecret, salt: salt, uaPublic: keys.publicKey, asPublic: asPublic)
        var record: Data
        do {
            let box = try AES.GCM.SealedBox(
                nonce: AES.GCM.Nonce(data: nonce),
                ciphertext: sealedBytes.prefix(sealedBytes.count - tagLength),
                tag: sealedBytes.suffix(tagLength))
            record = try AES.GCM.open(box, using: key)
        } catch {
            throw FlitzCryptoError(.authenticationFailed, "Web Push message does not authenticate")
        }
        // Last record: content ‖ 0x02 ‖ zeros; strip from the end.
        guard let delimiter = record.lastIndex(where: { $0 != 0 }), record[delimiter] == 0x02 else {
            throw FlitzCryptoError(.authenticationFailed, "Web Push record padding is not 0x02 then zeros")
        }
        record = record.prefix(upTo: delimiter)
        return Data(record)
    }

    private static func header(salt: Data, keyID: Data) -> Data {
        var header = salt
        withUnsafeBytes(of: recordSize.bigEndian) { header.append(contentsOf: $0) }
        header.append(UInt8(keyID.count))
        header.append(keyID)
        return header
    }

    private static func sharedSecret(_ privateKey: P256.KeyAgreement.PrivateKey, _ publicKey: P256.KeyAgreement.PublicKey) throws(FlitzCryptoError) -> SecretBytes {
        do {
            let secret = try privateKey.sharedSecretFromKeyAgreement(with: publicKey)
            return secret.withUnsafeBytes { SecretBytes($0) }
        } catch {
            throw FlitzCryptoError(.invalidKey, "P-256 key agreement failed")
        }
    }

    /// RFC 8291 section 3.4 then RFC 8188 section 2.2 and 2.3: the 16-byte content encryption key and
    /// the 12-byte nonce of record 0.
    private static func contentKeys(ecdhSecret: SecretBytes, authSecret: SecretBytes, salt: Data, uaPublic: Data, asPublic: Data) throws(FlitzCryptoError) -> (SymmetricKey, Data) {
        var keyInfo = Data("WebPush: info".utf8)
        keyInfo.append(0x00)
        keyInfo.append(uaPublic)
        keyInfo.append(asPublic)
        let ikm = try HKDF.deriveKey(inputKeyMaterial: ecdhSecret, salt: authSecret.unsafeData, info: keyInfo, length: 32)
        let prk = HKDF.extract(salt: salt, inputKeyMaterial: ikm)
        let cek = try HKDF.expand(pseudoRandomKey: prk, info: Data("Content-Encoding: aes128gcm\u{0}".utf8), length: 16)
        let nonce = try HKDF.expand(pseudoRandomKey: prk, info: Data("Content-Encoding: nonce\u{0}".utf8), length: 12)
        return (cek.withUnsafeBytes { SymmetricKey(data: $0) }, nonce.unsafeData)
    }
}
