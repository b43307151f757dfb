import FlitzCrypto
import Foundation
import Testing

struct X25519ScalarVector: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let scalar: String
    let uCoordinate: String
    let output: String
    var testDescription: String { name }
}

struct X25519DHVector: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let alicePrivateKey: String
    let alicePublicKey: String
    let bobPrivateKey: String
    let bobPublicKey: String
    let sharedSecret: String
    var testDescription: String { name }
}

struct X25519VectorFile: Decodable {
    let scalarMultiplication: [X25519ScalarVector]
    let diffieHellman: [X25519DHVector]
    static func load() throws -> X25519VectorFile { try VectorFiles.load(X25519VectorFile.self, "third_party/rfc7748-x25519.json") }
}

@Suite struct X25519Tests {
    @Test(arguments: try X25519VectorFile.load().scalarMultiplication)
    func rfc7748ScalarMultiplication(_ vector: X25519ScalarVector) throws {
        let key = try X25519PrivateKey(rawRepresentation: SecretBytes(Data(vectorHex: vector.scalar)))
        let peer = try X25519PublicKey(rawRepresentation: Data(vectorHex: vector.uCoordinate))
        #expect(try key.sharedSecret(with: peer).unsafeData.hexString == vector.output)
    }

    @Test(arguments: try X25519VectorFile.load().diffieHellman)
    func rfc7748DiffieHellman(_ vector: X25519DHVector) throws {
        let alice = try X25519PrivateKey(rawRepresentation: SecretBytes(Data(vectorHex: vector.alicePrivateKey)))
        let bob = try X25519PrivateKey(rawRepresentation: SecretBytes(Data(vectorHex: vector.bobPrivateKey)))
        #expect(alice.publicKey.rawRepresentation.hexString == vector.alicePublicKey)
        #expect(bob.publicKey.rawRepresentation.hexString == vector.bobPublicKey)
        #expect(try alice.sharedSecret(with: bob.publicKey).unsafeData.hexString == vector.sharedSecret)
        #expect(try bob.sharedSecret(with: alice.publicKey).unsafeData.hexString == vector.sharedSecret)
    }

    /// Low-order points of Curve25519 (the all-zero point, the point of order 1 and one of order 8).
    static let lowOrderPoints = [
        String(repeating: "00", count: 32),
        "01" + String(repeating: "00", count: 31),
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    ]

    @Test(arguments: lowOrderPoints)
    func lowOrderPeerKeyIsNonContributory(_ point: String) throws {
        let key = X25519PrivateKey(random: SeededRandom(label: "x25519 low order"))
        let peer = try X25519PublicKey(rawRepresentation: Data(vectorHex: point))
        #expect(throws: FlitzCryptoError(.nonContributory)) { try key.sharedSecret(with: peer) }
    }

    @Test func wrongLengthsAreRejected() {
        #expect(throws: FlitzCryptoError(.invalidLength, "X25519 public key must be 32 bytes, got 31")) {
            try X25519PublicKey(rawRepresentation: Data(count: 31))
        }
        #expect(throws: FlitzCryptoError(.invalidLength, "X25519 private key must be 32 bytes, got 33")) {
            try X25519PrivateKey(rawRepresentation: SecretBytes(Data(count: 33)))
        }
    }

    @Test func privateKeyDescriptionIsRedacted() throws {
        let secret = Data(repeating: 0xab, count: 32)
        let key = try X25519PrivateKey(rawRepresentation: SecretBytes(secret))
        #expect(!key.description.contains(secret.hexString))
        #expect(key.description == "X25519PrivateKey(<redacted>, public: \(key.publicKey.rawRepresentation.hexString))")
    }
}
