import FlitzCrypto
import Foundation
import Testing

struct HKDFVector: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let ikm: String
    let salt: String
    let info: String
    let length: Int
    let prk: String
    let okm: String
    var testDescription: String { name }

    struct File: Decodable { let testCases: [HKDFVector] }
    static func all() throws -> [HKDFVector] {
        try VectorFiles.load(File.self, "third_party/rfc5869-hkdf.json").testCases
    }
}

@Suite struct HKDFTests {
    @Test func vectorFileHasTheThreeRFCCases() throws {
        #expect(try HKDFVector.all().count == 3)
    }

    @Test(arguments: try HKDFVector.all())
    func rfc5869(_ vector: HKDFVector) throws {
        let ikm = SecretBytes(Data(vectorHex: vector.ikm))
        let prk = HKDF.extract(salt: Data(vectorHex: vector.salt), inputKeyMaterial: ikm)
        #expect(prk.unsafeData.hexString == vector.prk)
        let okm = try HKDF.expand(pseudoRandomKey: prk, info: Data(vectorHex: vector.info), length: vector.length)
        #expect(okm.unsafeData.hexString == vector.okm)
        let oneShot = try HKDF.deriveKey(
            inputKeyMaterial: ikm, salt: Data(vectorHex: vector.salt), info: Data(vectorHex: vector.info), length: vector.length)
        #expect(oneShot.unsafeData.hexString == vector.okm)
    }

    @Test func outputLongerThan255BlocksIsRejected() throws {
        let prk = SecretBytes(Data(count: 32))
        #expect(try HKDF.expand(pseudoRandomKey: prk, info: Data(), length: 8160).count == 8160)
        #expect(throws: FlitzCryptoError(.invalidLength, "HKDF output of 8161 bytes exceeds 8160")) {
            try HKDF.expand(pseudoRandomKey: prk, info: Data(), length: 8161)
        }
    }
}

@Suite struct HashTests {
    @Test func sha256OfABC() {
        // FIPS 180-2 Appendix B.1.
        #expect(SHA256.hash(Data("abc".utf8)).hexString == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func hmacSHA256RFC4231Case2() {
        // RFC 4231 test case 2: a key shorter than the block size and not 32 bytes.
        let mac = HMACSHA256.authenticate(Data("what do ya want for nothing?".utf8), key: SecretBytes(Data("Jefe".utf8)))
        #expect(mac.unsafeData.hexString == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func blake2bOfABC() {
        // RFC 7693 Appendix A: BLAKE2b-512("abc").
        #expect(
            BLAKE2b.hash(Data("abc".utf8), outputLength: 64).hexString
                == "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d17d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"
        )
    }
}
