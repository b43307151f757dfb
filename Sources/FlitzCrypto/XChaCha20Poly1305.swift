import CFlitzSodium
import Foundation

/// XChaCha20-Poly1305-IETF AEAD (libsodium `crypto_aead_xchacha20poly1305_ietf_*`): 32-byte key,
/// 24-byte nonce, full 16-byte tag appended to the ciphertext.
public enum XChaCha20Poly1305 {
    /// Key length in bytes.
    public static let keyLength = 32
    /// Nonce length in bytes.
    public static let nonceLength = 24
    /// Tag length in bytes.
    public static let tagLength = 16

    /// Encrypts `plaintext`; returns ciphertext ‖ 16-byte tag.
    /// - Throws: `FlitzCryptoError.invalidLength` for a key that is not 32 bytes or a nonce that is not 24.
    public static func seal(_ plaintext: Data, key: SecretBytes, nonce: Data, authenticating ad: Data) throws(FlitzCryptoError) -> Data {
        try checkLengths(key: key, nonce: nonce)
        Sodium.ensureInitialized()
        var out = Data(count: plaintext.count + tagLength)
        var outLength: UInt64 = 0
        out.withUnsafeMutableBytes { o in
            plaintext.withUnsafeBytes { p in
                ad.withUnsafeBytes { a in
                    nonce.withUnsafeBytes { n in
                        key.withUnsafeBytes { k in
                            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                                o.bindMemory(to: UInt8.self).baseAddress!, &outLength,
                                p.bindMemory(to: UInt8.self).baseAddress, UInt64(plaintext.count),
                                a.bindMemory(to: UInt8.self).baseAddress, UInt64(ad.count), nil,
                                n.bindMemory(to: UInt8.self).baseAddress!, k.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        return out
    }

    /// Decrypts and verifies ciphertext ‖ tag.
    /// - Throws: `FlitzCryptoError.authenticationFailed` when the tag does not verify (including input
    ///   shorter than a tag); `.invalidLength` for a bad key or nonce length.
    public static func open(_ ciphertext: Data, key: SecretBytes, nonce: Data, authenticating ad: Data) throws(FlitzCryptoError) -> Data {
        try checkLengths(key: key, nonce: nonce)
        guard ciphertext.count >= tagLength else { throw FlitzCryptoError(.authenticationFailed) }
        Sodium.ensureInitialized()
        var out = Data(count: ciphertext.count - tagLength)
        var outLength: UInt64 = 0
        let status = out.withUnsafeMutableBytes { o in
            ciphertext.withUnsafeBytes { c in
                ad.withUnsafeBytes { a in
                    nonce.withUnsafeBytes { n in
                        key.withUnsafeBytes { k in
                            crypto_aead_xchacha20poly1305_ietf_decrypt(
                                o.bindMemory(to: UInt8.self).baseAddress, &outLength, nil,
                                c.bindMemory(to: UInt8.self).baseAddress!, UInt64(ciphertext.count),
                                a.bindMemory(to: UInt8.self).baseAddress, UInt64(ad.count),
                                n.bindMemory(to: UInt8.self).baseAddress!, k.bindMemory(to: UInt8.self).baseAddress!)
                        }
                    }
                }
            }
        }
        guard status == 0 else { throw FlitzCryptoError(.authenticationFailed) }
        return out
    }

    private static func checkLengths(key: SecretBytes, nonce: Data) throws(FlitzCryptoError) {
        guard key.count == keyLength else { throw FlitzCryptoError(.invalidLength, "key must be 32 bytes, got \(key.count)") }
        guard nonce.count == nonceLength else { throw FlitzCryptoError(.invalidLength, "nonce must be 24 bytes, got \(nonce.count)") }
    }
}
