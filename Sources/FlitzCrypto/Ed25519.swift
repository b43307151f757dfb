import CFlitzSodium
import Foundation

/// A 32-byte Ed25519 public key (RFC 8032). Identity keys are Ed25519; their X25519 form for
/// Diffie-Hellman comes from `crypto_sign_ed25519_pk_to_curve25519` (DESIGN.md, "Keys of an account").
public struct Ed25519PublicKey: Hashable, Sendable, CustomStringConvertible {
    /// The 32 raw bytes, as used in every signature and AD.
    public let rawRepresentation: Data

    /// Wraps 32 raw bytes.
    /// - Throws: `FlitzCryptoError.invalidLength` unless exactly 32 bytes.
    public init(rawRepresentation: Data) throws(FlitzCryptoError) {
        guard rawRepresentation.count == 32 else {
            throw FlitzCryptoError(.invalidLength, "Ed25519 public key must be 32 bytes, got \(rawRepresentation.count)")
        }
        self.rawRepresentation = Data(rawRepresentation)
    }

    /// Whether `signature` (64 bytes) is this key's valid signature of `message` (`crypto_sign_verify_detached`).
    public func isValidSignature(_ signature: Data, for message: Data) -> Bool {
        guard signature.count == Int(crypto_sign_BYTES) else { return false }
        Sodium.ensureInitialized()
        return signature.withUnsafeBytes { s in
            message.withUnsafeBytes { m in
                rawRepresentation.withUnsafeBytes { k in
                    crypto_sign_verify_detached(
                        s.bindMemory(to: UInt8.self).baseAddress!, m.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count),
                        k.bindMemory(to: UInt8.self).baseAddress!) == 0
                }
            }
        }
    }

    /// Checks a signature.
    /// - Throws: `FlitzCryptoError.authenticationFailed` when it does not verify.
    public func verify(_ signature: Data, for message: Data) throws(FlitzCryptoError) {
        guard isValidSignature(signature, for: message) else { throw FlitzCryptoError(.authenticationFailed) }
    }

    /// The 32-byte X25519 form of this key, for X3DH.
    /// - Throws: `FlitzCryptoError.invalidKey` when the point has no valid X25519 form.
    public func x25519PublicKey() throws(FlitzCryptoError) -> X25519PublicKey {
        Sodium.ensureInitialized()
        var out = Data(count: 32)
        let status = out.withUnsafeMutableBytes { o in
            rawRepresentation.withUnsafeBytes { k in
                crypto_sign_ed25519_pk_to_curve25519(o.bindMemory(to: UInt8.self).baseAddress!, k.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        guard status == 0 else { throw FlitzCryptoError(.invalidKey, "Ed25519 key has no X25519 form") }
        return try X25519PublicKey(rawRepresentation: out)
    }

    public var description: String { "Ed25519PublicKey(\(rawRepresentation.hexString))" }
}

/// An Ed25519 signing key from a 32-byte seed (RFC 8032 private key); zeroed on release, never printed.
public struct Ed25519PrivateKey: Sendable, CustomStringConvertible {
    /// The 32-byte seed (RFC 8032's private key).
    public let seed: SecretBytes
    /// libsodium's 64-byte secret key (seed ‖ public key).
    private let expanded: SecretBytes
    /// The matching public key.
    public let publicKey: Ed25519PublicKey

    /// A new key from 32 bytes of `random`.
    public init(random: any RandomSource = SystemRandom()) {
        try! self.init(seed: SecretBytes(random.bytes(32)))
    }

    /// A key from its 32-byte seed (`crypto_sign_seed_keypair`).
    /// - Throws: `FlitzCryptoError.invalidLength` unless exactly 32 bytes.
    public init(seed: SecretBytes) throws(FlitzCryptoError) {
        guard seed.count == 32 else {
            throw FlitzCryptoError(.invalidLength, "Ed25519 seed must be 32 bytes, got \(seed.count)")
        }
        Sodium.ensureInitialized()
        var pub = Data(count: 32)
        expanded = SecretBytes(count: 64) { sk in
            pub.withUnsafeMutableBytes { p in
                seed.withUnsafeBytes { s in
                    _ = crypto_sign_seed_keypair(
                        p.bindMemory(to: UInt8.self).baseAddress!, sk.bindMemory(to: UInt8.self).baseAddress!,
                        s.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
        }
        self.seed = seed
        self.publicKey = try Ed25519PublicKey(rawRepresentation: pub)
    }

    /// The 64-byte signature of `message` (`crypto_sign_detached`; deterministic per RFC 8032).
    public func signature(for message: Data) -> Data {
        var sig = Data(count: Int(crypto_sign_BYTES))
        sig.withUnsafeMutableBytes { out in
            message.withUnsafeBytes { m in
                expanded.withUnsafeBytes { sk in
                    _ = crypto_sign_detached(
                        out.bindMemory(to: UInt8.self).baseAddress!, nil, m.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count),
                        sk.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
        }
        return sig
    }

    /// The X25519 form of this key (`crypto_sign_ed25519_sk_to_curve25519`), for X3DH.
    public func x25519PrivateKey() -> X25519PrivateKey {
        let secret = SecretBytes(count: 32) { out in
            expanded.withUnsafeBytes { sk in
                _ = crypto_sign_ed25519_sk_to_curve25519(out.bindMemory(to: UInt8.self).baseAddress!, sk.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        return try! X25519PrivateKey(rawRepresentation: secret)
    }

    public var description: String { "Ed25519PrivateKey(<redacted>, public: \(publicKey.rawRepresentation.hexString))" }
}
