import CFlitzSodium
import Foundation

/// SHA-256 (FIPS 180-4) from libsodium `crypto_hash_sha256`.
public enum SHA256 {
    /// The 32-byte digest of `data`.
    public static func hash(_ data: Data) -> Data {
        Sodium.ensureInitialized()
        var out = Data(count: Int(crypto_hash_sha256_BYTES))
        out.withUnsafeMutableBytes { o in
            data.withUnsafeBytes { d in
                _ = crypto_hash_sha256(o.bindMemory(to: UInt8.self).baseAddress!, d.bindMemory(to: UInt8.self).baseAddress, UInt64(data.count))
            }
        }
        return out
    }
}

/// BLAKE2b (RFC 7693) from libsodium `crypto_generichash`.
public enum BLAKE2b {
    /// A 16- to 64-byte digest of `data`, optionally keyed with a 16- to 64-byte key.
    public static func hash(_ data: Data, outputLength: Int = 32, key: Data? = nil) -> Data {
        Sodium.ensureInitialized()
        precondition((16...64).contains(outputLength), "BLAKE2b output must be 16 to 64 bytes")
        var out = Data(count: outputLength)
        let key = key ?? Data()
        out.withUnsafeMutableBytes { o in
            data.withUnsafeBytes { d in
                key.withUnsafeBytes { k in
                    _ = crypto_generichash(
                        o.bindMemory(to: UInt8.self).baseAddress!, outputLength,
                        d.bindMemory(to: UInt8.self).baseAddress, UInt64(data.count),
                        key.isEmpty ? nil : k.bindMemory(to: UInt8.self).baseAddress, key.count)
                }
            }
        }
        return out
    }
}

/// HMAC-SHA-256 (RFC 2104) from libsodium's `crypto_auth_hmacsha256_init/update/final`, which take a
/// key of any length (the one-shot `crypto_auth_hmacsha256` insists on 32 bytes).
public enum HMACSHA256 {
    /// The 32-byte MAC of `message` under `key` (any length).
    public static func authenticate(_ message: Data, key: SecretBytes) -> SecretBytes {
        Sodium.ensureInitialized()
        var state = crypto_auth_hmacsha256_state()
        defer { withUnsafeMutableBytes(of: &state) { sodium_memzero($0.baseAddress!, $0.count) } }
        key.withUnsafeBytes { k in
            _ = crypto_auth_hmacsha256_init(&state, k.bindMemory(to: UInt8.self).baseAddress!, key.count)
        }
        message.withUnsafeBytes { m in
            _ = crypto_auth_hmacsha256_update(&state, m.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count))
        }
        return SecretBytes(count: Int(crypto_auth_hmacsha256_BYTES)) { out in
            _ = crypto_auth_hmacsha256_final(&state, out.bindMemory(to: UInt8.self).baseAddress!)
        }
    }
}

/// HKDF with SHA-256 (RFC 5869), built on `HMACSHA256` because libsodium 1.0.18 has no HKDF.
public enum HKDF {
    /// Largest output of one expansion: 255 × 32 bytes (RFC 5869 §2.3).
    public static let maxOutputLength = 255 * 32

    /// HKDF-Extract: the 32-byte pseudorandom key HMAC-SHA-256(salt, ikm). An empty salt means 32 zero bytes.
    public static func extract(salt: Data, inputKeyMaterial ikm: SecretBytes) -> SecretBytes {
        let saltKey = SecretBytes(salt.isEmpty ? Data(count: 32) : salt)
        return ikm.withUnsafeBytes { HMACSHA256.authenticate(Data($0), key: saltKey) }
    }

    /// HKDF-Expand: `length` bytes from a pseudorandom key and `info`.
    /// - Throws: `FlitzCryptoError.invalidLength` when `length` is over 8160 bytes.
    public static func expand(pseudoRandomKey prk: SecretBytes, info: Data, length: Int) throws(FlitzCryptoError) -> SecretBytes {
        guard length >= 0, length <= maxOutputLength else {
            throw FlitzCryptoError(.invalidLength, "HKDF output of \(length) bytes exceeds \(maxOutputLength)")
        }
        var output = Data()
        var previous = Data()
        var counter: UInt8 = 1
        while output.count < length {
            var block = previous
            block.append(info)
            block.append(counter)
            let t = HMACSHA256.authenticate(block, key: prk)
            previous = t.unsafeData
            output.append(previous)
            counter &+= 1
        }
        defer {
            output.resetBytes(in: 0..<output.count)
            previous.resetBytes(in: 0..<previous.count)
        }
        return SecretBytes(output.prefix(length))
    }

    /// Extract then expand: `length` bytes of output keying material.
    /// - Throws: `FlitzCryptoError.invalidLength` when `length` is over 8160 bytes.
    public static func deriveKey(inputKeyMaterial ikm: SecretBytes, salt: Data, info: Data, length: Int) throws(FlitzCryptoError) -> SecretBytes {
        try expand(pseudoRandomKey: extract(salt: salt, inputKeyMaterial: ikm), info: info, length: length)
    }
}

extension SHA256 {
    /// Incremental SHA-256 (libsodium `crypto_hash_sha256_init/update/final`), for files hashed as they stream
    /// (`protocol/attachments.md` section 2.4). Not thread-safe; one per stream.
    public struct Hasher: ~Copyable {
        private var state = crypto_hash_sha256_state()

        /// Starts an empty hash.
        public init() {
            Sodium.ensureInitialized()
            _ = crypto_hash_sha256_init(&state)
        }

        /// Hashes `data` after everything before it.
        public mutating func update(_ data: Data) {
            data.withUnsafeBytes { d in
                _ = crypto_hash_sha256_update(&state, d.bindMemory(to: UInt8.self).baseAddress, UInt64(data.count))
            }
        }

        /// The 32-byte digest of everything hashed; the hasher is consumed.
        public consuming func finalize() -> Data {
            var out = Data(count: Int(crypto_hash_sha256_BYTES))
            out.withUnsafeMutableBytes { o in
                _ = crypto_hash_sha256_final(&state, o.bindMemory(to: UInt8.self).baseAddress!)
            }
            return out
        }
    }
}
