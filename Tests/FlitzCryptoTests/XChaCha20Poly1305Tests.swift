import FlitzCrypto
import Foundation
import Testing

struct XChaChaVector: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let plaintext: String
    let ad: String
    let key: String
    let nonce: String
    let ciphertext: String
    let tag: String
    var testDescription: String { name }

    struct File: Decodable { let testCases: [XChaChaVector] }
    static func all() throws -> [XChaChaVector] {
        try VectorFiles.load(File.self, "third_party/draft-irtf-cfrg-xchacha-aead.json").testCases
    }
}

@Suite struct XChaCha20Poly1305Tests {
    static let key = SecretBytes(Data((0..<32).map { UInt8($0) }))
    static let nonce = Data((100..<124).map { UInt8($0) })
    static let ad = Data("associated".utf8)
    static let plaintext = Data("attack at dawn, bring snacks".utf8)

    static func sealed() throws -> Data {
        try XChaCha20Poly1305.seal(plaintext, key: key, nonce: nonce, authenticating: ad)
    }

    @Test(arguments: try XChaChaVector.all())
    func draftIRTFCFRGXChaChaA31(_ vector: XChaChaVector) throws {
        let key = SecretBytes(Data(vectorHex: vector.key))
        let sealed = try XChaCha20Poly1305.seal(
            Data(vectorHex: vector.plaintext), key: key, nonce: Data(vectorHex: vector.nonce), authenticating: Data(vectorHex: vector.ad))
        #expect(sealed.hexString == vector.ciphertext + vector.tag)
        let opened = try XChaCha20Poly1305.open(
            sealed, key: key, nonce: Data(vectorHex: vector.nonce), authenticating: Data(vectorHex: vector.ad))
        #expect(opened.hexString == vector.plaintext)
    }

    @Test func roundTrip() throws {
        let sealed = try Self.sealed()
        #expect(sealed.count == Self.plaintext.count + 16)
        #expect(try XChaCha20Poly1305.open(sealed, key: Self.key, nonce: Self.nonce, authenticating: Self.ad) == Self.plaintext)
    }

    @Test func emptyPlaintextRoundTrip() throws {
        let sealed = try XChaCha20Poly1305.seal(Data(), key: Self.key, nonce: Self.nonce, authenticating: Data())
        #expect(sealed.count == 16)
        #expect(try XChaCha20Poly1305.open(sealed, key: Self.key, nonce: Self.nonce, authenticating: Data()) == Data())
    }

    /// Byte positions to flip: first and last ciphertext bytes and first and last tag bytes.
    @Test(arguments: [0, 27, 28, 43])
    func flippedBitFailsAuthentication(_ index: Int) throws {
        var sealed = try Self.sealed()
        #expect(sealed.count == 44)
        sealed[index] ^= 0x01
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(sealed, key: Self.key, nonce: Self.nonce, authenticating: Self.ad)
        }
    }

    @Test func flippedADBitFailsAuthentication() throws {
        var ad = Self.ad
        ad[0] ^= 0x80
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(try Self.sealed(), key: Self.key, nonce: Self.nonce, authenticating: ad)
        }
    }

    @Test func flippedNonceBitFailsAuthentication() throws {
        var nonce = Self.nonce
        nonce[23] ^= 0x01
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(try Self.sealed(), key: Self.key, nonce: nonce, authenticating: Self.ad)
        }
    }

    @Test func wrongKeyFailsAuthentication() throws {
        var keyBytes = Self.key.unsafeData
        keyBytes[31] ^= 0x01
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(try Self.sealed(), key: SecretBytes(keyBytes), nonce: Self.nonce, authenticating: Self.ad)
        }
    }

    @Test(arguments: [0, 1, 15])
    func inputShorterThanTagFailsAuthentication(_ length: Int) throws {
        let sealed = try Self.sealed().prefix(length)
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(sealed, key: Self.key, nonce: Self.nonce, authenticating: Self.ad)
        }
    }

    @Test func truncatedCiphertextFailsAuthentication() throws {
        let sealed = try Self.sealed().dropLast()
        #expect(throws: FlitzCryptoError(.authenticationFailed)) {
            try XChaCha20Poly1305.open(Data(sealed), key: Self.key, nonce: Self.nonce, authenticating: Self.ad)
        }
    }

    @Test func badKeyAndNonceLengthsAreRejected() {
        #expect(throws: FlitzCryptoError(.invalidLength, "key must be 32 bytes, got 16")) {
            try XChaCha20Poly1305.seal(Data(), key: SecretBytes(Data(count: 16)), nonce: Self.nonce, authenticating: Data())
        }
        #expect(throws: FlitzCryptoError(.invalidLength, "nonce must be 24 bytes, got 12")) {
            try XChaCha20Poly1305.open(Data(count: 16), key: Self.key, nonce: Data(count: 12), authenticating: Data())
        }
    }
}
