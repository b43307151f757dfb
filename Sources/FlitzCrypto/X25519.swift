import CFlitzSodium
import Foundation

/// A 32-byte X25519 public key (RFC 7748), raw little-endian u-coordinate.
public struct X25519PublicKey: Hashable, Sendable, CustomStringConvertible {
    /// The 32 raw bytes.
    public let rawRepresentation: Data

    /// Wraps 32 raw bytes.
    /// - Throws: `FlitzCryptoError.invalidLength` unless exactly 32 bytes.
    public init(rawRepresentation: Data) throws(FlitzCryptoError) {
        guard rawRepresentation.count == 32 else {
            throw FlitzCryptoError(.invalidLength, "X25519 public key must be 32 bytes, got \(rawRepresentation.count)")
        }
        self.rawRepresentation = Data(rawRepresentation)
    }

    public var description: String { "X25519PublicKey(\(rawRepresentation.hexString))" }
}

/// A 32-byte X25519 private key (RFC 7748); zeroed on release, never printed.
public struct X25519PrivateKey: Sendable, CustomStringConvertible {
    /// The secret scalar as given (libsodium clamps it at use).
    public let secret: SecretBytes
    /// The matching public key, `crypto_scalarmult_base(secret)`.
    public let publicKey: X25519PublicKey

    /// A new key from 32 bytes of `random`.
    public init(random: any RandomSource = SystemRandom()) {
        // Cannot throw: exactly 32 bytes.
        try! self.init(rawRepresentation: SecretBytes(random.bytes(32)))
    }

    /// A key from its 32 secret bytes.
    /// - Throws: `FlitzCryptoError.invalidLength` unless exactly 32 bytes.
    public init(rawRepresentation secret: SecretBytes) throws(FlitzCryptoError) {
        guard secret.count == 32 else {
            throw FlitzCryptoError(.invalidLength, "X25519 private key must be 32 bytes, got \(secret.count)")
        }
        Sodium.ensureInitialized()
        var pub = Data(count: 32)
        pub.withUnsafeMutableBytes { p in
            secret.withUnsafeBytes { s in
                _ = crypto_scalarmult_base(p.bindMemory(to: UInt8.self).baseAddress!, s.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        self.secret = secret
        self.publicKey = try X25519PublicKey(rawRepresentation: pub)
    }

    /// The 32-byte X25519 shared secret with `peer` (RFC 7748 §6.1).
    /// - Throws: `FlitzCryptoError.nonContributory` when the result is all zero (a low-order peer key).
    public func sharedSecret(with peer: X25519PublicKey) throws(FlitzCryptoError) -> SecretBytes {
        Sodium.ensureInitialized()
        var status: Int32 = 0
        let shared = SecretBytes(count: 32) { out in
            secret.withUnsafeBytes { s in
                peer.rawRepresentation.withUnsafeBytes { p in
                    status = crypto_scalarmult(
                        out.bindMemory(to: UInt8.self).baseAddress!, s.bindMemory(to: UInt8.self).baseAddress!,
                        p.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
        }
        guard status == 0 else { throw FlitzCryptoError(.nonContributory) }
        return shared
    }

    public var description: String { "X25519PrivateKey(<redacted>, public: \(publicKey.rawRepresentation.hexString))" }
}
