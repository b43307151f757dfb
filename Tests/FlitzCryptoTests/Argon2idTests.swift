import FlitzCrypto
import Foundation
import Testing

@Suite struct Argon2idTests {
    /// Known answers from an independent implementation: the Argon2 reference C code behind Python's
    /// `argon2-cffi` 25.1.0, `argon2.low_level.hash_secret_raw(password, salt, time_cost=t, memory_cost=m // 1024,
    /// parallelism=1, hash_len=32, type=Type.ID, version=19)` — what `crypto_pwhash(..., ALG_ARGON2ID13)` must equal.
    static let knownAnswers: [(passphrase: Data, opsLimit: UInt64, memLimit: UInt64, key: String)] = [
        (Data("correct horse battery staple".utf8), 2, 65_536, "2df47ede6358ed17a9976d4fcedb897a10036d432a4acef17d263bfc98bd20ac"),
        (Data("été 2026".utf8), 3, 1_048_576, "b308b17576272060a1dc37bd0d8bddbe172a3c622d47408206fc38bc71366f55"),
    ]

    @Test(arguments: 0..<2) func knownAnswer(index: Int) throws {
        let vector = Self.knownAnswers[index]
        let key = try Argon2id.deriveKey(
            passphrase: SecretBytes(vector.passphrase), salt: Data(0..<16),
            parameters: Argon2id.Parameters(opsLimit: vector.opsLimit, memLimit: vector.memLimit))
        #expect(key.unsafeData.hexString == vector.key)
        #expect(key.count == 32)
    }

    @Test func saltAndParametersChangeTheKey() throws {
        let passphrase = SecretBytes(Data("pass".utf8))
        let a = try Argon2id.deriveKey(passphrase: passphrase, salt: Data(repeating: 1, count: 16), parameters: .minimum)
        let b = try Argon2id.deriveKey(passphrase: passphrase, salt: Data(repeating: 2, count: 16), parameters: .minimum)
        let c = try Argon2id.deriveKey(
            passphrase: passphrase, salt: Data(repeating: 1, count: 16), parameters: Argon2id.Parameters(opsLimit: 2, memLimit: 8192))
        let again = try Argon2id.deriveKey(passphrase: passphrase, salt: Data(repeating: 1, count: 16), parameters: .minimum)
        #expect(!a.constantTimeEquals(b))
        #expect(!a.constantTimeEquals(c))
        #expect(a.constantTimeEquals(again))
    }

    @Test func refusesBadInput() {
        let passphrase = SecretBytes(Data("pass".utf8))
        #expect(throws: FlitzCryptoError(.invalidLength, "salt must be 16 bytes, got 8")) {
            try Argon2id.deriveKey(passphrase: passphrase, salt: Data(count: 8), parameters: .minimum)
        }
        #expect(throws: FlitzCryptoError.self) {
            try Argon2id.deriveKey(passphrase: passphrase, salt: Data(count: 16), length: 8, parameters: .minimum)
        }
        #expect(throws: FlitzCryptoError.self) {
            try Argon2id.deriveKey(passphrase: passphrase, salt: Data(count: 16), parameters: Argon2id.Parameters(opsLimit: 0, memLimit: 8192))
        }
        #expect(throws: FlitzCryptoError.self) {
            try Argon2id.deriveKey(passphrase: passphrase, salt: Data(count: 16), parameters: Argon2id.Parameters(opsLimit: 1, memLimit: 1024))
        }
    }

    @Test func libsodiumLimits() {
        #expect(Argon2id.saltLength == 16)
        #expect(Argon2id.Parameters.interactive == Argon2id.Parameters(opsLimit: 2, memLimit: 64 << 20))
        #expect(Argon2id.Parameters.moderate == Argon2id.Parameters(opsLimit: 3, memLimit: 256 << 20))
        #expect(Argon2id.Parameters.minimum == Argon2id.Parameters(opsLimit: 1, memLimit: 8192))
        #expect(Argon2id.Parameters.moderate.description == "Argon2id(t=3, m=262144 KiB, p=1)")
    }
}
