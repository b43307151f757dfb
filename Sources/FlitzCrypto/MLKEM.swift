import Crypto
import Foundation

// libsodium has no ML-KEM, so this one primitive comes from swift-crypto (BoringSSL's FIPS 203 code).

/// Sizes of ML-KEM-1024 (FIPS 203, parameter set ML-KEM-1024).
public enum MLKEMSizes {
    /// Encapsulation (public) key: 1568 bytes.
    public static let publicKey = 1568
    /// Ciphertext: 1568 bytes.
    public static let ciphertext = 1568
    /// Shared secret: 32 bytes.
    public static let sharedSecret = 32
    /// Private key seed `d ‖ z` (FIPS 203 `ML-KEM.KeyGen_internal`): 64 bytes.
    public static let seed = 64
}

/// A 1568-byte ML-KEM-1024 encapsulation key (FIPS 203), checked on parse.
public struct KEMPublicKey: Sendable, Hashable, CustomStringConvertible {
    /// The 1568 raw bytes (FIPS 203 `ek`).
    public let rawRepresentation: Data

    /// Parses an encapsulation key.
    /// - Throws: `FlitzCryptoError.invalidLength` unless 1568 bytes; `.invalidKey` when FIPS 203's
    ///   modulus check fails (coefficients not reduced mod q).
    public init(rawRepresentation: Data) throws(FlitzCryptoError) {
        guard rawRepresentation.count == MLKEMSizes.publicKey else {
            throw FlitzCryptoError(.invalidLength, "ML-KEM-1024 public key must be \(MLKEMSizes.publicKey) bytes, got \(rawRepresentation.count)")
        }
        guard (try? MLKEM1024.PublicKey(rawRepresentation: rawRepresentation)) != nil else {
            throw FlitzCryptoError(.invalidKey, "ML-KEM-1024 public key fails the FIPS 203 modulus check")
        }
        self.rawRepresentation = Data(rawRepresentation)
    }

    /// Encapsulates a fresh shared secret to this key with the system's randomness (swift-crypto cannot
    /// take injected randomness here, so test vectors carry the ciphertext and secret as fixed inputs).
    /// - Returns: the 1568-byte ciphertext and the 32-byte shared secret.
    /// - Throws: `FlitzCryptoError.libraryFailure` if swift-crypto fails.
    public func encapsulate() throws(FlitzCryptoError) -> (ciphertext: Data, sharedSecret: SecretBytes) {
        do {
            let key = try MLKEM1024.PublicKey(rawRepresentation: rawRepresentation)
            let result = try key.encapsulate()
            let secret = result.sharedSecret.withUnsafeBytes { SecretBytes($0) }
            return (Data(result.encapsulated), secret)
        } catch {
            throw FlitzCryptoError(.libraryFailure, "ML-KEM-1024 encapsulation")
        }
    }

    public var description: String { "KEMPublicKey(\(rawRepresentation.prefix(8).hexString)…)" }
}

/// An ML-KEM-1024 decapsulation key, kept as its 64-byte seed `d ‖ z` (FIPS 203); zeroed on release.
public struct KEMPrivateKey: Sendable, CustomStringConvertible {
    /// The 64-byte seed `d ‖ z` from which FIPS 203 `ML-KEM.KeyGen_internal` derives the key pair.
    public let seed: SecretBytes
    /// The matching 1568-byte encapsulation key.
    public let publicKey: KEMPublicKey

    /// A new key pair from 64 bytes of `random` (deterministic for a seeded source).
    public init(random: any RandomSource = SystemRandom()) {
        // Cannot throw: 64 bytes is always a valid seed.
        try! self.init(seed: SecretBytes(random.bytes(MLKEMSizes.seed)))
    }

    /// The key pair of a 64-byte seed.
    /// - Throws: `FlitzCryptoError.invalidLength` unless 64 bytes.
    public init(seed: SecretBytes) throws(FlitzCryptoError) {
        guard seed.count == MLKEMSizes.seed else {
            throw FlitzCryptoError(.invalidLength, "ML-KEM-1024 seed must be \(MLKEMSizes.seed) bytes, got \(seed.count)")
        }
        do {
            let key = try seed.withUnsafeBytes { try MLKEM1024.PrivateKey(seedRepresentation: $0, publicKey: nil) }
            self.seed = seed
            self.publicKey = try KEMPublicKey(rawRepresentation: key.publicKey.rawRepresentation)
        } catch {
            throw FlitzCryptoError(.libraryFailure, "ML-KEM-1024 key generation")
        }
    }

    /// Decapsulates a 1568-byte ciphertext. A well-sized but wrong ciphertext yields a pseudorandom
    /// secret (FIPS 203 implicit rejection), which then fails authentication downstream.
    /// - Returns: the 32-byte shared secret.
    /// - Throws: `FlitzCryptoError.invalidLength` unless 1568 bytes; `.libraryFailure` if swift-crypto fails.
    public func decapsulate(_ ciphertext: Data) throws(FlitzCryptoError) -> SecretBytes {
        guard ciphertext.count == MLKEMSizes.ciphertext else {
            throw FlitzCryptoError(.invalidLength, "ML-KEM-1024 ciphertext must be \(MLKEMSizes.ciphertext) bytes, got \(ciphertext.count)")
        }
        do {
            let key = try seed.withUnsafeBytes { try MLKEM1024.PrivateKey(seedRepresentation: $0, publicKey: nil) }
            let secret = try key.decapsulate(ciphertext)
            return secret.withUnsafeBytes { SecretBytes($0) }
        } catch {
            throw FlitzCryptoError(.libraryFailure, "ML-KEM-1024 decapsulation")
        }
    }

    public var description: String { "KEMPrivateKey(<redacted>)" }
}
