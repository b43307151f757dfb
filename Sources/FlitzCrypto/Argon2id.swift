import CFlitzSodium
import Foundation

/// Argon2id version 1.3 (RFC 9106) through libsodium `crypto_pwhash` with `crypto_pwhash_ALG_ARGON2ID13`:
/// a memory-hard key derivation from a passphrase. libsodium fixes the parallelism at 1 lane and uses no secret
/// or associated data, so the output is RFC 9106's raw tag for (password, salt, t = opsLimit, m = memLimit / 1024
/// KiB, p = 1, v = 0x13) — what `argon2-cffi`'s `hash_secret_raw(..., type=Type.ID)` computes too.
public enum Argon2id {
    /// Salt length in bytes (`crypto_pwhash_SALTBYTES`, 16).
    public static let saltLength = Int(crypto_pwhash_argon2id_SALTBYTES)

    /// The cost of one derivation: passes over memory and memory in bytes. Stored beside the salt, so a store
    /// keeps opening with the parameters it was sealed under when the defaults change.
    public struct Parameters: Sendable, Hashable, CustomStringConvertible {
        /// Passes over memory (Argon2 `t`); libsodium accepts 1 ... 2³²−1 for Argon2id.
        public let opsLimit: UInt64
        /// Memory in bytes (Argon2 `m` × 1024); at least 8 KiB (`crypto_pwhash_argon2id_MEMLIMIT_MIN`).
        public let memLimit: UInt64

        /// Parameters as given; `deriveKey` checks them against libsodium's bounds.
        public init(opsLimit: UInt64, memLimit: UInt64) {
            self.opsLimit = opsLimit
            self.memLimit = memLimit
        }

        /// libsodium's INTERACTIVE limits: 2 passes, 64 MiB.
        public static let interactive = Parameters(
            opsLimit: UInt64(crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE), memLimit: UInt64(crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE))
        /// libsodium's MODERATE limits: 3 passes, 256 MiB.
        public static let moderate = Parameters(
            opsLimit: UInt64(crypto_pwhash_argon2id_OPSLIMIT_MODERATE), memLimit: UInt64(crypto_pwhash_argon2id_MEMLIMIT_MODERATE))
        /// The smallest cost libsodium accepts (1 pass, 8 KiB): for tests only, never for a real passphrase.
        public static let minimum = Parameters(
            opsLimit: UInt64(crypto_pwhash_argon2id_OPSLIMIT_MIN), memLimit: UInt64(crypto_pwhash_argon2id_MEMLIMIT_MIN))

        public var description: String { "Argon2id(t=\(opsLimit), m=\(memLimit / 1024) KiB, p=1)" }
    }

    /// Derives `length` bytes from `passphrase` and `salt`.
    /// - Parameters:
    ///   - passphrase: the passphrase's bytes (UTF-8 as typed; not normalised here).
    ///   - salt: exactly `saltLength` (16) random bytes, stored in the clear beside the parameters.
    ///   - length: output bytes, 16 ... 2³²−1 (`crypto_pwhash_BYTES_MIN`); 32 for an XChaCha20-Poly1305 key.
    /// - Throws: `FlitzCryptoError.invalidLength` for a salt that is not 16 bytes, an output length or parameters
    ///   outside libsodium's bounds; `.libraryFailure` when libsodium fails (typically it cannot allocate `memLimit`).
    public static func deriveKey(
        passphrase: SecretBytes, salt: Data, length: Int = 32, parameters: Parameters
    ) throws(FlitzCryptoError) -> SecretBytes {
        guard salt.count == saltLength else { throw FlitzCryptoError(.invalidLength, "salt must be \(saltLength) bytes, got \(salt.count)") }
        guard length >= Int(crypto_pwhash_argon2id_BYTES_MIN), UInt64(length) <= UInt64(UInt32.max) else {
            throw FlitzCryptoError(.invalidLength, "output must be 16 bytes or more, got \(length)")
        }
        guard parameters.opsLimit >= UInt64(crypto_pwhash_argon2id_OPSLIMIT_MIN), parameters.opsLimit <= UInt64(UInt32.max),
            parameters.memLimit >= UInt64(crypto_pwhash_argon2id_MEMLIMIT_MIN), parameters.memLimit <= UInt64(Int.max)
        else { throw FlitzCryptoError(.invalidLength, "Argon2id parameters out of range: \(parameters)") }
        Sodium.ensureInitialized()
        var status: Int32 = -1
        let key = SecretBytes(count: length) { out in
            status = passphrase.withUnsafeBytes { p in
                salt.withUnsafeBytes { s in
                    crypto_pwhash(
                        out.bindMemory(to: UInt8.self).baseAddress!, UInt64(length),
                        p.bindMemory(to: CChar.self).baseAddress!, UInt64(passphrase.count),
                        s.bindMemory(to: UInt8.self).baseAddress!, parameters.opsLimit, Int(parameters.memLimit),
                        crypto_pwhash_ALG_ARGON2ID13)
                }
            }
        }
        guard status == 0 else { throw FlitzCryptoError(.libraryFailure, "crypto_pwhash failed (out of memory for \(parameters)?)") }
        return key
    }
}
