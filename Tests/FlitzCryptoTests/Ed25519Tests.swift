import FlitzCrypto
import Foundation
import Testing

struct Ed25519Vector: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let secretKey: String
    let publicKey: String
    let message: String
    let signature: String
    var testDescription: String { name }

    struct File: Decodable { let testCases: [Ed25519Vector] }
    static func all() throws -> [Ed25519Vector] {
        try VectorFiles.load(File.self, "third_party/rfc8032-ed25519.json").testCases
    }
}

@Suite struct Ed25519Tests {
    @Test func vectorFileHasFourCases() throws {
        #expect(try Ed25519Vector.all().count == 4)
    }

    @Test(arguments: try Ed25519Vector.all())
    func rfc8032(_ vector: Ed25519Vector) throws {
        let key = try Ed25519PrivateKey(seed: SecretBytes(Data(vectorHex: vector.secretKey)))
        #expect(key.publicKey.rawRepresentation.hexString == vector.publicKey)
        let message = Data(vectorHex: vector.message)
        #expect(key.signature(for: message).hexString == vector.signature)
        let publicKey = try Ed25519PublicKey(rawRepresentation: Data(vectorHex: vector.publicKey))
        #expect(publicKey.isValidSignature(Data(vectorHex: vector.signature), for: message))
        try publicKey.verify(Data(vectorHex: vector.signature), for: message)
    }

    @Test(arguments: try Ed25519Vector.all())
    func alteredSignatureOrMessageFails(_ vector: Ed25519Vector) throws {
        let publicKey = try Ed25519PublicKey(rawRepresentation: Data(vectorHex: vector.publicKey))
        let message = Data(vectorHex: vector.message)
        var signature = Data(vectorHex: vector.signature)
        signature[5] ^= 0x01
        #expect(!publicKey.isValidSignature(signature, for: message))
        #expect(throws: FlitzCryptoError(.authenticationFailed)) { try publicKey.verify(signature, for: message) }
        let otherMessage = message + Data([0])
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try publicKey.verify(Data(vectorHex: vector.signature), for: otherMessage)
        }
        #expect(!publicKey.isValidSignature(Data(vectorHex: vector.signature).prefix(63), for: message))
    }

    @Test func x25519ConversionAgreesOnBothSides() throws {
        let random = SeededRandom(label: "ed25519 conversion")
        let alice = Ed25519PrivateKey(random: random)
        let bob = Ed25519PrivateKey(random: random)
        let aliceX = alice.x25519PrivateKey()
        let bobX = bob.x25519PrivateKey()
        // The converted public key is the converted private key's public key.
        #expect(try alice.publicKey.x25519PublicKey() == aliceX.publicKey)
        #expect(try bob.publicKey.x25519PublicKey() == bobX.publicKey)
        let ab = try aliceX.sharedSecret(with: bob.publicKey.x25519PublicKey())
        let ba = try bobX.sharedSecret(with: alice.publicKey.x25519PublicKey())
        #expect(ab.constantTimeEquals(ba))
        #expect(ab.unsafeData != Data(count: 32))
    }

    @Test func rfc8032Test1ConvertsToKnownX25519Form() throws {
        // The X25519 secret is the clamped first half of SHA-512(seed); the public key its base-point multiple.
        let key = try Ed25519PrivateKey(seed: SecretBytes(Data(vectorHex: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")))
        let converted = key.x25519PrivateKey()
        #expect(try key.publicKey.x25519PublicKey() == converted.publicKey)
        let recomputed = try X25519PrivateKey(rawRepresentation: converted.secret)
        #expect(recomputed.publicKey == converted.publicKey)
        #expect(converted.secret.count == 32)
        #expect(converted.secret.unsafeData[0] & 0x07 == 0)
        #expect(converted.secret.unsafeData[31] & 0xc0 == 0x40)
    }

    @Test func wrongLengthsAreRejected() {
        #expect(throws: FlitzCryptoError(.invalidLength, "Ed25519 public key must be 32 bytes, got 33")) {
            try Ed25519PublicKey(rawRepresentation: Data(count: 33))
        }
        #expect(throws: FlitzCryptoError(.invalidLength, "Ed25519 seed must be 32 bytes, got 64")) {
            try Ed25519PrivateKey(seed: SecretBytes(Data(count: 64)))
        }
    }

    @Test func privateKeyDescriptionIsRedacted() throws {
        let seed = Data(repeating: 0x5c, count: 32)
        let key = try Ed25519PrivateKey(seed: SecretBytes(seed))
        #expect(!key.description.contains(seed.hexString))
        #expect(key.description == "Ed25519PrivateKey(<redacted>, public: \(key.publicKey.rawRepresentation.hexString))")
    }
}
